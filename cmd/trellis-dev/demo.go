package main

import (
	"context"
	"fmt"
	"path/filepath"
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
		Short: "Run two whoami pods behind a Service on two nodes and call it from a third",
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
			return runDemo(ctx, c)
		},
	}
}

func runDemo(ctx context.Context, c *cluster.Client) error {
	step := func(f string, a ...any) { fmt.Printf("\n▶ "+f+"\n", a...) }
	step("two whoami pods behind Service %s/web, on node-1 and node-2", demoNS)
	for i, n := range []string{"node-1", "node-2"} {
		name := fmt.Sprintf("web-%d", i+1)
		if err := demoPod(ctx, c, name, n, map[string]string{"app": "web"}); err != nil {
			return err
		}
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: demoNS},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "web"},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}
	created, err := c.CS.CoreV1().Services(demoNS).Create(ctx, svc, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		created, err = c.CS.CoreV1().Services(demoNS).Get(ctx, "web", metav1.GetOptions{})
	}
	if err != nil {
		return fmt.Errorf("service %s/web: %w", demoNS, err)
	}
	fmt.Printf("  service/web ClusterIP %s\n", created.Spec.ClusterIP)
	step("a client pod on node-3")
	if err := demoPod(ctx, c, "client", "node-3", map[string]string{"app": "client"}); err != nil {
		return err
	}
	if err := c.WaitEndpoints(ctx, demoNS, "web", 2, 30*time.Second); err != nil {
		return err
	}
	for _, target := range []string{"http://web." + demoNS + ".svc.cluster.local/", "http://" + created.Spec.ClusterIP + "/"} {
		step("client → %s (6 requests)", target)
		seen := map[string]int{}
		for range 6 {
			x, err := c.Command(ctx, demoNS, "client", "curl", "-s", "--max-time", "5", target)
			if err != nil {
				return err
			}
			out, err := x.Output()
			if err != nil {
				return fmt.Errorf("curl %s from pod client: %w", target, err)
			}
			host, remote := cluster.ReportField(string(out), "Hostname"), cluster.ReportField(string(out), "RemoteAddr")
			seen[host]++
			fmt.Printf("  answered by %-6s (saw the client as %s)\n", host, remote)
		}
		if len(seen) < 2 {
			fmt.Printf("  note: only %d pod answered; kube-proxy picks endpoints at random\n", len(seen))
		}
	}
	fmt.Printf(`
Try next:
  export KUBECONFIG=%s PATH=%s:$PATH   # kubectl v1.37, built from source
  kubectl get pods,svc,endpointslices -n demo -o wide
  go run ./cmd/trellis-dev exec -n demo client -- curl -s http://web/
  go run ./cmd/trellis-dev pod run web-3 -n demo --node node-3 --label app=web
  go run ./cmd/trellis-dev logs -n demo web-1
  go run ./cmd/trellis-dev status
  go tool task cluster:down
`, c.Status.Kubeconfig, filepath.Join(toolchain.CacheDir(), "upstream", "current"))
	return nil
}

func demoPod(ctx context.Context, c *cluster.Client, name, node string, labels map[string]string) error {
	p, err := c.CS.CoreV1().Pods(demoNS).Get(ctx, name, metav1.GetOptions{})
	if err == nil && cluster.PodReady(p) {
		fmt.Printf("  pod/%s already running on %s (%s)\n", name, p.Spec.NodeName, p.Status.PodIP)
		return nil
	}
	p, err = c.RunPod(ctx, cluster.PodOptions{
		Name: name, Namespace: demoNS, Node: node, Image: "whoami", Labels: labels,
		Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}, ReadinessPort: 8080,
		Wait: 60 * time.Second,
	})
	if err != nil {
		return err
	}
	fmt.Printf("  pod/%s on %s (%s)\n", name, p.Spec.NodeName, p.Status.PodIP)
	return nil
}
