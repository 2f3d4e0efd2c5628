package inspect

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/util/duration"

	"github.com/trellis-mesh/trellis/internal/cli/clienv"
	"github.com/trellis-mesh/trellis/node-proxy/config"
)

// statusReport is status's data (-o json|yaml).
type statusReport struct {
	// Namespace the Services are listed for; empty: all.
	Namespace string `json:"namespace,omitempty"`
	// ACL is the proxies' access control mode (on, off), "" when no proxy
	// could be read.
	ACL      string          `json:"acl,omitempty"`
	Services []serviceStatus `json:"services"`
	Nodes    []nodeStatus    `json:"nodes"`
}

type serviceStatus struct {
	Namespace string               `json:"namespace"`
	Name      string               `json:"name"`
	MeshedBy  string               `json:"meshedBy"`
	Shadow    string               `json:"shadow"`
	Ports     []config.ServicePort `json:"ports"`
	Split     *config.Split        `json:"split,omitempty"`
	Rules     int                  `json:"rules"`
}

// nodeStatus is one node's proxy against the controller's current config.
type nodeStatus struct {
	Node string `json:"node"`
	// Proxy is the proxy pod's name ("" when the node has none).
	Proxy string `json:"proxy,omitempty"`
	// Version is the config version the proxy serves.
	Version string `json:"version,omitempty"`
	// DesiredVersion is the controller's current version for the node.
	DesiredVersion string `json:"desiredVersion,omitempty"`
	// Current: the proxy serves DesiredVersion.
	Current bool `json:"current"`
	// ReceivedAt is when the proxy applied Version.
	ReceivedAt   *time.Time `json:"receivedAt,omitempty"`
	ProxyVersion string     `json:"proxyVersion,omitempty"`
	Ready        bool       `json:"ready"`
	Errors       []string   `json:"errors,omitempty"`
}

func statusCmd(env *clienv.Env, d deps) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:     "status",
		Aliases: []string{"ls"},
		Short:   "List meshed Services and each node's proxy",
		Long: `status lists the meshed Services of a namespace (-n, or the context's;
-A for all) as the controller sees them: their ports and traffic type, the
traffic split that applies and how many access rules they have. Then, for
every node, its proxy pod, the config version it serves, whether that is the
controller's current version for the node, when it was received, and any
error (a rejected config, not ready).`,
		Example: `  kubectl trellis status -n shop
  kubectl trellis ls -A -o wide
  kubectl trellis status -A -o json`,
		Args: cobra.NoArgs,
	}
	cmd.Flags().BoolVarP(&all, "all-namespaces", "A", false, "list the meshed Services of every namespace")
	format := clienv.OutputFlag(cmd, clienv.Table, clienv.Wide, clienv.JSON, clienv.YAML)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		ctx := cmd.Context()
		ns := ""
		if !all {
			var err error
			if ns, _, err = env.Namespace(); err != nil {
				return err
			}
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
		pod, err := in.controllerPod(s.d.now())
		if err != nil {
			return err
		}
		st, err := s.state(ctx, in, pod)
		if err != nil {
			return err
		}
		views, err := s.services(ctx, in, pod)
		if err != nil {
			return err
		}
		rep := statusReport{Namespace: ns, Services: []serviceStatus{}}
		for _, v := range views {
			svcNS, name, _ := strings.Cut(v.Service, "/")
			if ns != "" && svcNS != ns {
				continue
			}
			rep.Services = append(rep.Services, serviceStatus{Namespace: svcNS, Name: name, MeshedBy: v.MeshedBy, Shadow: v.Shadow, Ports: v.Ports, Split: v.Split, Rules: v.Rules})
		}
		proxies := s.proxyDebugs(ctx, in.proxies)
		rep.Nodes = nodeStatuses(st, proxies)
		for _, p := range proxies {
			if p.debug != nil && p.debug.Config != nil {
				rep.ACL = string(p.debug.Config.ACL)
				if rep.ACL == "" {
					rep.ACL = string(config.ACLOff)
				}
				break
			}
		}
		if *format == clienv.JSON || *format == clienv.YAML {
			return clienv.PrintData(env.IO.Out, *format, rep)
		}
		return printStatus(env.IO.Out, rep, all, *format == clienv.Wide, s.d.now())
	}
	return cmd
}

// nodeStatuses joins the controller's per-node versions with what each
// proxy serves: one row per proxy pod, plus nodes that have a config but
// no proxy.
func nodeStatuses(st *controllerState, proxies []proxyResult) []nodeStatus {
	out := []nodeStatus{}
	seen := map[string]bool{}
	for _, p := range proxies {
		node := p.pod.Spec.NodeName
		seen[node] = true
		n := nodeStatus{Node: node, Proxy: p.pod.Name, DesiredVersion: st.Versions[node], Ready: podReady(p.pod)}
		if node == "" {
			n.Node = "(unscheduled)"
		}
		if p.err != nil {
			n.Errors = append(n.Errors, p.err.Error())
		}
		if dbg := p.debug; dbg != nil {
			n.Version, n.ProxyVersion = dbg.Version, dbg.ProxyVersion
			if !dbg.AppliedAt.IsZero() {
				at := dbg.AppliedAt
				n.ReceivedAt = &at
			}
			if !dbg.Ready && dbg.NotReadyReason != "" {
				n.Errors = append(n.Errors, "not ready: "+dbg.NotReadyReason)
			}
			if dbg.LastRejection != "" {
				n.Errors = append(n.Errors, "rejected a config: "+dbg.LastRejection)
			}
		}
		if n.DesiredVersion == "" && node != "" {
			n.Errors = append(n.Errors, "the controller has no config for this node")
		}
		n.Current = n.Version != "" && n.Version == n.DesiredVersion
		out = append(out, n)
	}
	for node, v := range st.Versions {
		if !seen[node] {
			out = append(out, nodeStatus{Node: node, DesiredVersion: v, Errors: []string{"no proxy runs on this node"}})
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Node != out[j].Node {
			return out[i].Node < out[j].Node
		}
		return out[i].Proxy < out[j].Proxy
	})
	return out
}

func printStatus(w io.Writer, rep statusReport, all, wide bool, now time.Time) error {
	if len(rep.Services) == 0 {
		if all {
			fmt.Fprintln(w, "No meshed Services.")
		} else {
			fmt.Fprintf(w, "No meshed Services in namespace %s.\n", rep.Namespace)
		}
	} else {
		t := clienv.NewTable(w)
		head := []string{"NAME", "PORTS", "TRAFFIC", "SPLIT", "RULES"}
		if all {
			head = append([]string{"NAMESPACE"}, head...)
		}
		if wide {
			head = append(head, "MESHED-BY", "SHADOW")
		}
		t.Row(head...)
		for _, s := range rep.Services {
			var ports, traffic []string
			for _, p := range s.Ports {
				ports = append(ports, strconv.Itoa(int(p.Port)))
				traffic = append(traffic, string(p.Protocol))
			}
			row := []string{s.Name, strings.Join(ports, ","), strings.Join(traffic, ","), splitText(s.Split), strconv.Itoa(s.Rules)}
			if all {
				row = append([]string{s.Namespace}, row...)
			}
			if wide {
				row = append(row, s.MeshedBy, s.Shadow)
			}
			t.Row(row...)
		}
		if err := t.Flush(); err != nil {
			return err
		}
		rules := 0
		for _, s := range rep.Services {
			rules += s.Rules
		}
		if rules > 0 && rep.ACL == string(config.ACLOff) {
			fmt.Fprintln(w, "ACL is off: the proxies do not enforce these access rules (settings: acl: true turns it on).")
		}
	}
	fmt.Fprintln(w)
	if len(rep.Nodes) == 0 {
		fmt.Fprintln(w, "No nodes have a config yet.")
		return nil
	}
	t := clienv.NewTable(w)
	head := []string{"NODE", "PROXY", "CONFIG", "CURRENT", "RECEIVED", "ERRORS"}
	if wide {
		head = []string{"NODE", "PROXY", "READY", "PROXY-VERSION", "CONFIG", "DESIRED", "CURRENT", "RECEIVED", "ERRORS"}
	}
	t.Row(head...)
	for _, n := range rep.Nodes {
		current := ""
		switch {
		case n.Proxy == "" || n.Version == "":
		case n.Current:
			current = "yes"
		default:
			current = "behind"
		}
		received := ""
		if n.ReceivedAt != nil {
			received = duration.HumanDuration(now.Sub(*n.ReceivedAt)) + " ago"
		}
		errs := strings.Join(n.Errors, "; ")
		row := []string{n.Node, n.Proxy, shortVersion(n.Version), current, received, errs}
		if wide {
			ready := ""
			if n.Proxy != "" {
				ready = strconv.FormatBool(n.Ready)
			}
			row = []string{n.Node, n.Proxy, ready, n.ProxyVersion, shortVersion(n.Version), shortVersion(n.DesiredVersion), current, received, errs}
		}
		t.Row(row...)
	}
	return t.Flush()
}

// splitText is a split as `web-v1=90,web-v2=10`, the form split --to takes.
func splitText(sp *config.Split) string {
	if sp == nil {
		return ""
	}
	var parts []string
	for _, b := range sp.Backends {
		parts = append(parts, fmt.Sprintf("%s=%d", b.Service, b.Weight))
	}
	s := strings.Join(parts, ",")
	if len(sp.Matches) > 0 {
		s += " (matching requests)"
	}
	return s
}
