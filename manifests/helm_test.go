package manifests

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/controller/settings"
	"github.com/trellis-mesh/trellis/internal/kube"
)

var update = flag.Bool("update", false, "copy the files the chart shares verbatim (CRDs, RBAC) from crds/ and base/")

const chartDir = "helm/trellis"

// verbatim are the chart files that are copies of the kustomize base or
// the CRDs: one source of truth, copied by -update, checked here.
func verbatim(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{} // chart path -> source
	crdFiles, err := filepath.Glob("crds/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range crdFiles {
		out[filepath.Join(chartDir, "crds", filepath.Base(f))] = f
	}
	for _, f := range kustomizationResources(t) {
		switch f {
		case "namespace.yaml", "configmap.yaml", "controller.yaml", "proxy.yaml":
			// templated from values
		default:
			out[filepath.Join(chartDir, "templates", f)] = filepath.Join("base", f)
		}
	}
	return out
}

func kustomizationResources(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("base/kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		Resources []string `json:"resources"`
	}
	if err := yaml.Unmarshal(b, &k); err != nil {
		t.Fatal(err)
	}
	return k.Resources
}

// TestChartSharesFiles: the chart's CRDs and verbatim templates are the
// base's files, and the chart ships nothing stale.
func TestChartSharesFiles(t *testing.T) {
	want := verbatim(t)
	for dst, src := range want {
		s, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if *update {
			if err := os.WriteFile(dst, s, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		d, err := os.ReadFile(dst)
		if err != nil || !bytes.Equal(s, d) {
			t.Errorf("%s is not a copy of %s (%v); run go test ./manifests -run TestChartSharesFiles -update", dst, src, err)
		}
	}
	have, _ := filepath.Glob(filepath.Join(chartDir, "crds", "*"))
	for _, f := range have {
		if _, ok := want[f]; !ok {
			t.Errorf("%s: no such CRD in manifests/crds; delete it", f)
		}
	}
}

// renderChart renders the chart as `helm template` would, with values
// over the defaults, and decodes the objects (sorted by kind/namespace/name).
func renderChart(t *testing.T, values string) (map[string]*unstructured.Unstructured, error) {
	t.Helper()
	ch, err := loader.Load(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	var over map[string]any
	if err := yaml.Unmarshal([]byte(values), &over); err != nil {
		t.Fatal(err)
	}
	vals, err := chartutil.ToRenderValues(ch, over, chartutil.ReleaseOptions{Name: "trellis", Namespace: "default", IsInstall: true}, chartutil.DefaultCapabilities)
	if err != nil {
		return nil, err
	}
	if err := chartutil.ValidateAgainstSchema(ch, vals["Values"].(chartutil.Values)); err != nil {
		return nil, err
	}
	out, err := engine.Render(ch, vals)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(out))
	for n := range out {
		names = append(names, n)
	}
	sort.Strings(names)
	objs := map[string]*unstructured.Unstructured{}
	for _, n := range names {
		if !strings.HasSuffix(n, ".yaml") {
			continue
		}
		us, err := kube.Decode([]byte(out[n]))
		if err != nil {
			t.Fatalf("%s: %v\n%s", n, err, out[n])
		}
		for _, u := range us {
			objs[id(u)] = u
		}
	}
	return objs, nil
}

func id(u *unstructured.Unstructured) string {
	return u.GetKind() + " " + u.GetNamespace() + "/" + u.GetName()
}

// kustomizeBase is `kubectl kustomize manifests/base`.
func kustomizeBase(t *testing.T) map[string]*unstructured.Unstructured {
	t.Helper()
	rm, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), "base")
	if err != nil {
		t.Fatal(err)
	}
	b, err := rm.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	us, err := kube.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	objs := map[string]*unstructured.Unstructured{}
	for _, u := range us {
		objs[id(u)] = u
	}
	return objs
}

// TestChartMatchesKustomize: with default values the chart renders the
// very objects of the kustomize base, field for field.
func TestChartMatchesKustomize(t *testing.T) {
	helm, err := renderChart(t, "{}")
	if err != nil {
		t.Fatal(err)
	}
	kust := kustomizeBase(t)
	if len(kust) < 10 {
		t.Fatalf("kustomize rendered only %d objects", len(kust))
	}
	for k, want := range kust {
		got, ok := helm[k]
		if !ok {
			t.Errorf("%s: in the kustomize base, not in the chart", k)
			continue
		}
		if !reflect.DeepEqual(got.Object, want.Object) {
			g, _ := yaml.Marshal(got.Object)
			w, _ := yaml.Marshal(want.Object)
			t.Errorf("%s differs:\n--- chart\n%s--- kustomize\n%s", k, g, w)
		}
	}
	for k := range helm {
		if _, ok := kust[k]; !ok {
			t.Errorf("%s: in the chart, not in the kustomize base", k)
		}
	}
	// The chart's CRDs are the shipped ones.
	ch, err := loader.Load(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	var crds []string
	for _, f := range ch.CRDObjects() {
		crds = append(crds, filepath.Base(f.Filename))
	}
	files, _ := filepath.Glob("crds/*.yaml")
	for i := range files {
		files[i] = filepath.Base(files[i])
	}
	slices.Sort(crds)
	if !reflect.DeepEqual(crds, files) {
		t.Errorf("chart CRDs %v, manifests/crds %v", crds, files)
	}
}

// TestChartValues: each value lands where it should, and the settings it
// writes still parse.
func TestChartValues(t *testing.T) {
	objs, err := renderChart(t, `
image: {registry: registry.local:5000/mirror, tag: v1.2.3, pullPolicy: Always}
acl: true
meshDomain: corp.mesh
logLevel: debug
namespace: {create: false}
controller:
  replicas: 3
  resources: {requests: {cpu: 200m, memory: 256Mi}, limits: {memory: 1Gi}}
  goMemLimit: 800MiB
proxy:
  resources: {requests: {cpu: 50m, memory: 32Mi}, limits: {memory: 128Mi}}
`)
	if err != nil {
		t.Fatal(err)
	}
	get := func(k string, path ...string) any {
		t.Helper()
		u, ok := objs[k]
		if !ok {
			t.Fatalf("no %s", k)
		}
		v, _, err := unstructured.NestedFieldNoCopy(u.Object, path...)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if _, ok := objs["Namespace /trellis-system"]; ok {
		t.Error("namespace.create=false still renders the Namespace")
	}
	s, err := settings.Parse([]byte(get("ConfigMap trellis-system/trellis-controller", "data", "settings.yaml").(string)))
	if err != nil || !s.ACL || s.MeshDomain != "corp.mesh" {
		t.Errorf("settings %+v (%v); want acl and meshDomain corp.mesh", s, err)
	}
	dep, ds := "Deployment trellis-system/trellis-controller", "DaemonSet trellis-system/trellis-proxy"
	if r := get(dep, "spec", "replicas"); fmt.Sprint(r) != "3" {
		t.Errorf("replicas %v", r)
	}
	for k, img := range map[string]string{dep: "registry.local:5000/mirror/trellis-controller:v1.2.3", ds: "registry.local:5000/mirror/trellis-proxy:v1.2.3"} {
		c := get(k, "spec", "template", "spec", "containers").([]any)[0].(map[string]any)
		if c["image"] != img || c["imagePullPolicy"] != "Always" {
			t.Errorf("%s: image %v pull %v", k, c["image"], c["imagePullPolicy"])
		}
		if !slices.Contains(c["args"].([]any), any("--log-level=debug")) {
			t.Errorf("%s: args %v", k, c["args"])
		}
		want := map[string]string{dep: "1Gi", ds: "128Mi"}[k]
		if got := c["resources"].(map[string]any)["limits"].(map[string]any)["memory"]; got != want {
			t.Errorf("%s: memory limit %v, want %s", k, got, want)
		}
	}
	c := get(dep, "spec", "template", "spec", "containers").([]any)[0].(map[string]any)
	if fmt.Sprint(c["env"]) != fmt.Sprint([]any{
		map[string]any{"name": "POD_NAME", "valueFrom": map[string]any{"fieldRef": map[string]any{"fieldPath": "metadata.name"}}},
		map[string]any{"name": "POD_NAMESPACE", "valueFrom": map[string]any{"fieldRef": map[string]any{"fieldPath": "metadata.namespace"}}},
		map[string]any{"name": "GOMEMLIMIT", "value": "800MiB"},
	}) {
		t.Errorf("controller env %v", c["env"])
	}
	if _, ok := objs["PodDisruptionBudget trellis-system/trellis-controller"]; !ok {
		t.Error("3 replicas without a PodDisruptionBudget")
	}
	// One replica: a budget of minAvailable 1 would block every drain.
	objs, err = renderChart(t, `controller: {replicas: 1}`)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := objs["PodDisruptionBudget trellis-system/trellis-controller"]; ok {
		t.Error("1 replica with a PodDisruptionBudget blocks node drains")
	}
}

// TestChartRejectsBadValues: the values schema names the bad value.
func TestChartRejectsBadValues(t *testing.T) {
	for _, tc := range []struct{ values, want string }{
		{`logLevel: verbose`, "logLevel"},
		{`acl: "yes"`, "acl"},
		{`controller: {replicas: 0}`, "replicas"},
		{`image: {tag: "v1 2"}`, "tag"},
		{`image: {registry: "https://ghcr.io/x"}`, "registry"},
		{`meshDomain: Mesh_Domain`, "meshDomain"},
		{`controler: {replicas: 2}`, "controler"},
	} {
		_, err := renderChart(t, tc.values)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one naming %s", tc.values, err, tc.want)
		}
	}
}
