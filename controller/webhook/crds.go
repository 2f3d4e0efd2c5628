package webhook

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset/typed/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"github.com/trellis-mesh/trellis/manifests/crds"
	"github.com/trellis-mesh/trellis/smi/conversion"
)

// Handler serves conversion.Handler at crds.ConversionPath, and /healthz.
func Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("POST "+crds.ConversionPath, conversion.Handler{})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	return mux
}

// HTTPServer wraps Handler (serve it on Certs.Listener).
func HTTPServer() *http.Server {
	return &http.Server{Handler: Handler(), ReadHeaderTimeout: 10 * time.Second}
}

// SyncCABundle sets caBundle in the webhook clientConfig of every shipped
// SMI CRD that is installed and uses webhook conversion, leaving the rest
// of the clientConfig (service reference or URL) as the cluster has it.
// CRDs that are missing or use no webhook are left alone. It returns the
// names of the CRDs it updated.
func SyncCABundle(ctx context.Context, client apiextensionsclient.CustomResourceDefinitionInterface, ca []byte) ([]string, error) {
	shipped, err := crds.Load()
	if err != nil {
		return nil, fmt.Errorf("loading the shipped CRDs: %w", err)
	}
	var updated []string
	for _, want := range shipped {
		name := want.Name
		if c := want.Spec.Conversion; c == nil || c.Strategy != apiextensionsv1.WebhookConverter {
			continue // converted by the apiserver (e.g. MeshPlugin): no caBundle, and RBAC grants none
		}
		err := retry.RetryOnConflict(retry.DefaultBackoff, func() error {
			got, err := client.Get(ctx, name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			if err != nil {
				return err
			}
			conv := got.Spec.Conversion
			if conv == nil || conv.Strategy != apiextensionsv1.WebhookConverter || conv.Webhook == nil || conv.Webhook.ClientConfig == nil ||
				bytes.Equal(conv.Webhook.ClientConfig.CABundle, ca) {
				return nil
			}
			cc := *conv.Webhook.ClientConfig
			cc.CABundle = ca
			cp := got.DeepCopy()
			crds.SetConversion([]*apiextensionsv1.CustomResourceDefinition{cp}, cc)
			if _, err := client.Update(ctx, cp, metav1.UpdateOptions{}); err != nil {
				return err
			}
			updated = append(updated, name)
			return nil
		})
		if err != nil {
			return updated, fmt.Errorf("CRD %s: setting the conversion webhook caBundle: %w", name, err)
		}
	}
	return updated, nil
}
