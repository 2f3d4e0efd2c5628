package inspect

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"

	"github.com/trellis-mesh/trellis/internal/cli/clienv"
	"github.com/trellis-mesh/trellis/node-proxy/admin"
)

const summary = "summary"

// proxyConfig is config's data (-o json|yaml): the proxy's own
// /debug/config document, with where it came from.
type proxyConfig struct {
	Node string `json:"node"`
	// Pod is the proxy pod, namespace/name.
	Pod string `json:"pod"`
	admin.Debug
}

func configCmd(env *clienv.Env, d deps) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config NODE|POD",
		Short: "Show the live config of a node's proxy",
		Long: `config shows the config the Trellis proxy on a node is serving right now,
read from the proxy itself: its version, when it was received, and every
Service, port, endpoint, split and access rule in it. Name a node, or a pod
(in -n's namespace, or as NAMESPACE/POD) to see the proxy of that pod's node,
which is the one that handles the pod's outgoing mesh traffic.`,
		Example: `  kubectl trellis config node-a
  kubectl trellis config -n shop web-7d4f9c-x2x8q
  kubectl trellis config shop/web-7d4f9c-x2x8q -o json`,
		Args: cobra.ExactArgs(1),
	}
	format := clienv.OutputFlag(cmd, summary, clienv.JSON, clienv.YAML)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		s, err := newSession(env, d)
		if err != nil {
			return err
		}
		in, err := s.findInstall(ctx)
		if err != nil {
			return err
		}
		if in.ds == nil {
			return clienv.Fail(clienv.ExitNotFound, fmt.Errorf("there is no proxy DaemonSet %s/%s", s.ns, proxyName), "re-run kubectl trellis install")
		}
		node, err := resolveNode(ctx, s, args[0])
		if err != nil {
			return err
		}
		pod := proxyOn(in, node)
		if pod == nil {
			return clienv.Fail(clienv.ExitNotFound, fmt.Errorf("no Trellis proxy runs on node %s", node),
				fmt.Sprintf("kubectl -n %s get pods -o wide -l %s (taints or a nodeSelector may keep the DaemonSet off the node)", s.ns, metav1.FormatLabelSelector(in.ds.Spec.Selector)))
		}
		if err := s.needPodsProxy(ctx); err != nil {
			return err
		}
		dbg, err := s.proxyDebug(ctx, pod)
		if err != nil {
			return err
		}
		pc := proxyConfig{Node: node, Pod: s.ns + "/" + pod.Name, Debug: *dbg}
		if *format != summary {
			return clienv.PrintData(env.IO.Out, *format, pc)
		}
		return printConfig(env.IO.Out, pc, s.d.now())
	}
	return cmd
}

// resolveNode turns NODE, POD or NAMESPACE/POD into a node name.
func resolveNode(ctx context.Context, s *session, arg string) (string, error) {
	podNS, podName, qualified := strings.Cut(arg, "/")
	if !qualified {
		n, err := s.kube.CoreV1().Nodes().Get(ctx, arg, metav1.GetOptions{})
		if err == nil {
			return n.Name, nil
		}
		if !apierrors.IsNotFound(err) && !apierrors.IsForbidden(err) {
			return "", clienv.APIError("get Node "+arg, err)
		}
		var nsErr error
		if podNS, _, nsErr = s.env.Namespace(); nsErr != nil {
			return "", nsErr
		}
		podName = arg
	}
	p, err := s.kube.CoreV1().Pods(podNS).Get(ctx, podName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		if qualified {
			return "", clienv.Fail(clienv.ExitNotFound, fmt.Errorf("no pod %s in namespace %s", podName, podNS), "")
		}
		return "", clienv.Fail(clienv.ExitNotFound, fmt.Errorf("no node named %s, and no pod %s in namespace %s", arg, arg, podNS),
			"kubectl get nodes lists nodes; name a pod of another namespace with -n NAMESPACE or as NAMESPACE/POD")
	}
	if err != nil {
		return "", clienv.APIError(fmt.Sprintf("get Pod %s/%s", podNS, podName), err)
	}
	if p.Spec.NodeName == "" {
		return "", clienv.Fail(clienv.ExitNotFound, fmt.Errorf("pod %s/%s is not scheduled to a node yet, so no proxy serves it", podNS, podName), "")
	}
	return p.Spec.NodeName, nil
}

// proxyOn picks the node's proxy pod: a ready one, else a running one,
// else any (during a rolling update a node briefly has two).
func proxyOn(in *install, node string) *corev1.Pod {
	var best *corev1.Pod
	rank := func(p *corev1.Pod) int {
		switch {
		case podReady(p):
			return 2
		case podRunning(p):
			return 1
		}
		return 0
	}
	for i := range in.proxies {
		p := &in.proxies[i]
		if p.Spec.NodeName == node && (best == nil || rank(p) > rank(best)) {
			best = p
		}
	}
	return best
}

func printConfig(w io.Writer, pc proxyConfig, now time.Time) error {
	d := pc.Debug
	state := "ready"
	if !d.Ready {
		state = "not ready: " + orDash(d.NotReadyReason)
	}
	kv := clienv.NewTable(w)
	kv.Row("Node:", pc.Node)
	kv.Row("Proxy:", fmt.Sprintf("%s (Trellis %s, %s)", pc.Pod, orDash(d.ProxyVersion), state))
	if d.Config == nil {
		kv.Row("Config:", "none yet")
	} else {
		kv.Row("Config:", d.Version)
		kv.Row("Received:", fmt.Sprintf("%s (%s ago)", d.AppliedAt.UTC().Format(time.RFC3339), duration.HumanDuration(now.Sub(d.AppliedAt))))
	}
	if d.LastRejection != "" {
		kv.Row("Last rejected:", fmt.Sprintf("%s (%s ago): %s", d.RejectedAt.UTC().Format(time.RFC3339), duration.HumanDuration(now.Sub(d.RejectedAt)), d.LastRejection))
	}
	c := d.Config
	if c != nil {
		acl := string(c.ACL)
		if acl == "" {
			acl = "off"
		}
		kv.Row("ACL:", acl)
		kv.Row("HTTP listener:", strconv.Itoa(int(c.Listeners.HTTP)))
		kv.Row("Mesh domain:", c.Domain())
	}
	if err := kv.Flush(); err != nil {
		return err
	}
	if c == nil {
		return nil
	}
	fmt.Fprintln(w)
	if len(c.Services) == 0 {
		fmt.Fprintln(w, "No Services.")
	} else {
		t := clienv.NewTable(w)
		t.Row("SERVICE", "PORT", "PROTOCOL", "TARGET", "LISTEN", "ENDPOINTS", "SPLIT", "RULES", "PLUGINS")
		for _, svc := range c.Services {
			ready := 0
			for _, e := range svc.Endpoints {
				if e.Ready {
					ready++
				}
			}
			for _, p := range svc.Ports {
				listen := ""
				if p.ListenPort != 0 {
					listen = strconv.Itoa(int(p.ListenPort))
				}
				proto := string(p.Protocol)
				if p.Scheme != "" && string(p.Scheme) != "http" {
					proto += "/" + string(p.Scheme)
				}
				t.Row(svc.Key(), strconv.Itoa(int(p.Port)), proto, strconv.Itoa(int(p.TargetPort)), listen,
					fmt.Sprintf("%d (%d ready)", len(svc.Endpoints), ready), splitText(svc.Split), strconv.Itoa(len(svc.Rules)), strings.Join(svc.Plugins, ","))
			}
		}
		if err := t.Flush(); err != nil {
			return err
		}
	}
	fmt.Fprintln(w)
	if len(c.LocalPods) == 0 {
		fmt.Fprintln(w, "No local pods.")
		return nil
	}
	t := clienv.NewTable(w)
	t.Row("LOCAL POD", "IP", "IDENTITY")
	for _, p := range c.LocalPods {
		t.Row(p.Name, p.IP, p.Identity.String())
	}
	return t.Flush()
}
