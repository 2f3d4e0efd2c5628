package tests

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
)

var meshPluginGVR = schema.GroupVersionResource{Group: "trellis.io", Version: "v1alpha1", Resource: "meshplugins"}

// TestPluginOnTheCluster (issue 7): the example headers plugin, shipped as
// source in a ConfigMap and attached to a meshed Service by a MeshPlugin,
// changes the requests its backend sees; a new config rolls out with no
// failed request under constant load; deleting the MeshPlugin restores the
// original behaviour.
func TestPluginOnTheCluster(t *testing.T) {
	installTrellis(t)
	logsOnFailure(t, "trellis-system")
	ctx := context.Background()
	ns := "e2e-plugin"
	whoamiPod(t, ns, "web-1", "node-1", map[string]string{"app": "web"}, "")
	whoamiPod(t, ns, "client", "node-2", map[string]string{"app": "client"}, "")
	svc := service(t, ns, "web", map[string]string{"app": "web"}, false)
	svc.Annotations = map[string]string{"trellis.io/mesh": "true"}
	if _, err := env.CS.CoreV1().Services(ns).Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	url := "http://web." + ns + ".mesh/"
	sees := func(want string, present bool) func() error {
		return func() error {
			out, err := inPod(ctx, ns, "client", "curl", "-sS", "--fail", "--max-time", "3", url)
			if err != nil {
				return err
			}
			if strings.Contains(out, want) != present {
				return fmt.Errorf("backend saw (want %q present=%v):\n%s", want, present, out)
			}
			return nil
		}
	}
	eventually(t, 90*time.Second, url+" answers without the plugin", sees("X-Plugin:", false))

	// The plugin's source, as its author wrote it, in a labelled ConfigMap.
	dir := filepath.Join(mustRoot(), "examples", "plugins", "headers")
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	data := map[string]string{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		data[filepath.Base(f)] = string(b)
	}
	if _, err := env.CS.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "headers-src", Labels: map[string]string{"trellis.io/plugin-source": "true"}},
		Data:       data,
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	plugins := dynamic.NewForConfigOrDie(env.Config).Resource(meshPluginGVR).Namespace(ns)
	mp := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "trellis.io/v1alpha1", "kind": "MeshPlugin",
		"metadata": map[string]any{"name": "headers", "namespace": ns},
		"spec": map[string]any{
			"module": "example.com/headers", "source": map[string]any{"configMap": "headers-src"},
			"services": []any{"web"},
			"config":   map[string]any{"setRequestHeaders": map[string]any{"X-Plugin": "v1"}},
		},
	}}
	if _, err := plugins.Create(ctx, mp, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "the plugin sets X-Plugin: v1 on requests to web", sees("X-Plugin: v1\n", true))

	// A new config rolls out under load: no request fails.
	lr := startLoad(t, ns, "client", url, 50)
	time.Sleep(2 * time.Second) // steady load before the change (pacing)
	changed := time.Now()
	patch := `{"spec":{"config":{"setRequestHeaders":{"X-Plugin":"v2"}}}}`
	if _, err := plugins.Patch(ctx, "headers", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "the new version sets X-Plugin: v2", sees("X-Plugin: v2\n", true))
	t.Logf("plugin config v2 served %s after the change", time.Since(changed).Round(100*time.Millisecond))
	time.Sleep(2 * time.Second) // load after the roll-out (pacing)
	rep := lr.stop(t)
	t.Logf("during the plugin roll-out: %d requests, %d failed, p99 %.1f ms", rep.Requests, rep.Failed, rep.P99ms)
	if rep.Requests == 0 || rep.Failed != 0 {
		t.Fatalf("%d of %d requests failed while the plugin rolled out: %+v", rep.Failed, rep.Requests, rep.Failures)
	}

	// Removing the MeshPlugin restores the original behaviour.
	if err := plugins.Delete(ctx, "headers", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "without the MeshPlugin, requests carry no X-Plugin header", sees("X-Plugin:", false))
}
