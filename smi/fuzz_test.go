package smi

import (
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// FuzzDecode feeds arbitrary documents to Decode and the policy built from
// them. Nothing may panic; every problem must name its object; an object
// with an Error problem must be marked invalid, and an invalid object must
// never allow or split traffic.
func FuzzDecode(f *testing.F) {
	files, _ := filepath.Glob("testdata/golden/*.yaml")
	for _, fn := range files {
		data, err := os.ReadFile(fn)
		if err != nil {
			f.Fatal(err)
		}
		for _, doc := range strings.Split(string(data), "\n---\n") {
			if strings.Contains(doc, "smi-spec.io") {
				f.Add([]byte(doc))
			}
		}
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		var m map[string]any
		if err := yaml.Unmarshal(doc, &m); err != nil || m == nil {
			return
		}
		u := &unstructured.Unstructured{Object: m}
		// (Compared as values: sigs.k8s.io/yaml does not order some
		// numeric-looking keys deterministically.)
		before := normalizeJSON(m)
		obj, ps := Decode(u)
		if !reflect.DeepEqual(before, normalizeJSON(m)) {
			t.Fatal("Decode modified its input")
		}
		for _, p := range ps {
			if p.Message == "" || p.Severity == "" {
				t.Fatalf("empty problem: %+v", p)
			}
		}
		if obj == nil {
			if !HasErrors(ps) {
				t.Fatal("nil object without an error")
			}
			return
		}
		if HasErrors(ps) != obj.GetMeta().Invalid {
			t.Fatalf("Invalid=%v but problems %v", obj.GetMeta().Invalid, ps)
		}
		// Every valid object converts to every version of its kind and back
		// unchanged. Fields outside the schema are left out of this: the
		// apiserver prunes them before conversion ever sees them.
		unknownFields := false
		for _, p := range ps {
			unknownFields = unknownFields || strings.Contains(p.Message, "is not a field of")
		}
		if !obj.GetMeta().Invalid && !unknownFields {
			ki, _ := Info(obj.GetMeta().Kind)
			for _, v := range ki.Versions {
				conv, err := Convert(u, ki.Group+"/"+v)
				if err != nil {
					t.Fatalf("valid object does not convert to %s: %v", v, err)
				}
				back, err := Convert(conv, u.GetAPIVersion())
				if err != nil {
					t.Fatalf("converted object does not convert back from %s: %v", v, err)
				}
				// An empty spec and no spec mean the same (TCPRoute before
				// v1alpha4 has nothing in it); the old versions cannot tell.
				a, b := dropEmptySpec(normalizeJSON(u.Object).(map[string]any)), dropEmptySpec(back.Object)
				if !reflect.DeepEqual(a, b) {
					t.Fatalf("round trip via %s changed the object:\n%v\n---\n%v", v, a, b)
				}
			}
		}
		pol := NewPolicy([]Object{obj}, nil)
		req := Request{Protocol: HTTP, Port: 80, Method: "GET", Path: "/", Header: http.Header{"X": {"y"}}}
		for _, pr := range []Protocol{HTTP, TCP, UDP} {
			req.Protocol = pr
			ok, why := pol.Allowed(Identity{"default", "a"}, Identity{obj.GetMeta().Namespace, "b"}, req)
			if ok != why.Allowed || why.Message == "" {
				t.Fatalf("inconsistent reason %+v", why)
			}
			if tt, isTT := obj.(*TrafficTarget); isTT && len(tt.Sources) > 0 {
				ok, why = pol.Allowed(tt.Sources[0], tt.Destination, req)
				if ok && tt.Invalid {
					t.Fatalf("invalid TrafficTarget allowed traffic: %s", why)
				}
			}
			d := pol.Split(obj.GetMeta().Namespace, "web", req)
			if d.Reason == "" {
				t.Fatal("split without reason")
			}
		}
	})
}

func dropEmptySpec(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		if s, ok := v.(map[string]any); ok && k == "spec" && len(s) == 0 {
			continue
		}
		out[k] = v
	}
	return out
}
