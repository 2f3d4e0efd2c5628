package conversion

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
)

func review(t *testing.T, srv *httptest.Server, desired string, objs ...string) *apiextensionsv1.ConversionReview {
	t.Helper()
	req := apiextensionsv1.ConversionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "apiextensions.k8s.io/v1", Kind: "ConversionReview"},
		Request:  &apiextensionsv1.ConversionRequest{UID: "1234", DesiredAPIVersion: desired},
	}
	for _, o := range objs {
		req.Request.Objects = append(req.Request.Objects, runtime.RawExtension{Raw: []byte(o)})
	}
	b, _ := json.Marshal(req)
	resp, err := http.Post(srv.URL, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	var out apiextensionsv1.ConversionReview
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	if out.Response == nil || out.Response.UID != "1234" {
		t.Fatalf("bad response %+v", out)
	}
	return &out
}

func TestHandler(t *testing.T) {
	srv := httptest.NewServer(Handler{})
	defer srv.Close()

	out := review(t, srv, "access.smi-spec.io/v1alpha3",
		`{"apiVersion":"access.smi-spec.io/v1alpha1","kind":"TrafficTarget","metadata":{"name":"a","namespace":"ns"},
		  "destination":{"kind":"ServiceAccount","name":"api","port":8080},
		  "sources":[{"kind":"ServiceAccount","name":"web","namespace":"ns"}],
		  "specs":[{"kind":"HTTPRouteGroup","name":"routes"}]}`)
	if out.Response.Result.Status != metav1.StatusSuccess || len(out.Response.ConvertedObjects) != 1 {
		t.Fatalf("conversion failed: %+v", out.Response.Result)
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(out.Response.ConvertedObjects[0].Raw); err != nil {
		t.Fatal(err)
	}
	if u.GetAPIVersion() != "access.smi-spec.io/v1alpha3" {
		t.Fatalf("apiVersion %s", u.GetAPIVersion())
	}
	if p, _, _ := unstructured.NestedInt64(u.Object, "spec", "destination", "port"); p != 8080 {
		t.Fatalf("destination.port lost: %v", u.Object)
	}
	if rules, _, _ := unstructured.NestedSlice(u.Object, "spec", "rules"); len(rules) != 1 {
		t.Fatalf("specs not moved to spec.rules: %v", u.Object)
	}

	bad := review(t, srv, "split.smi-spec.io/v1alpha4",
		`{"apiVersion":"split.smi-spec.io/v1alpha1","kind":"TrafficSplit","metadata":{"name":"q","namespace":"ns"},"spec":{"service":"w","backends":[{"service":"a","weight":"lots"}]}}`)
	if bad.Response.Result.Status != metav1.StatusFailure || !strings.Contains(bad.Response.Result.Message, "TrafficSplit ns/q") || !strings.Contains(bad.Response.Result.Message, "spec.backends[0].weight") {
		t.Fatalf("want a failure naming the object and field, got %+v", bad.Response.Result)
	}

	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET: status %d", resp.StatusCode)
	}
	resp, err = http.Post(srv.URL, "application/json", strings.NewReader("{"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("garbage: status %d", resp.StatusCode)
	}
}
