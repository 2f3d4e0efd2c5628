package schemacheck

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/yaml"
)

func TestCheck(t *testing.T) {
	tests := []struct {
		name    string
		gvk     schema.GroupVersionKind
		obj     string
		errs    []string // substrings, one per expected error
		unknown []string
	}{
		{"valid split", gvk("split.smi-spec.io", "v1alpha4", "TrafficSplit"),
			`{spec: {service: web, backends: [{service: web-v1, weight: 1}]}}`, nil, nil},
		{"negative weight", gvk("split.smi-spec.io", "v1alpha4", "TrafficSplit"),
			`{spec: {service: web, backends: [{service: web-v1, weight: -1}]}}`, []string{"spec.backends[0].weight: Invalid value", "must not be negative"}, nil},
		{"no backends", gvk("split.smi-spec.io", "v1alpha2", "TrafficSplit"),
			`{spec: {service: web, backends: []}}`, []string{"must list at least one backend"}, nil},
		{"v1alpha1 quantity", gvk("split.smi-spec.io", "v1alpha1", "TrafficSplit"),
			`{spec: {service: web, backends: [{service: a, weight: 500m}, {service: b, weight: 1}, {service: c, weight: "-1"}]}}`, []string{"spec.backends[2].weight", "non-negative quantity"}, nil},
		{"top-level matches in v1alpha4", gvk("specs.smi-spec.io", "v1alpha4", "HTTPRouteGroup"),
			`{spec: {matches: [{name: a}]}, matches: [{name: b}]}`, nil, []string{"matches"}},
		{"bad method", gvk("specs.smi-spec.io", "v1alpha3", "HTTPRouteGroup"),
			`{spec: {matches: [{name: a, methods: [get]}]}}`, []string{"spec.matches[0].methods[0]", "upper-case HTTP method"}, nil},
		{"source without namespace", gvk("access.smi-spec.io", "v1alpha3", "TrafficTarget"),
			`{spec: {destination: {kind: ServiceAccount, name: a}, sources: [{kind: ServiceAccount, name: b}], rules: [{kind: HTTPRouteGroup, name: r}]}}`, []string{"spec.sources[0].namespace", "is required for sources"}, nil},
		{"port out of range", gvk("specs.smi-spec.io", "v1alpha4", "TCPRoute"),
			`{spec: {matches: {ports: [0, 80, 70000]}}}`, []string{"spec.matches.ports[0]", "spec.matches.ports[2]"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var obj map[string]any
			if err := yaml.Unmarshal([]byte(tc.obj), &obj); err != nil {
				t.Fatal(err)
			}
			obj["apiVersion"] = tc.gvk.GroupVersion().String()
			obj["kind"] = tc.gvk.Kind
			obj["metadata"] = map[string]any{"name": "x", "namespace": "ns"}
			res, ok, err := Check(tc.gvk, obj)
			if err != nil || !ok {
				t.Fatalf("Check: ok=%v err=%v", ok, err)
			}
			all := res.Errors.ToAggregate()
			msg := ""
			if all != nil {
				msg = all.Error()
			}
			if len(tc.errs) == 0 && msg != "" {
				t.Fatalf("unexpected errors: %s", msg)
			}
			for _, want := range tc.errs {
				if !strings.Contains(msg, want) {
					t.Errorf("errors %q do not contain %q", msg, want)
				}
			}
			if strings.Join(res.Unknown, ",") != strings.Join(tc.unknown, ",") {
				t.Errorf("unknown = %v, want %v", res.Unknown, tc.unknown)
			}
		})
	}
}

func gvk(g, v, k string) schema.GroupVersionKind {
	return schema.GroupVersionKind{Group: g, Version: v, Kind: k}
}
