package smi

import (
	"fmt"
	"sort"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Kind is an SMI object kind.
type Kind string

// The SMI kinds Trellis reads.
const (
	KindTrafficSplit   Kind = "TrafficSplit"
	KindTrafficTarget  Kind = "TrafficTarget"
	KindHTTPRouteGroup Kind = "HTTPRouteGroup"
	KindTCPRoute       Kind = "TCPRoute"
	KindUDPRoute       Kind = "UDPRoute"
)

// API groups.
const (
	GroupSplit  = "split.smi-spec.io"
	GroupAccess = "access.smi-spec.io"
	GroupSpecs  = "specs.smi-spec.io"
)

// KindInfo describes one SMI kind and the versions of it Trellis can read.
type KindInfo struct {
	Kind     Kind
	Group    string
	Resource string   // plural resource name
	Versions []string // oldest first
}

// GVR returns the resource for one version.
func (k KindInfo) GVR(version string) schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: k.Group, Version: version, Resource: k.Resource}
}

// Newest is the newest version Trellis knows for this kind.
func (k KindInfo) Newest() string { return k.Versions[len(k.Versions)-1] }

// Kinds lists every SMI kind Trellis reads, in a fixed order.
var Kinds = []KindInfo{
	{KindTrafficSplit, GroupSplit, "trafficsplits", []string{"v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4"}},
	{KindTrafficTarget, GroupAccess, "traffictargets", []string{"v1alpha1", "v1alpha2", "v1alpha3"}},
	{KindHTTPRouteGroup, GroupSpecs, "httproutegroups", []string{"v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4"}},
	{KindTCPRoute, GroupSpecs, "tcproutes", []string{"v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4"}},
	{KindUDPRoute, GroupSpecs, "udproutes", []string{"v1alpha4"}},
}

// Info returns the KindInfo for k.
func Info(k Kind) (KindInfo, bool) {
	for _, ki := range Kinds {
		if ki.Kind == k {
			return ki, true
		}
	}
	return KindInfo{}, false
}

// LookupGVK maps an apiVersion and kind to the SMI kind and version, or
// reports why Trellis cannot read it.
func LookupGVK(apiVersion, kind string) (KindInfo, string, error) {
	gv, err := schema.ParseGroupVersion(apiVersion)
	if err != nil {
		return KindInfo{}, "", fmt.Errorf("apiVersion %q: %w", apiVersion, err)
	}
	for _, ki := range Kinds {
		if string(ki.Kind) != kind {
			continue
		}
		if gv.Group != ki.Group {
			return ki, "", fmt.Errorf("apiVersion %q: %s belongs to API group %s", apiVersion, kind, ki.Group)
		}
		for _, v := range ki.Versions {
			if v == gv.Version {
				return ki, v, nil
			}
		}
		return ki, "", fmt.Errorf("apiVersion %q: Trellis reads %s in %s only", apiVersion, kind, strings.Join(prefixAll(ki.Group+"/", ki.Versions), ", "))
	}
	return KindInfo{}, "", fmt.Errorf("kind %q is not an SMI kind Trellis reads (TrafficSplit, TrafficTarget, HTTPRouteGroup, TCPRoute, UDPRoute)", kind)
}

func prefixAll(p string, ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = p + s
	}
	return out
}

// DiscoveryClient is the part of client-go's discovery.DiscoveryInterface
// that Discover uses.
type DiscoveryClient interface {
	ServerGroups() (*metav1.APIGroupList, error)
	ServerResourcesForGroupVersion(groupVersion string) (*metav1.APIResourceList, error)
}

// Served says which SMI versions the apiserver serves.
type Served struct {
	// Versions maps each kind to the versions served that Trellis can read,
	// oldest first. A kind that is not served is absent.
	Versions map[Kind][]string
	// Unknown lists served group/versions of SMI groups that Trellis does
	// not read (for example a future v1beta1), for diagnostics.
	Unknown []string
}

// Newest returns the version to watch for k: the newest served version
// Trellis can read.
func (s Served) Newest(k Kind) (string, bool) {
	vs := s.Versions[k]
	if len(vs) == 0 {
		return "", false
	}
	return vs[len(vs)-1], true
}

// GVR returns the resource to watch for k.
func (s Served) GVR(k Kind) (schema.GroupVersionResource, bool) {
	v, ok := s.Newest(k)
	if !ok {
		return schema.GroupVersionResource{}, false
	}
	ki, _ := Info(k)
	return ki.GVR(v), true
}

// String summarises the result, e.g.
// "TrafficSplit=v1alpha4 TrafficTarget=v1alpha3 HTTPRouteGroup=- ...".
func (s Served) String() string {
	var b strings.Builder
	for i, ki := range Kinds {
		if i > 0 {
			b.WriteByte(' ')
		}
		v, ok := s.Newest(ki.Kind)
		if !ok {
			v = "-"
		}
		fmt.Fprintf(&b, "%s=%s", ki.Kind, v)
	}
	return b.String()
}

// Discover asks the apiserver which SMI versions it serves. A group or
// version that is not served is not an error; an unreachable apiserver is.
func Discover(d DiscoveryClient) (Served, error) {
	out := Served{Versions: map[Kind][]string{}}
	groups, err := d.ServerGroups()
	if err != nil {
		return out, fmt.Errorf("discovering SMI API groups: %w", err)
	}
	smiGroups := map[string]bool{GroupSplit: true, GroupAccess: true, GroupSpecs: true}
	for _, g := range groups.Groups {
		if !smiGroups[g.Name] {
			continue
		}
		for _, gv := range g.Versions {
			rl, err := d.ServerResourcesForGroupVersion(gv.GroupVersion)
			if err != nil {
				if apierrors.IsNotFound(err) {
					continue // removed between the two calls
				}
				return out, fmt.Errorf("discovering %s: %w", gv.GroupVersion, err)
			}
			known := false
			for _, r := range rl.APIResources {
				if strings.Contains(r.Name, "/") { // subresource
					continue
				}
				for _, ki := range Kinds {
					if ki.Group != g.Name || ki.Resource != r.Name {
						continue
					}
					for _, v := range ki.Versions {
						if v == gv.Version {
							out.Versions[ki.Kind] = append(out.Versions[ki.Kind], v)
							known = true
						}
					}
				}
			}
			if !known {
				out.Unknown = append(out.Unknown, gv.GroupVersion)
			}
		}
	}
	for k, vs := range out.Versions {
		ki, _ := Info(k)
		sort.Slice(vs, func(i, j int) bool { return versionIndex(ki, vs[i]) < versionIndex(ki, vs[j]) })
		out.Versions[k] = dedupe(vs)
	}
	sort.Strings(out.Unknown)
	return out, nil
}

func versionIndex(ki KindInfo, v string) int {
	for i, x := range ki.Versions {
		if x == v {
			return i
		}
	}
	return -1
}

func dedupe(ss []string) []string {
	out := ss[:0]
	for i, s := range ss {
		if i == 0 || s != ss[i-1] {
			out = append(out, s)
		}
	}
	return out
}
