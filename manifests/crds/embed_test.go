package crds

import (
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
)

func TestLoad(t *testing.T) {
	crds, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"trafficsplits.split.smi-spec.io":   {"v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4"},
		"traffictargets.access.smi-spec.io": {"v1alpha1", "v1alpha2", "v1alpha3"},
		"httproutegroups.specs.smi-spec.io": {"v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4"},
		"tcproutes.specs.smi-spec.io":       {"v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4"},
		"udproutes.specs.smi-spec.io":       {"v1alpha4"},
		"meshplugins.trellis.io":            {"v1alpha1"},
	}
	if len(crds) != len(want) {
		t.Fatalf("got %d CRDs, want %d", len(crds), len(want))
	}
	for _, c := range crds {
		vs, ok := want[c.Name]
		if !ok {
			t.Errorf("unexpected CRD %s", c.Name)
			continue
		}
		if len(c.Spec.Versions) != len(vs) {
			t.Errorf("%s: %d versions, want %d", c.Name, len(c.Spec.Versions), len(vs))
			continue
		}
		for i, v := range c.Spec.Versions {
			if v.Name != vs[i] || !v.Served {
				t.Errorf("%s: version %d = %s served=%v, want %s served", c.Name, i, v.Name, v.Served, vs[i])
			}
			if v.Storage != (i == len(vs)-1) {
				t.Errorf("%s: %s storage=%v; the newest version must be the only storage version", c.Name, v.Name, v.Storage)
			}
			if v.Schema == nil || v.Schema.OpenAPIV3Schema == nil {
				t.Errorf("%s %s: no schema", c.Name, v.Name)
			}
		}
	}
	SetConversion(crds, apiextensionsv1.WebhookClientConfig{URL: ptr("https://127.0.0.1:1/convert")})
	for _, c := range crds {
		if c.Spec.Conversion.Strategy == apiextensionsv1.WebhookConverter && *c.Spec.Conversion.Webhook.ClientConfig.URL != "https://127.0.0.1:1/convert" {
			t.Errorf("%s: SetConversion did not apply", c.Name)
		}
	}
}

func ptr[T any](v T) *T { return &v }
