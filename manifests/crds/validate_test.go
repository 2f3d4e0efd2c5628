package crds

import (
	"context"
	"testing"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/install"
	apiextensionsvalidation "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/validation"
	"k8s.io/apimachinery/pkg/runtime"
)

// TestValidAsTheAPIServerChecksThem runs the apiserver's own CRD validation
// (structural schema rules, CEL compilation and cost estimation) over every
// shipped CRD, so a broken rule fails here and not only on a cluster.
func TestValidAsTheAPIServerChecksThem(t *testing.T) {
	scheme := runtime.NewScheme()
	install.Install(scheme)
	list, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	for _, v1crd := range list {
		scheme.Default(v1crd)
		internal := &apiextensions.CustomResourceDefinition{}
		if err := scheme.Convert(v1crd, internal, nil); err != nil {
			t.Fatalf("%s: %v", v1crd.Name, err)
		}
		if errs := apiextensionsvalidation.ValidateCustomResourceDefinition(context.Background(), internal); len(errs) > 0 {
			t.Errorf("%s: %v", v1crd.Name, errs.ToAggregate())
		}
	}
}
