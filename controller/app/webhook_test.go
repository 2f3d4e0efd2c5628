package app_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/controller/app"
	"github.com/trellis-mesh/trellis/controller/settings"
	"github.com/trellis-mesh/trellis/controller/webhook"
	"github.com/trellis-mesh/trellis/e2e/testenv"
	"github.com/trellis-mesh/trellis/manifests/crds"
	"github.com/trellis-mesh/trellis/smi"
)

// startWebhookReplica runs a replica that leads without a lease and serves
// the conversion webhook on loopback; it returns the webhook's address.
func startWebhookReplica(t *testing.T, cfg *rest.Config, name string) (string, func()) {
	t.Helper()
	addr := make(chan net.Addr, 1)
	c, err := app.New(app.Options{
		Settings: settings.Default(), Kube: kubernetes.NewForConfigOrDie(cfg), Dynamic: dynamic.NewForConfigOrDie(cfg),
		Discovery: discovery.NewDiscoveryClientForConfigOrDie(cfg), APIExtensions: apiextensionsclient.NewForConfigOrDie(cfg),
		Identity: name, ServeAddr: "127.0.0.1:0", NoLeaderElection: true,
		WebhookAddr: "127.0.0.1:0", WebhookIPs: []net.IP{net.IPv4(127, 0, 0, 1)}, WebhookResync: 200 * time.Millisecond,
		OnWebhookListen: func(a net.Addr) { addr <- a },
		Log:             zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)).Named(name),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var a net.Addr
	select {
	case a = <-addr:
	case err := <-done:
		t.Fatalf("replica %s: %v", name, err)
	case <-time.After(30 * time.Second):
		t.Fatalf("replica %s did not listen", name)
	}
	return a.String(), func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("replica %s stopped with %v", name, err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("replica %s did not stop", name)
		}
	}
}

// TestConversionWebhook: the shipped CRDs convert through the controller's
// webhook. The apiserver here cannot reach a Service, so the CRDs point at
// the webhook by URL (on loopback) with no caBundle; the controller creates
// the certificate Secret, and the leader fills in the caBundle, after
// which an old-version TrafficSplit written through the apiserver reads
// back as v1alpha4 (and the other way round). A second replica serves a
// certificate from the same CA.
func TestConversionWebhook(t *testing.T) {
	cfg := testenv.ControlPlane(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	kube := kubernetes.NewForConfigOrDie(cfg)
	dyn := dynamic.NewForConfigOrDie(cfg)
	ext := apiextensionsclient.NewForConfigOrDie(cfg).ApiextensionsV1().CustomResourceDefinitions()
	for _, ns := range []string{"trellis-system", "conv-hook"} {
		if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	hook, stop := startWebhookReplica(t, cfg, "hook-a")
	defer stop()

	// Install (or re-point) the shipped CRDs at the webhook, without a CA.
	shipped, err := crds.Load()
	if err != nil {
		t.Fatal(err)
	}
	url := "https://" + hook + crds.ConversionPath
	crds.SetConversion(shipped, apiextensionsv1.WebhookClientConfig{URL: &url})
	for _, c := range shipped {
		got, err := ext.Get(ctx, c.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			_, err = ext.Create(ctx, c, metav1.CreateOptions{})
		case err == nil:
			got.Spec.Conversion = c.Spec.Conversion
			_, err = ext.Update(ctx, got, metav1.UpdateOptions{})
		}
		if err != nil {
			t.Fatalf("CRD %s: %v", c.Name, err)
		}
	}
	// Leave the CRDs converting nothing, as the other tests expect.
	t.Cleanup(func() {
		for _, c := range shipped {
			got, err := ext.Get(context.Background(), c.Name, metav1.GetOptions{})
			if err != nil {
				continue
			}
			got.Spec.Conversion = &apiextensionsv1.CustomResourceConversion{Strategy: apiextensionsv1.NoneConverter}
			if _, err := ext.Update(context.Background(), got, metav1.UpdateOptions{}); err != nil {
				t.Errorf("restoring CRD %s: %v", c.Name, err)
			}
		}
	})

	// The Secret appears, and the leader copies its CA into every CRD.
	var ca []byte
	poll(t, "webhook Secret and caBundle", time.Minute, func() string {
		sec, err := kube.CoreV1().Secrets("trellis-system").Get(ctx, "trellis-controller-webhook", metav1.GetOptions{})
		if err != nil {
			return err.Error()
		}
		ca = sec.Data[webhook.KeyCACert]
		for _, c := range shipped {
			if c.Spec.Conversion == nil || c.Spec.Conversion.Strategy != apiextensionsv1.WebhookConverter {
				continue
			}
			got, err := ext.Get(ctx, c.Name, metav1.GetOptions{})
			if err != nil {
				return err.Error()
			}
			if cc := got.Spec.Conversion.Webhook.ClientConfig; string(cc.CABundle) != string(ca) || cc.URL == nil || *cc.URL != url {
				return fmt.Sprintf("CRD %s clientConfig not patched yet (url %v, %d bytes of CA)", c.Name, cc.URL, len(cc.CABundle))
			}
		}
		return ""
	})

	ki, _ := smi.Info(smi.KindTrafficSplit)
	var old unstructured.Unstructured
	if err := yaml.Unmarshal([]byte(`
apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata: {name: canary, namespace: conv-hook}
spec:
  service: web
  backends: [{service: web-v1, weight: 90}, {service: web-v2, weight: 10}]`), &old.Object); err != nil {
		t.Fatal(err)
	}
	// The apiserver may still hold the CRDs' previous clientConfig for a
	// moment: retry the write until it converts.
	poll(t, "writing a v1alpha2 TrafficSplit", time.Minute, func() string {
		_, err := dyn.Resource(ki.GVR("v1alpha2")).Namespace("conv-hook").Create(ctx, old.DeepCopy(), metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return err.Error()
		}
		return ""
	})
	now, err := dyn.Resource(ki.GVR("v1alpha4")).Namespace("conv-hook").Get(ctx, "canary", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("reading the split as v1alpha4: %v", err)
	}
	if now.GetAPIVersion() != "split.smi-spec.io/v1alpha4" {
		t.Errorf("apiVersion %s", now.GetAPIVersion())
	}
	svc, _, _ := unstructured.NestedString(now.Object, "spec", "service")
	bs, _, _ := unstructured.NestedSlice(now.Object, "spec", "backends")
	if svc != "web" || len(bs) != 2 || bs[1].(map[string]any)["service"] != "web-v2" || bs[1].(map[string]any)["weight"] != int64(10) {
		t.Errorf("v1alpha4 view: service %q backends %v", svc, bs)
	}
	// And back: the stored object read through v1alpha2 goes through the
	// webhook too.
	back, err := dyn.Resource(ki.GVR("v1alpha2")).Namespace("conv-hook").Get(ctx, "canary", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("reading the split back as v1alpha2: %v", err)
	}
	if bs, _, _ := unstructured.NestedSlice(back.Object, "spec", "backends"); len(bs) != 2 {
		t.Errorf("v1alpha2 view backends %v", bs)
	}

	// A second replica reads the same Secret: its certificate chains to
	// the CA in the CRDs and names the Service.
	hook2, stop2 := startWebhookReplica(t, cfg, "hook-b")
	defer stop2()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		t.Fatal("Secret ca.crt holds no certificate")
	}
	poll(t, "second replica's certificate", 30*time.Second, func() string {
		conn, err := tls.Dial("tcp", hook2, &tls.Config{RootCAs: pool, ServerName: crds.ConversionService + "." + crds.ConversionNamespace + ".svc", MinVersion: tls.VersionTLS12})
		if err != nil {
			return err.Error()
		}
		conn.Close()
		return ""
	})
}
