package apiservertest_test

// Tests against a real etcd + kube-apiserver (e2e/testenv): the shipped CRDs
// install, their CEL rules accept the valid and reject the invalid examples
// with our messages, and discovery picks the newest served version, also on
// a cluster that has only older SMI CRDs (as Traefik Mesh or OSM leave).

import (
	"context"
	"encoding/pem"
	"errors"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	corev1 "k8s.io/api/core/v1"

	"github.com/trellis-mesh/trellis/e2e/testenv"
	"github.com/trellis-mesh/trellis/manifests/crds"
	"github.com/trellis-mesh/trellis/smi"
	"github.com/trellis-mesh/trellis/smi/conversion"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// TestAPIServer runs in order, on one shared control plane: first a cluster
// with only old SMI CRDs, then (after removing them) the CRDs Trellis ships.
func TestAPIServer(t *testing.T) {
	cfg := testenv.ControlPlane(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	ext := apiextensionsclient.NewForConfigOrDie(cfg)
	dyn := dynamic.NewForConfigOrDie(cfg)
	disco := discovery.NewDiscoveryClientForConfigOrDie(cfg)
	kube := kubernetes.NewForConfigOrDie(cfg)
	for _, ns := range []string{"shop", "legacy", "conv"} {
		_, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}

	t.Run("only old CRD versions", func(t *testing.T) {
		old := oldCRDs(t)
		installCRDs(ctx, t, ext, old)
		served := waitServed(ctx, t, disco, map[smi.Kind]string{
			smi.KindTrafficSplit: "v1alpha2", smi.KindTrafficTarget: "v1alpha2", smi.KindHTTPRouteGroup: "v1alpha3", smi.KindTCPRoute: "v1alpha3",
		})
		if _, ok := served.Newest(smi.KindUDPRoute); ok {
			t.Errorf("UDPRoute served on a cluster without its CRD: %v", served)
		}
		// Objects written in the old versions are read through the watched
		// (newest served) version and decide traffic.
		create(ctx, t, dyn, `
apiVersion: v1
kind: Service
metadata: {name: web, namespace: legacy}
spec: {ports: [{port: 80}]}`)
		create(ctx, t, dyn, `
apiVersion: v1
kind: Service
metadata: {name: web-v2, namespace: legacy}
spec: {ports: [{port: 80, targetPort: 8080}]}`)
		create(ctx, t, dyn, `
apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata: {name: web, namespace: legacy}
spec: {service: web, backends: [{service: web-v2, weight: 1}]}`)
		create(ctx, t, dyn, `
apiVersion: access.smi-spec.io/v1alpha2
kind: TrafficTarget
metadata: {name: web, namespace: legacy}
spec:
  destination: {kind: ServiceAccount, name: web, namespace: legacy, port: 8080}
  sources: [{kind: ServiceAccount, name: client, namespace: legacy}]
  rules: [{kind: HTTPRouteGroup, name: routes}]`)
		create(ctx, t, dyn, `
apiVersion: specs.smi-spec.io/v1alpha3
kind: HTTPRouteGroup
metadata: {name: routes, namespace: legacy}
spec: {matches: [{name: api, pathRegex: /api, methods: [GET]}]}`)
		objs := listAll(ctx, t, dyn, served, "legacy")
		svcs, err := kube.CoreV1().Services("legacy").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var sp []*corev1.Service
		for i := range svcs.Items {
			sp = append(sp, &svcs.Items[i])
		}
		pol := smi.NewPolicy(objs, sp)
		if ps := pol.Problems(); len(ps) > 0 {
			t.Errorf("unexpected policy problems: %v", ps)
		}
		d := pol.Split("legacy", "web", smi.Request{Protocol: smi.HTTP, Port: 80, Method: "GET", Path: "/"})
		if d.ToRoot || len(d.Backends) != 1 || d.Backends[0].Service != "web-v2" || d.Backends[0].TargetPort.IntValue() != 8080 {
			t.Errorf("Split = %+v, want all traffic to web-v2 targetPort 8080", d)
		}
		src, dst := smi.Identity{Namespace: "legacy", Name: "client"}, smi.Identity{Namespace: "legacy", Name: "web"}
		if ok, why := pol.Allowed(src, dst, smi.Request{Protocol: smi.HTTP, Port: 8080, Method: "GET", Path: "/api/x"}); !ok {
			t.Errorf("GET /api/x on 8080 denied: %s", why)
		}
		if ok, why := pol.Allowed(src, dst, smi.Request{Protocol: smi.HTTP, Port: 9090, Method: "GET", Path: "/api/x"}); ok {
			t.Errorf("v1alpha2 destination.port not honoured: %s", why)
		}
		deleteCRDs(ctx, t, ext, old)
	})

	t.Run("shipped CRDs", func(t *testing.T) {
		shipped, err := crds.Load()
		if err != nil {
			t.Fatal(err)
		}
		// The conversion webhook runs in this test process; the apiserver
		// calls it over TLS on loopback.
		hook := httptest.NewTLSServer(conversion.Handler{})
		defer hook.Close()
		url := hook.URL + crds.ConversionPath
		crds.SetConversion(shipped, apiextensionsv1.WebhookClientConfig{
			URL:      &url,
			CABundle: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: hook.Certificate().Raw}),
		})
		installCRDs(ctx, t, ext, shipped)
		want := map[smi.Kind]string{}
		for _, ki := range smi.Kinds {
			want[ki.Kind] = ki.Newest()
		}
		served := waitServed(ctx, t, disco, want)
		for _, ki := range smi.Kinds {
			if got := served.Versions[ki.Kind]; strings.Join(got, ",") != strings.Join(ki.Versions, ",") {
				t.Errorf("%s: served %v, want every version %v", ki.Kind, got, ki.Versions)
			}
		}
		t.Run("CEL", func(t *testing.T) { testCEL(ctx, t, dyn) })
		t.Run("conversion webhook", func(t *testing.T) { testConversion(ctx, t, dyn, served) })
		t.Run("watched version decodes", func(t *testing.T) {
			objs := listAll(ctx, t, dyn, served, "shop")
			if len(objs) == 0 {
				t.Fatal("no objects listed from the shipped CRDs")
			}
		})
	})
}

// celCase is one object sent to the apiserver in the storage version (no
// conversion involved) and what the apiserver must say.
type celCase struct {
	name    string
	obj     string
	wantErr string // substring of the apiserver's error; "" = accepted
}

func testCEL(ctx context.Context, t *testing.T, dyn dynamic.Interface) {
	cases := []celCase{
		{"valid split", `
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {name: valid, namespace: shop}
spec:
  service: web
  matches: [{kind: HTTPRouteGroup, name: beta}]
  backends: [{service: web-v1, weight: 90}, {service: web-v2, weight: 0}]`, ""},
		{"negative weight", `
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {name: negative, namespace: shop}
spec: {service: web, backends: [{service: web-v1, weight: -1}]}`, "must not be negative"},
		{"no backend", `
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {name: empty, namespace: shop}
spec: {service: web, backends: []}`, "must list at least one backend"},
		{"split matches a TCPRoute", `
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {name: tcpmatch, namespace: shop}
spec: {service: web, matches: [{kind: TCPRoute, name: x}], backends: [{service: a, weight: 1}]}`, "must be HTTPRouteGroup"},
		{"split without service", `
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {name: noservice, namespace: shop}
spec: {backends: [{service: a, weight: 1}]}`, "spec.service: Required value"},
		{"valid target", `
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: valid, namespace: shop}
spec:
  destination: {kind: ServiceAccount, name: api, namespace: shop}
  sources: [{kind: ServiceAccount, name: web, namespace: shop}]
  rules: [{kind: HTTPRouteGroup, name: routes, matches: [read]}, {kind: TCPRoute, name: db}]`, ""},
		{"target without sources", `
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: nosources, namespace: shop}
spec:
  destination: {kind: ServiceAccount, name: api}
  rules: [{kind: HTTPRouteGroup, name: routes}]`, "spec.sources: Required value"},
		{"target with empty rules", `
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: norules, namespace: shop}
spec:
  destination: {kind: ServiceAccount, name: api}
  sources: [{kind: ServiceAccount, name: web, namespace: shop}]
  rules: []`, "must list at least one rule"},
		{"source without namespace", `
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: nons, namespace: shop}
spec:
  destination: {kind: ServiceAccount, name: api}
  sources: [{kind: ServiceAccount, name: web}]
  rules: [{kind: HTTPRouteGroup, name: routes}]`, "is required for sources"},
		{"unknown rule kind", `
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: grpc, namespace: shop}
spec:
  destination: {kind: ServiceAccount, name: api}
  sources: [{kind: ServiceAccount, name: web, namespace: shop}]
  rules: [{kind: GRPCRoute, name: routes}]`, "must be HTTPRouteGroup, TCPRoute or UDPRoute"},
		{"destination port out of range", `
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: port, namespace: shop}
spec:
  destination: {kind: ServiceAccount, name: api, port: 70000}
  sources: [{kind: ServiceAccount, name: web, namespace: shop}]
  rules: [{kind: TCPRoute, name: db}]`, "must be between 1 and 65535"},
		{"valid route group", `
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: valid, namespace: shop}
spec:
  matches:
  - {name: read, pathRegex: /api, methods: [GET, HEAD], headers: [{user-agent: ".*Android.*"}]}
  - {name: all, methods: ["*"]}`, ""},
		{"lower-case method", `
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: lower, namespace: shop}
spec: {matches: [{name: read, methods: [get]}]}`, "upper-case HTTP method"},
		{"two headers in one item", `
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: twoheaders, namespace: shop}
spec: {matches: [{name: read, headers: [{a: "1", b: "2"}]}]}`, "must be a single `header-name: regex` pair"},
		{"duplicate match names", `
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: dup, namespace: shop}
spec: {matches: [{name: a}, {name: a}]}`, "must have unique names"},
		{"spec example with top-level matches", `
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: toplevel, namespace: shop}
matches:
- name: firefox-users
  headers:
  - user-agent: ".*Firefox.*"`, `unknown field "matches"`},
		{"valid tcp route", `
apiVersion: specs.smi-spec.io/v1alpha4
kind: TCPRoute
metadata: {name: valid, namespace: shop}
spec: {matches: {name: db, ports: [3306, 6446]}}`, ""},
		{"tcp port zero", `
apiVersion: specs.smi-spec.io/v1alpha4
kind: TCPRoute
metadata: {name: zero, namespace: shop}
spec: {matches: {ports: [0]}}`, "must be between 1 and 65535"},
		{"udp port too large", `
apiVersion: specs.smi-spec.io/v1alpha4
kind: UDPRoute
metadata: {name: big, namespace: shop}
spec: {matches: {ports: [53, 65536]}}`, "must be between 1 and 65535"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := parse(t, tc.obj)
			_, err := dyn.Resource(gvr(u)).Namespace(u.GetNamespace()).Create(ctx, u, metav1.CreateOptions{FieldValidation: "Strict"})
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("valid object rejected: %v", err)
				}
				// The same object decodes without errors.
				if _, ps := smi.Decode(u); smi.HasErrors(ps) {
					t.Errorf("apiserver accepts it but Decode reports %v", ps)
				}
				return
			}
			if err == nil {
				t.Fatalf("invalid object accepted; want an error containing %q", tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %q does not contain %q", err, tc.wantErr)
			}
			// Decode (used for clusters with other CRDs) rejects it too.
			if _, ps := smi.Decode(u); !smi.HasErrors(ps) {
				t.Errorf("apiserver rejects it but Decode finds no error")
			}
		})
	}
}

// oldCRDs derives CRDs that serve one old version each, as another mesh
// would have left them.
func oldCRDs(t *testing.T) []*apiextensionsv1.CustomResourceDefinition {
	shipped, err := crds.Load()
	if err != nil {
		t.Fatal(err)
	}
	keep := map[string]string{
		"trafficsplits.split.smi-spec.io":   "v1alpha2",
		"traffictargets.access.smi-spec.io": "v1alpha2",
		"httproutegroups.specs.smi-spec.io": "v1alpha3",
		"tcproutes.specs.smi-spec.io":       "v1alpha3",
	}
	var out []*apiextensionsv1.CustomResourceDefinition
	for _, c := range shipped {
		v, ok := keep[c.Name]
		if !ok {
			continue
		}
		for _, ver := range c.Spec.Versions {
			if ver.Name == v {
				ver.Storage = true
				c.Spec.Versions = []apiextensionsv1.CustomResourceDefinitionVersion{ver}
			}
		}
		c.Spec.Conversion = &apiextensionsv1.CustomResourceConversion{Strategy: apiextensionsv1.NoneConverter}
		out = append(out, c)
	}
	return out
}

func installCRDs(ctx context.Context, t *testing.T, ext apiextensionsclient.Interface, list []*apiextensionsv1.CustomResourceDefinition) {
	t.Helper()
	for _, c := range list {
		if _, err := ext.ApiextensionsV1().CustomResourceDefinitions().Create(ctx, c, metav1.CreateOptions{FieldValidation: "Strict"}); err != nil {
			t.Fatalf("creating CRD %s: %v", c.Name, err)
		}
	}
	for _, c := range list {
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			got, err := ext.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, c.Name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			for _, cond := range got.Status.Conditions {
				if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
					return true, nil
				}
				if cond.Type == apiextensionsv1.NamesAccepted && cond.Status == apiextensionsv1.ConditionFalse {
					return false, errors.New(cond.Message)
				}
			}
			return false, nil
		})
		if err != nil {
			t.Fatalf("CRD %s not established: %v", c.Name, err)
		}
	}
}

func deleteCRDs(ctx context.Context, t *testing.T, ext apiextensionsclient.Interface, list []*apiextensionsv1.CustomResourceDefinition) {
	t.Helper()
	for _, c := range list {
		if err := ext.ApiextensionsV1().CustomResourceDefinitions().Delete(ctx, c.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatalf("deleting CRD %s: %v", c.Name, err)
		}
	}
	for _, c := range list {
		err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
			_, err := ext.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, c.Name, metav1.GetOptions{})
			return apierrors.IsNotFound(err), nil
		})
		if err != nil {
			t.Fatalf("CRD %s not deleted: %v", c.Name, err)
		}
	}
}

// waitServed polls discovery until it reports want (kind -> newest version).
func waitServed(ctx context.Context, t *testing.T, d discovery.DiscoveryInterface, want map[smi.Kind]string) smi.Served {
	t.Helper()
	var served smi.Served
	var lastErr error
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		served, lastErr = smi.Discover(d)
		if lastErr != nil {
			return false, nil //nolint:nilerr // keep polling; lastErr is reported on timeout
		}
		for k, v := range want {
			if got, _ := served.Newest(k); got != v {
				return false, nil
			}
		}
		for _, ki := range smi.Kinds {
			if _, ok := want[ki.Kind]; !ok {
				if _, served := served.Newest(ki.Kind); served {
					return false, nil
				}
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("discovery never reported %v: got %v (last error %v)", want, served, lastErr)
	}
	return served
}

func listAll(ctx context.Context, t *testing.T, dyn dynamic.Interface, served smi.Served, ns string) []smi.Object {
	t.Helper()
	var out []smi.Object
	for _, ki := range smi.Kinds {
		gvr, ok := served.GVR(ki.Kind)
		if !ok {
			continue
		}
		list, err := dyn.Resource(gvr).Namespace(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatalf("listing %s: %v", gvr, err)
		}
		for i := range list.Items {
			o, ps := smi.Decode(&list.Items[i])
			if smi.HasErrors(ps) {
				t.Errorf("decoding %s %s: %v", ki.Kind, list.Items[i].GetName(), ps)
			}
			if o != nil {
				out = append(out, o)
			}
		}
	}
	return out
}

func parse(t *testing.T, s string) *unstructured.Unstructured {
	t.Helper()
	var m map[string]any
	if err := yaml.Unmarshal([]byte(s), &m); err != nil {
		t.Fatal(err)
	}
	return &unstructured.Unstructured{Object: m}
}

func gvr(u *unstructured.Unstructured) schema.GroupVersionResource {
	gvk := u.GroupVersionKind()
	if gvk.Group == "" && gvk.Kind == "Service" {
		return schema.GroupVersionResource{Version: "v1", Resource: "services"}
	}
	ki, _ := smi.Info(smi.Kind(gvk.Kind))
	return ki.GVR(gvk.Version)
}

func create(ctx context.Context, t *testing.T, dyn dynamic.Interface, s string) {
	t.Helper()
	u := parse(t, s)
	if _, err := dyn.Resource(gvr(u)).Namespace(u.GetNamespace()).Create(ctx, u, metav1.CreateOptions{FieldValidation: "Strict"}); err != nil {
		t.Fatalf("creating %s %s: %v", u.GetKind(), u.GetName(), err)
	}
}

// testConversion writes objects in old versions, reads them through the
// watched (newest) version and decides with them, and reads a new object
// through an old version and back without losing what the old version
// cannot express.
func testConversion(ctx context.Context, t *testing.T, dyn dynamic.Interface, served smi.Served) {
	create(ctx, t, dyn, `
apiVersion: access.smi-spec.io/v1alpha1
kind: TrafficTarget
metadata: {name: old-target, namespace: conv}
destination: {kind: ServiceAccount, name: api, namespace: conv, port: 8080}
specs: [{kind: HTTPRouteGroup, name: old-routes, matches: [metrics]}]
sources: [{kind: ServiceAccount, name: prometheus, namespace: monitoring}]`)
	create(ctx, t, dyn, `
apiVersion: specs.smi-spec.io/v1alpha1
kind: HTTPRouteGroup
metadata: {name: old-routes, namespace: conv}
matches:
- {name: metrics, pathRegex: /metrics, methods: [GET]}`)
	create(ctx, t, dyn, `
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {name: ab, namespace: conv}
spec:
  service: web
  matches: [{kind: HTTPRouteGroup, name: old-routes}]
  backends: [{service: web-v2, weight: 1}]`)
	objs := listAll(ctx, t, dyn, served, "conv")
	pol := smi.NewPolicy(objs, nil)
	src, dst := smi.Identity{Namespace: "monitoring", Name: "prometheus"}, smi.Identity{Namespace: "conv", Name: "api"}
	if ok, why := pol.Allowed(src, dst, smi.Request{Protocol: smi.HTTP, Port: 8080, Method: "GET", Path: "/metrics"}); !ok {
		t.Errorf("v1alpha1 objects read through v1alpha3/v1alpha4 do not allow GET /metrics: %s", why)
	}
	if ok, _ := pol.Allowed(src, dst, smi.Request{Protocol: smi.HTTP, Port: 9090, Method: "GET", Path: "/metrics"}); ok {
		t.Error("v1alpha1 destination.port lost in conversion")
	}
	// Read the v1alpha4 split through v1alpha2 (no matches there), write it
	// back through v1alpha2, and check the matches survived.
	ki, _ := smi.Info(smi.KindTrafficSplit)
	old, err := dyn.Resource(ki.GVR("v1alpha2")).Namespace("conv").Get(ctx, "ab", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("reading v1alpha4 TrafficSplit as v1alpha2: %v", err)
	}
	if _, has, _ := unstructured.NestedFieldNoCopy(old.Object, "spec", "matches"); has {
		t.Errorf("v1alpha2 view has spec.matches")
	}
	if _, ok := old.GetAnnotations()[smi.ConversionAnnotation]; !ok {
		t.Errorf("v1alpha2 view lacks the %s annotation", smi.ConversionAnnotation)
	}
	_ = unstructured.SetNestedSlice(old.Object, []any{map[string]any{"service": "web-v2", "weight": int64(7)}}, "spec", "backends")
	if _, err := dyn.Resource(ki.GVR("v1alpha2")).Namespace("conv").Update(ctx, old, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("updating through v1alpha2: %v", err)
	}
	now, err := dyn.Resource(ki.GVR("v1alpha4")).Namespace("conv").Get(ctx, "ab", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ms, _, _ := unstructured.NestedSlice(now.Object, "spec", "matches")
	bs, _, _ := unstructured.NestedSlice(now.Object, "spec", "backends")
	if len(ms) != 1 || len(bs) != 1 || bs[0].(map[string]any)["weight"] != int64(7) {
		t.Errorf("after a v1alpha2 round trip: matches %v backends %v", ms, bs)
	}
	if _, ok := now.GetAnnotations()[smi.ConversionAnnotation]; ok {
		t.Errorf("v1alpha4 object still carries %s", smi.ConversionAnnotation)
	}
}
