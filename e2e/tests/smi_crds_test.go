package tests

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/kube"
	"github.com/trellis-mesh/trellis/manifests/crds"
)

// TestSMICRDsOnTheCluster: the SMI CRDs Trellis ships install on the local
// cluster, a valid TrafficSplit and HTTPRouteGroup are stored, and invalid
// ones are refused with the CEL rule's message.
func TestSMICRDsOnTheCluster(t *testing.T) {
	ctx := context.Background()
	ap := applier(t)
	applyFiles(t, ap, crds.FS, crds.Files()...)
	apply := func(doc string) error {
		objs, err := kube.Decode([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		return ap.Apply(ctx, objs)
	}
	valid := `
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {name: web, namespace: default}
spec:
  service: web
  backends:
    - {service: web-v1, weight: 90}
    - {service: web-v2, weight: 10}
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: api, namespace: default}
spec:
  matches:
    - {name: metrics, pathRegex: "/metrics", methods: [GET]}
`
	// The CRDs become servable a moment after they are created.
	eventually(t, 30*time.Second, "valid SMI objects are stored", func() error { return apply(valid) })
	for _, c := range []struct{ name, doc, want string }{
		{"negative weight", `
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {name: bad-weight, namespace: default}
spec:
  service: web
  backends:
    - {service: web-v1, weight: -1}
`, "must not be negative"},
		{"no backends", `
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {name: no-backends, namespace: default}
spec:
  service: web
  backends: []
`, "must list at least one backend"},
		{"lower-case method", `
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: bad-method, namespace: default}
spec:
  matches:
    - {name: m, methods: [get]}
`, "upper-case HTTP method"},
	} {
		err := apply(c.doc)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: apply error %v, want the CEL message %q", c.name, err, c.want)
		}
	}
}
