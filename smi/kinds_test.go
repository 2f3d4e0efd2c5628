package smi

import (
	"errors"
	"strings"
	"testing"

	splitv1alpha2 "github.com/servicemeshinterface/smi-sdk-go/pkg/apis/split/v1alpha2"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// discoveryStub answers from a table: group/version -> resource names.
type discoveryStub struct {
	served map[string][]string
	fail   error
}

var _ DiscoveryClient = (*discoveryStub)(nil)

func (d *discoveryStub) ServerGroups() (*metav1.APIGroupList, error) {
	if d.fail != nil {
		return nil, d.fail
	}
	groups := map[string]*metav1.APIGroup{}
	var order []string
	for gv := range d.served {
		g, _, _ := strings.Cut(gv, "/")
		if groups[g] == nil {
			groups[g] = &metav1.APIGroup{Name: g}
			order = append(order, g)
		}
		groups[g].Versions = append(groups[g].Versions, metav1.GroupVersionForDiscovery{GroupVersion: gv, Version: strings.SplitN(gv, "/", 2)[1]})
	}
	out := &metav1.APIGroupList{}
	for _, g := range order {
		out.Groups = append(out.Groups, *groups[g])
	}
	return out, nil
}

func (d *discoveryStub) ServerResourcesForGroupVersion(gv string) (*metav1.APIResourceList, error) {
	rs, ok := d.served[gv]
	if !ok {
		return nil, apierrors.NewNotFound(schema.GroupResource{}, gv)
	}
	out := &metav1.APIResourceList{GroupVersion: gv}
	for _, r := range rs {
		out.APIResources = append(out.APIResources, metav1.APIResource{Name: r})
	}
	return out, nil
}

func TestDiscover(t *testing.T) {
	tests := []struct {
		name    string
		served  map[string][]string
		want    string
		unknown []string
	}{
		{"nothing", map[string][]string{"apps/v1": {"deployments"}}, "TrafficSplit=- TrafficTarget=- HTTPRouteGroup=- TCPRoute=- UDPRoute=-", nil},
		{"traefik mesh leftovers", map[string][]string{
			"split.smi-spec.io/v1alpha2":  {"trafficsplits"},
			"split.smi-spec.io/v1alpha3":  {"trafficsplits", "trafficsplits/status"},
			"access.smi-spec.io/v1alpha2": {"traffictargets"},
			"specs.smi-spec.io/v1alpha3":  {"httproutegroups", "tcproutes"},
		}, "TrafficSplit=v1alpha3 TrafficTarget=v1alpha2 HTTPRouteGroup=v1alpha3 TCPRoute=v1alpha3 UDPRoute=-", nil},
		{"ours plus a future version", map[string][]string{
			"split.smi-spec.io/v1alpha1": {"trafficsplits"}, "split.smi-spec.io/v1alpha4": {"trafficsplits"},
			"split.smi-spec.io/v1beta1":  {"trafficsplits"},
			"specs.smi-spec.io/v1alpha4": {"httproutegroups", "tcproutes", "udproutes"},
		}, "TrafficSplit=v1alpha4 TrafficTarget=- HTTPRouteGroup=v1alpha4 TCPRoute=v1alpha4 UDPRoute=v1alpha4", []string{"split.smi-spec.io/v1beta1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Discover(&discoveryStub{served: tc.served})
			if err != nil {
				t.Fatal(err)
			}
			if s.String() != tc.want {
				t.Errorf("Discover = %s\nwant       %s", s, tc.want)
			}
			if strings.Join(s.Unknown, ",") != strings.Join(tc.unknown, ",") {
				t.Errorf("Unknown = %v, want %v", s.Unknown, tc.unknown)
			}
		})
	}
	s, _ := Discover(&discoveryStub{served: map[string][]string{"split.smi-spec.io/v1alpha1": {"trafficsplits"}, "split.smi-spec.io/v1alpha3": {"trafficsplits"}}})
	if got := strings.Join(s.Versions[KindTrafficSplit], ","); got != "v1alpha1,v1alpha3" {
		t.Errorf("versions = %s", got)
	}
	if gvr, ok := s.GVR(KindTrafficSplit); !ok || gvr.String() != "split.smi-spec.io/v1alpha3, Resource=trafficsplits" {
		t.Errorf("GVR = %v %v", gvr, ok)
	}
	if _, err := Discover(&discoveryStub{fail: errors.New("connection refused")}); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("unreachable apiserver: err = %v", err)
	}
}

func TestLookupGVK(t *testing.T) {
	tests := []struct{ apiVersion, kind, wantErr string }{
		{"split.smi-spec.io/v1alpha3", "TrafficSplit", ""},
		{"split.smi-spec.io/v1alpha5", "TrafficSplit", "Trellis reads TrafficSplit in split.smi-spec.io/v1alpha1, split.smi-spec.io/v1alpha2"},
		{"specs.smi-spec.io/v1alpha4", "TrafficSplit", "TrafficSplit belongs to API group split.smi-spec.io"},
		{"specs.smi-spec.io/v1alpha4", "GRPCRoute", `kind "GRPCRoute" is not an SMI kind`},
		{"a/b/c", "TrafficSplit", `apiVersion "a/b/c"`},
	}
	for _, tc := range tests {
		_, _, err := LookupGVK(tc.apiVersion, tc.kind)
		if (err == nil) != (tc.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("LookupGVK(%s, %s) = %v, want %q", tc.apiVersion, tc.kind, err, tc.wantErr)
		}
	}
}

// TestDecodeTyped decodes an smi-sdk-go typed object as a generated
// informer hands it over (empty TypeMeta).
func TestDecodeTyped(t *testing.T) {
	ts := &splitv1alpha2.TrafficSplit{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"},
		Spec:       splitv1alpha2.TrafficSplitSpec{Service: "web", Backends: []splitv1alpha2.TrafficSplitBackend{{Service: "web-v2", Weight: 3}}},
	}
	o, ps := DecodeTyped(ts)
	if HasErrors(ps) {
		t.Fatal(ps)
	}
	got, ok := o.(*TrafficSplit)
	if !ok || got.APIVersion != "split.smi-spec.io/v1alpha2" || got.Service != "web" || len(got.Backends) != 1 || got.Backends[0].Weight != 3 {
		t.Fatalf("DecodeTyped = %+v", o)
	}
	if _, ps := DecodeTyped(&metav1.Status{}); !HasErrors(ps) {
		t.Fatal("a non-SMI type decoded without error")
	}
}
