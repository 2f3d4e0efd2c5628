package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/trellis-mesh/trellis/e2e/cluster"
	"github.com/trellis-mesh/trellis/e2e/toolchain"
)

const demoNS = "demo"

func newDemo(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "demo",
		Short: "Install Trellis with kubectl trellis and walk through opt-in, access control, a split and stats",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			c, err := connect(g)
			if err != nil {
				return err
			}
			if len(c.Status.Nodes) < 3 {
				return fmt.Errorf("the demo needs 3 nodes, the cluster has %d: `trellis-dev down && trellis-dev up --nodes 3`", len(c.Status.Nodes))
			}
			return runDemo(ctx, c, toolchain.Cached())
		},
	}
}

// demo holds what the walk-through needs to run commands as a user would.
type demo struct {
	c    *cluster.Client
	bins toolchain.Bins
}

func (d *demo) step(f string, a ...any) { fmt.Printf("\n▶ "+f+"\n", a...) }

// trellis runs `kubectl trellis ARGS` (the plugin binary), echoing the
// command and its output; check says whether a non-zero exit is an error.
func (d *demo) trellis(ctx context.Context, check bool, args ...string) (string, error) {
	fmt.Printf("$ kubectl trellis %s\n", strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, d.bins.Path("kubectl-trellis"), args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+d.c.Status.Kubeconfig)
	out, err := cmd.CombinedOutput()
	fmt.Print(indent(string(out)))
	if err != nil && check {
		return string(out), fmt.Errorf("kubectl trellis %s: %w", strings.Join(args, " "), err)
	}
	return string(out), nil
}

// curl calls the backend's mesh name from the frontend pod n times and
// returns the HTTP status of each call and who answered.
func (d *demo) curl(ctx context.Context, n int) (map[string]int, error) {
	seen := map[string]int{}
	for range n {
		x, err := d.c.Command(ctx, demoNS, "frontend", "curl", "-s", "--max-time", "5", "-w", "\nHTTP-Status: %{http_code}\n", "http://backend."+demoNS+".mesh/")
		if err != nil {
			return nil, err
		}
		out, err := x.Output()
		if err != nil {
			return nil, fmt.Errorf("curl from pod frontend: %w", err)
		}
		code := cluster.ReportField(string(out), "HTTP-Status")
		if host := cluster.ReportField(string(out), "Hostname"); host != "" {
			seen[code+" from "+host]++
		} else {
			seen[code+" "+strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])]++
		}
	}
	return seen, nil
}

// until repeats f every half second until it is true or d passes.
func until(d time.Duration, f func() bool) bool {
	deadline := time.Now().Add(d)
	for !f() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(500 * time.Millisecond) // polling interval, bounded by the deadline
	}
	return true
}

func runDemo(ctx context.Context, c *cluster.Client, bins toolchain.Bins) error {
	d := &demo{c: c, bins: bins}
	d.step("install Trellis (access control on): the controller on 2 replicas, a proxy on every node")
	if _, err := d.trellis(ctx, true, "install", "--acl"); err != nil {
		return err
	}

	d.step("a small app in namespace %s: frontend on node-3 calls backend (v1 on node-1, v2 on node-2)", demoNS)
	for _, p := range []struct{ name, node, sa, app, version string }{
		{"backend-v1", "node-1", "backend", "backend", "v1"},
		{"backend-v2", "node-2", "backend", "backend", "v2"},
		{"frontend", "node-3", "frontend", "frontend", ""},
	} {
		labels := map[string]string{"app": p.app}
		if p.version != "" {
			labels["version"] = p.version
		}
		if err := demoPod(ctx, c, p.name, p.node, p.sa, labels); err != nil {
			return err
		}
	}
	for _, s := range []struct {
		name string
		sel  map[string]string
	}{
		{"backend", map[string]string{"app": "backend"}},
		{"backend-v1", map[string]string{"app": "backend", "version": "v1"}},
		{"backend-v2", map[string]string{"app": "backend", "version": "v2"}},
	} {
		if err := demoService(ctx, c, s.name, s.sel); err != nil {
			return err
		}
	}

	d.step("opt the whole namespace into the mesh, then check the installation")
	if _, err := d.trellis(ctx, true, "join", "-n", demoNS, "--namespace-wide"); err != nil {
		return err
	}
	healthy := until(90*time.Second, func() bool {
		cmd := exec.CommandContext(ctx, bins.Path("kubectl-trellis"), "check")
		cmd.Env = append(os.Environ(), "KUBECONFIG="+c.Status.Kubeconfig)
		return cmd.Run() == nil
	})
	if _, err := d.trellis(ctx, healthy, "check"); err != nil {
		return err
	}

	d.step("frontend → backend.%s.mesh: access control is on and nothing allows it yet", demoNS)
	answers := func(prefix string) func() bool {
		return func() bool {
			seen, err := d.curl(ctx, 1)
			for k := range seen {
				return err == nil && strings.HasPrefix(k, prefix)
			}
			return false
		}
	}
	until(90*time.Second, answers("403"))
	seen, err := d.curl(ctx, 3)
	if err != nil {
		return err
	}
	printSeen(seen)
	if _, err := d.trellis(ctx, false, "why", "-n", demoNS, "--from", "frontend", "--to", "backend"); err != nil {
		return err
	}

	d.step("allow frontend's ServiceAccount to call backend's")
	if _, err := d.trellis(ctx, true, "allow", "--from", "sa/"+demoNS+"/frontend", "--to", "sa/"+demoNS+"/backend"); err != nil {
		return err
	}
	until(60*time.Second, answers("200"))
	d.step("send 90%% of backend's traffic to v1 and 10%% to v2")
	if _, err := d.trellis(ctx, true, "split", "backend", "-n", demoNS, "--to", "backend-v1=90,backend-v2=10"); err != nil {
		return err
	}
	time.Sleep(2 * time.Second) // let the new config reach the proxies before sampling
	fmt.Println("  frontend → backend, 30 requests:")
	if seen, err = d.curl(ctx, 30); err != nil {
		return err
	}
	printSeen(seen)

	d.step("what the mesh knows, and live traffic stats from the proxies")
	if _, err := d.trellis(ctx, true, "status", "-n", demoNS); err != nil {
		return err
	}
	load, err := c.Command(ctx, demoNS, "frontend", bins.Path("whoami"), "--load", "http://backend."+demoNS+".mesh/", "--qps", "20", "--duration", "12s")
	if err != nil {
		return err
	}
	if err := load.Start(); err != nil {
		return err
	}
	time.Sleep(2 * time.Second) // traffic before the first scrape
	if _, err := d.trellis(ctx, false, "stat", "-n", demoNS, "--interval", "5s"); err != nil {
		return err
	}
	_ = load.Wait()

	fmt.Printf(`
Try next:
  export KUBECONFIG=%s PATH=%s:%s:$PATH
  kubectl trellis status -A
  kubectl trellis why -n demo --from frontend --to backend --path /admin --method POST
  kubectl trellis split backend -n demo --to backend-v2=100 --match header:x-canary=true
  kubectl trellis top -n demo
  kubectl trellis config node-3 -o json
  kubectl trellis deny --from sa/demo/frontend --to sa/demo/backend
  kubectl trellis uninstall
  go tool task cluster:down
`, c.Status.Kubeconfig, bins.Own, filepath.Join(toolchain.CacheDir(), "upstream", "current"))
	return nil
}

func printSeen(seen map[string]int) {
	for k, n := range seen {
		fmt.Printf("  %3d × %s\n", n, k)
	}
}

func indent(s string) string {
	if s == "" {
		return ""
	}
	return "  " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n  ") + "\n"
}

func demoService(ctx context.Context, c *cluster.Client, name string, sel map[string]string) error {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: demoNS},
		Spec: corev1.ServiceSpec{
			Selector: sel,
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}
	_, err := c.CS.CoreV1().Services(demoNS).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("service %s/%s: %w", demoNS, name, err)
	}
	fmt.Printf("  service/%s\n", name)
	return nil
}

func demoPod(ctx context.Context, c *cluster.Client, name, node, sa string, labels map[string]string) error {
	p, err := c.CS.CoreV1().Pods(demoNS).Get(ctx, name, metav1.GetOptions{})
	if err == nil && cluster.PodReady(p) {
		fmt.Printf("  pod/%s already running on %s (%s)\n", name, p.Spec.NodeName, p.Status.PodIP)
		return nil
	}
	p, err = c.RunPod(ctx, cluster.PodOptions{
		Name: name, Namespace: demoNS, Node: node, Image: "whoami", Labels: labels, ServiceAccount: sa,
		Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}, ReadinessPort: 8080,
		Wait: 60 * time.Second,
	})
	if err != nil {
		return err
	}
	fmt.Printf("  pod/%s on %s (%s), ServiceAccount %s\n", name, p.Spec.NodeName, p.Status.PodIP, sa)
	return nil
}
