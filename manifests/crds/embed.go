package crds

import (
	"embed"
	"fmt"
	"io/fs"
	"sort"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"
)

// FS holds the CRD manifests, one CustomResourceDefinition per file.
//
//go:embed *.yaml
var FS embed.FS

// ConversionService is where the shipped multi-version CRDs send
// ConversionReviews (the Trellis controller serves it; see docs/smi.md).
const (
	ConversionNamespace = "trellis-system"
	ConversionService   = "trellis-controller"
	ConversionPath      = "/convert"
)

// Files lists the manifest file names in FS, sorted.
func Files() []string {
	names, err := fs.Glob(FS, "*.yaml")
	if err != nil { // only on a malformed pattern
		panic(err)
	}
	sort.Strings(names)
	return names
}

// Load parses every manifest in FS. The result is freshly allocated on each
// call, so callers may modify it (for example to point conversion at a test
// webhook).
func Load() ([]*apiextensionsv1.CustomResourceDefinition, error) {
	var out []*apiextensionsv1.CustomResourceDefinition
	for _, name := range Files() {
		b, err := FS.ReadFile(name)
		if err != nil {
			return nil, err
		}
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := yaml.UnmarshalStrict(b, crd); err != nil {
			return nil, fmt.Errorf("manifests/crds/%s: %w", name, err)
		}
		out = append(out, crd)
	}
	return out, nil
}

// SetConversion points every CRD that uses webhook conversion at cfg (for
// example a URL and CA bundle in tests, or the installer's CA bundle).
func SetConversion(crds []*apiextensionsv1.CustomResourceDefinition, cfg apiextensionsv1.WebhookClientConfig) {
	for _, c := range crds {
		if c.Spec.Conversion == nil || c.Spec.Conversion.Strategy != apiextensionsv1.WebhookConverter || c.Spec.Conversion.Webhook == nil {
			continue
		}
		cc := cfg
		c.Spec.Conversion.Webhook.ClientConfig = &cc
	}
}
