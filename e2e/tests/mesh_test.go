package tests

import (
	"context"
	"fmt"
	"io/fs"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/trellis-mesh/trellis/controller/shadow"
	"github.com/trellis-mesh/trellis/internal/kube"
	"github.com/trellis-mesh/trellis/manifests/base"
	"github.com/trellis-mesh/trellis/manifests/crds"
)

// installTrellis applies the shipped CRDs and base manifests (controller
// Deployment, proxy DaemonSet) exactly as a user would, and waits for them
// to roll out on every node.
func installTrellis(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	ap := applier(t)
	applyFiles(t, ap, crds.FS, crds.Files()...)
	applyFiles(t, ap, base.FS, "namespace.yaml", "rbac.yaml", "configmap.yaml", "controller.yaml", "proxy.yaml")
	eventually(t, 120*time.Second, "trellis-controller 2/2 available and trellis-proxy ready on 3 nodes", func() error {
		d, err := env.CS.AppsV1().Deployments("trellis-system").Get(ctx, "trellis-controller", metav1.GetOptions{})
		if err != nil {
			return err
		}
		ds, err := env.CS.AppsV1().DaemonSets("trellis-system").Get(ctx, "trellis-proxy", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if d.Status.AvailableReplicas != 2 || ds.Status.NumberReady != 3 {
			return fmt.Errorf("controller %d/2 available, proxy %d/3 ready", d.Status.AvailableReplicas, ds.Status.NumberReady)
		}
		return nil
	})
}

// TestMeshEndToEnd: with Trellis installed from its manifests, a Service
// that opts in gets a mesh name that resolves through the cluster's real
// CoreDNS, and requests to it reach a backend through the proxy on the
// client's own node; when the Service opts out the name goes away.
func TestMeshEndToEnd(t *testing.T) {
	installTrellis(t)
	logsOnFailure(t, "trellis-system")
	ctx := context.Background()
	ns := "e2e-mesh"
	whoamiPod(t, ns, "web-1", "node-1", map[string]string{"app": "web", "version": "v1"}, "")
	whoamiPod(t, ns, "web-2", "node-2", map[string]string{"app": "web", "version": "v2"}, "")
	client := whoamiPod(t, ns, "client", "node-3", map[string]string{"app": "client"}, "")
	// One client per node, so split changes are checked on every node's proxy.
	whoamiPod(t, ns, "client-1", "node-1", map[string]string{"app": "client"}, "")
	whoamiPod(t, ns, "client-2", "node-2", map[string]string{"app": "client"}, "")
	service(t, ns, "web", map[string]string{"app": "web"}, false)
	service(t, ns, "web-v1", map[string]string{"app": "web", "version": "v1"}, false)
	service(t, ns, "web-v2", map[string]string{"app": "web", "version": "v2"}, false)
	setMesh := func(v string, names ...string) {
		patch := fmt.Sprintf(`{"metadata":{"annotations":{"trellis.io/mesh":%q}}}`, v)
		for _, n := range names {
			if _, err := env.CS.CoreV1().Services(ns).Patch(ctx, n, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	setMesh("true", "web", "web-v1", "web-v2")

	proxies, err := env.CS.CoreV1().Pods("trellis-system").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=trellis-proxy"})
	if err != nil {
		t.Fatal(err)
	}
	localProxy := ""
	for _, p := range proxies.Items {
		if p.Spec.NodeName == client.Spec.NodeName && p.DeletionTimestamp == nil {
			localProxy = p.Status.PodIP
		}
	}
	if localProxy == "" {
		t.Fatalf("no proxy pod on %s", client.Spec.NodeName)
	}
	name := "web." + ns + ".mesh"
	seen := map[string]int{}
	eventually(t, 90*time.Second, "http://"+name+"/ answers through the client node's proxy from both backends", func() error {
		out, err := inPod(ctx, ns, "client", "curl", "-sS", "--max-time", "3", "http://"+name+"/")
		if err != nil {
			return err
		}
		host, remote := reportField(out, "Hostname"), reportField(out, "RemoteAddr")
		if !strings.HasPrefix(remote, localProxy+":") {
			return fmt.Errorf("backend %s saw %s, want the local proxy %s (response %q)", host, remote, localProxy, out)
		}
		seen[host]++
		if seen["web-1"] == 0 || seen["web-2"] == 0 {
			return fmt.Errorf("answers so far %v", seen)
		}
		return nil
	})

	// A TrafficSplit sends everything to v2, then everything to v1: every
	// change reaches the proxy on the client's node.
	ap := applier(t)
	split := func(v1, v2 int) {
		objs, err := kube.Decode(fmt.Appendf(nil, `
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {name: web, namespace: %s}
spec:
  service: web
  backends:
    - {service: web-v1, weight: %d}
    - {service: web-v2, weight: %d}
`, ns, v1, v2))
		if err != nil {
			t.Fatal(err)
		}
		if err := ap.Apply(ctx, objs); err != nil {
			t.Fatal(err)
		}
	}
	only := func(want string) func() error {
		return func() error {
			for _, c := range []string{"client", "client-1", "client-2"} {
				for range 6 {
					out, err := inPod(ctx, ns, c, "curl", "-sS", "--max-time", "3", "http://"+name+"/")
					if err != nil {
						return fmt.Errorf("from %s: %w", c, err)
					}
					if got := reportField(out, "Hostname"); got != want {
						return fmt.Errorf("from %s answered by %s, want only %s", c, got, want)
					}
				}
			}
			return nil
		}
	}
	split(0, 100)
	eventually(t, 30*time.Second, "TrafficSplit 0/100 sends everything to web-2, through every node's proxy", only("web-2"))
	split(100, 0)
	eventually(t, 30*time.Second, "TrafficSplit 100/0 sends everything to web-1, through every node's proxy", only("web-1"))

	// Deleting the leading controller replica disturbs no request: proxies
	// keep serving their config while they reconnect.
	lease, err := env.CS.CoordinationV1().Leases("trellis-system").Get(ctx, "trellis-controller", metav1.GetOptions{})
	if err != nil || lease.Spec.HolderIdentity == nil {
		t.Fatalf("leader lease: %v", err)
	}
	leader := *lease.Spec.HolderIdentity
	if i := strings.IndexByte(leader, '_'); i > 0 {
		leader = leader[:i]
	}
	if err := env.CS.CoreV1().Pods("trellis-system").Delete(ctx, leader, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("deleting leader %s: %v", leader, err)
	}
	failures := 0
	for range 40 {
		if _, err := inPod(ctx, ns, "client", "curl", "-sS", "--fail", "--max-time", "3", "http://"+name+"/"); err != nil {
			failures++
			t.Logf("request failed while the leader %s was deleted: %v", leader, err)
		}
		time.Sleep(100 * time.Millisecond) // pacing of the probe requests, not a wait for state
	}
	if failures != 0 {
		t.Fatalf("%d of 40 requests failed while the leading controller was deleted", failures)
	}
	eventually(t, 60*time.Second, "a new leader is elected and the Deployment is back to 2/2", func() error {
		d, err := env.CS.AppsV1().Deployments("trellis-system").Get(ctx, "trellis-controller", metav1.GetOptions{})
		if err != nil {
			return err
		}
		l, err := env.CS.CoordinationV1().Leases("trellis-system").Get(ctx, "trellis-controller", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if d.Status.AvailableReplicas != 2 || l.Spec.HolderIdentity == nil || strings.HasPrefix(*l.Spec.HolderIdentity, leader) {
			return fmt.Errorf("available %d, holder %v", d.Status.AvailableReplicas, l.Spec.HolderIdentity)
		}
		return nil
	})
	// After the new leader takes over, split changes still flow to every
	// node's proxy: each proxy whose replica went away is back on a live
	// one within its connect timeouts and back-off.
	split(0, 100)
	changed := time.Now()
	eventually(t, 30*time.Second, "after the leader change, TrafficSplit 0/100 sends everything to web-2, through every node's proxy", only("web-2"))
	t.Logf("after the leader change, a split change reached every proxy in %s", time.Since(changed).Round(100*time.Millisecond))

	setMesh("false", "web")
	eventually(t, 60*time.Second, name+" stops resolving after the Service opts out", func() error {
		if out, err := inPod(ctx, ns, "client", "getent", "hosts", name); err == nil {
			return fmt.Errorf("still resolves: %s", strings.TrimSpace(out))
		}
		return nil
	})
	eventually(t, 30*time.Second, "the shadow Service is removed", func() error {
		shadows, err := env.CS.CoreV1().Services("trellis-system").List(ctx, metav1.ListOptions{
			LabelSelector: shadow.LabelOfNamespace + "=" + ns + "," + shadow.LabelOfName + "=web",
		})
		if err != nil {
			return err
		}
		if len(shadows.Items) != 0 {
			return fmt.Errorf("shadow Service %s still exists", shadows.Items[0].Name)
		}
		return nil
	})
}

// applier is a server-side applier for the suite.
func applier(t *testing.T) *kube.Applier {
	t.Helper()
	ap, err := kube.NewApplier(env.Config, "trellis-e2e")
	if err != nil {
		t.Fatal(err)
	}
	return ap
}

// applyFiles applies embedded manifest files in order, as a user would.
func applyFiles(t *testing.T, ap *kube.Applier, fsys fs.FS, names ...string) {
	t.Helper()
	for _, n := range names {
		b, err := fs.ReadFile(fsys, n)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := kube.Decode(b)
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		if err := ap.Apply(context.Background(), objs); err != nil {
			t.Fatalf("%s: %v", n, err)
		}
	}
}
