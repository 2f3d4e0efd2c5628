package inspect

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"

	"github.com/trellis-mesh/trellis/internal/cli/clienv"
	"github.com/trellis-mesh/trellis/internal/version"
)

// versionReport is version's data (-o json|yaml).
type versionReport struct {
	Client      string             `json:"client"`
	Controllers []componentVersion `json:"controllers,omitempty"`
	Proxies     []componentVersion `json:"proxies,omitempty"`
}

type componentVersion struct {
	Pod     string `json:"pod"`
	Node    string `json:"node,omitempty"`
	Version string `json:"version,omitempty"`
	// Error says why the version could not be read.
	Error string `json:"error,omitempty"`
}

func versionCmd(env *clienv.Env, d deps) *cobra.Command {
	var clientOnly bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Show the client, controller and proxy versions",
		Long: `version prints this plugin's version and, unless --client, the version
each running controller replica and proxy reports. It exits 1 when a
running component's version could not be read.`,
		Example: `  kubectl trellis version
  kubectl trellis version --client
  kubectl trellis version -o json`,
		Args: cobra.NoArgs,
	}
	cmd.Flags().BoolVar(&clientOnly, "client", false, "print only the client version (needs no cluster)")
	format := clienv.OutputFlag(cmd, clienv.Table, clienv.JSON, clienv.YAML)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		ctx := cmd.Context()
		rep := versionReport{Client: version.Get()}
		if clientOnly {
			if *format == clienv.Table {
				_, err := fmt.Fprintf(env.IO.Out, "Client version: %s\n", rep.Client)
				return err
			}
			return printVersions(env.IO.Out, *format, rep)
		}
		s, err := newSession(env, d)
		if err != nil {
			return err
		}
		in, err := s.findInstall(ctx)
		if err != nil {
			return err
		}
		if err := s.needPodsProxy(ctx); err != nil {
			return err
		}
		unread := 0
		for i := range in.controllers {
			p := &in.controllers[i]
			if !podRunning(p) {
				continue
			}
			cv := componentVersion{Pod: p.Name, Node: p.Spec.NodeName}
			st, err := s.state(ctx, in, p)
			if code := clienv.Code(err); code == clienv.ExitForbidden || code == clienv.ExitNotFound {
				return err // the same for every replica: say it once
			}
			if err != nil {
				cv.Error = err.Error()
				unread++
			} else {
				cv.Version = st.Version
			}
			rep.Controllers = append(rep.Controllers, cv)
		}
		var running []corev1.Pod
		for _, p := range in.proxies {
			if podRunning(&p) {
				running = append(running, p)
			}
		}
		for _, r := range s.proxyDebugs(ctx, running) {
			cv := componentVersion{Pod: r.pod.Name, Node: r.pod.Spec.NodeName}
			if r.err != nil {
				cv.Error = r.err.Error()
				unread++
			} else {
				cv.Version = r.debug.ProxyVersion
			}
			rep.Proxies = append(rep.Proxies, cv)
		}
		if err := printVersions(env.IO.Out, *format, rep); err != nil {
			return err
		}
		if unread > 0 {
			return clienv.Fail(clienv.ExitFailure, fmt.Errorf("could not read the version of %d running components", unread), "")
		}
		return nil
	}
	return cmd
}

func printVersions(w io.Writer, format string, rep versionReport) error {
	if format != clienv.Table {
		return clienv.PrintData(w, format, rep)
	}
	t := clienv.NewTable(w)
	t.Row("COMPONENT", "POD", "NODE", "VERSION")
	t.Row("client", "", "", rep.Client)
	for _, c := range rep.Controllers {
		t.Row("controller", c.Pod, c.Node, versionText(c))
	}
	for _, c := range rep.Proxies {
		t.Row("proxy", c.Pod, c.Node, versionText(c))
	}
	return t.Flush()
}

func versionText(c componentVersion) string {
	if c.Error != "" {
		return "unknown: " + c.Error
	}
	return c.Version
}
