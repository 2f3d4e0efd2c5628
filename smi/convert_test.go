package smi

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// TestConvertRoundTrip converts every valid SMI object in the golden inputs
// to every version of its kind and back: the round trip must restore the
// object exactly, and a conversion that needed no stash must mean the same
// (same model) as the original.
func TestConvertRoundTrip(t *testing.T) {
	files, _ := filepath.Glob("testdata/golden/*.yaml")
	n := 0
	for _, fn := range files {
		if strings.HasPrefix(filepath.Base(fn), "invalid") {
			continue
		}
		data, err := os.ReadFile(fn)
		if err != nil {
			t.Fatal(err)
		}
		for _, doc := range strings.Split(string(data), "\n---\n") {
			var m map[string]any
			if err := yaml.Unmarshal([]byte(doc), &m); err != nil || m == nil {
				continue
			}
			u := &unstructured.Unstructured{Object: normalizeJSON(m).(map[string]any)}
			orig, ps := Decode(u)
			if orig == nil || HasErrors(ps) {
				continue
			}
			ki, _ := Info(Kind(u.GetKind()))
			for _, v := range ki.Versions {
				target := ki.Group + "/" + v
				conv, err := Convert(u, target)
				if err != nil {
					t.Errorf("%s -> %s: %v", orig.GetMeta().Ref, target, err)
					continue
				}
				n++
				if conv.GetAPIVersion() != target {
					t.Errorf("%s: apiVersion %s, want %s", orig.GetMeta().Ref, conv.GetAPIVersion(), target)
				}
				back, err := Convert(conv, u.GetAPIVersion())
				if err != nil {
					t.Errorf("%s -> %s -> back: %v", orig.GetMeta().Ref, target, err)
					continue
				}
				// An empty spec and no spec are the same object (see FuzzDecode).
				if !reflect.DeepEqual(dropEmptySpec(back.Object), dropEmptySpec(u.Object)) {
					a, _ := json.Marshal(u.Object)
					b, _ := json.Marshal(back.Object)
					t.Errorf("%s via %s did not round-trip:\n was %s\n got %s", orig.GetMeta().Ref, v, a, b)
				}
				dec, dps := Decode(conv)
				if HasErrors(dps) {
					t.Errorf("%s converted to %s does not decode: %v", orig.GetMeta().Ref, target, dps)
					continue
				}
				if _, stashed := conv.GetAnnotations()[ConversionAnnotation]; !stashed {
					if a, b := modelJSON(orig), modelJSON(dec); a != b {
						t.Errorf("%s converted to %s means something else:\n was %s\n now %s", orig.GetMeta().Ref, target, a, b)
					}
				}
			}
		}
	}
	if n < 40 {
		t.Fatalf("only %d conversions exercised", n)
	}
}

func modelJSON(o Object) string {
	m := *o.GetMeta()
	m.APIVersion = ""
	b, _ := json.Marshal(o)
	var x map[string]any
	_ = json.Unmarshal(b, &x)
	delete(x, "apiVersion")
	b, _ = json.Marshal(x)
	return string(b)
}

func TestConvertStash(t *testing.T) {
	in := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(`
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {name: ab, namespace: shop}
spec:
  service: web
  matches: [{kind: HTTPRouteGroup, name: beta}]
  backends: [{service: web-v2, weight: 1}]`), &in.Object); err != nil {
		t.Fatal(err)
	}
	down, err := Convert(in, "split.smi-spec.io/v1alpha2")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := unstructured.NestedFieldNoCopy(down.Object, "spec", "matches"); ok {
		t.Fatal("v1alpha2 has no matches, but the converted object does")
	}
	if got := down.GetAnnotations()[ConversionAnnotation]; got != `{"spec.matches":[{"kind":"HTTPRouteGroup","name":"beta"}]}` {
		t.Fatalf("stash = %q", got)
	}
	// A v1alpha2 client edits the weights and writes back: matches survive.
	_ = unstructured.SetNestedSlice(down.Object, []any{map[string]any{"service": "web-v2", "weight": int64(5)}}, "spec", "backends")
	up, err := Convert(down, "split.smi-spec.io/v1alpha4")
	if err != nil {
		t.Fatal(err)
	}
	ms, _, _ := unstructured.NestedSlice(up.Object, "spec", "matches")
	if len(ms) != 1 || up.GetAnnotations() != nil {
		t.Fatalf("matches %v, annotations %v after converting back", ms, up.GetAnnotations())
	}

	// v1alpha1 fractional weights become thousandths and come back exactly.
	q := &unstructured.Unstructured{}
	_ = yaml.Unmarshal([]byte(`
apiVersion: split.smi-spec.io/v1alpha1
kind: TrafficSplit
metadata: {name: q, namespace: shop}
spec: {service: web, backends: [{service: a, weight: 500m}, {service: b, weight: "1"}]}`), &q.Object)
	up, err = Convert(q, "split.smi-spec.io/v1alpha4")
	if err != nil {
		t.Fatal(err)
	}
	bs, _, _ := unstructured.NestedSlice(up.Object, "spec", "backends")
	if bs[0].(map[string]any)["weight"] != int64(500) || bs[1].(map[string]any)["weight"] != int64(1000) {
		t.Fatalf("weights %v", bs)
	}
	if _, err := Convert(q, "split.smi-spec.io/v9"); err == nil || !strings.Contains(err.Error(), "TrafficSplit shop/q") {
		t.Fatalf("unknown target version: err = %v", err)
	}
}
