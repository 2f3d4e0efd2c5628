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
	ap, err := kube.NewApplier(env.Config, "trellis-e2e")
	if err != nil {
		t.Fatal(err)
	}
	apply := func(fsys fs.FS, names ...string) {
		for _, n := range names {
			b, err := fs.ReadFile(fsys, n)
			if err != nil {
				t.Fatal(err)
			}
			objs, err := kube.Decode(b)
			if err != nil {
				t.Fatalf("%s: %v", n, err)
			}
			if err := ap.Apply(ctx, objs); err != nil {
				t.Fatalf("%s: %v", n, err)
			}
		}
	}
	apply(crds.FS, crds.Files()...)
	apply(base.FS, "namespace.yaml", "rbac.yaml", "configmap.yaml", "controller.yaml", "proxy.yaml")
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
	ctx := context.Background()
	ns := "e2e-mesh"
	whoamiPod(t, ns, "web-1", "node-1", map[string]string{"app": "web"}, "")
	whoamiPod(t, ns, "web-2", "node-2", map[string]string{"app": "web"}, "")
	client := whoamiPod(t, ns, "client", "node-3", map[string]string{"app": "client"}, "")
	svc := service(t, ns, "web", map[string]string{"app": "web"}, false)
	setMesh := func(v string) {
		patch := fmt.Sprintf(`{"metadata":{"annotations":{"trellis.io/mesh":%q}}}`, v)
		if _, err := env.CS.CoreV1().Services(ns).Patch(ctx, svc.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	setMesh("true")

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

	setMesh("false")
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
