package topology

import (
	"errors"
	"fmt"
	"io"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/trellis-mesh/trellis/smi"
)

// SnapshotFromYAML reads a stream of YAML or JSON documents (Services,
// EndpointSlices, Pods, Namespaces, Nodes and SMI objects; `kind: List` is
// unwrapped) into a Snapshot, for tests and offline tools. Other kinds are
// an error naming the document.
func SnapshotFromYAML(r io.Reader) (*Snapshot, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(r, 4096)
	snap := &Snapshot{}
	for i := 0; ; i++ {
		var obj map[string]any
		if err := dec.Decode(&obj); err != nil {
			if errors.Is(err, io.EOF) {
				return snap, nil
			}
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if obj == nil {
			continue
		}
		u := &unstructured.Unstructured{Object: obj}
		if u.GetKind() == "List" {
			items, _, _ := unstructured.NestedSlice(obj, "items")
			for j, it := range items {
				m, ok := it.(map[string]any)
				if !ok {
					return nil, fmt.Errorf("document %d: items[%d] is not an object", i, j)
				}
				if err := snap.add(&unstructured.Unstructured{Object: m}); err != nil {
					return nil, fmt.Errorf("document %d items[%d]: %w", i, j, err)
				}
			}
			continue
		}
		if err := snap.add(u); err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
	}
}

func (s *Snapshot) add(u *unstructured.Unstructured) error {
	into := func(v any) error {
		return runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, v, true)
	}
	name := u.GetKind() + " " + u.GetNamespace() + "/" + u.GetName()
	switch gv, k := u.GetAPIVersion(), u.GetKind(); {
	case gv == "v1" && k == "Service":
		o := &corev1.Service{}
		if err := into(o); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		s.Services = append(s.Services, o)
	case gv == "v1" && k == "Pod":
		o := &corev1.Pod{}
		if err := into(o); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		s.Pods = append(s.Pods, o)
	case gv == "v1" && k == "Namespace":
		o := &corev1.Namespace{}
		if err := into(o); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		s.Namespaces = append(s.Namespaces, o)
	case gv == "v1" && k == "Node":
		o := &corev1.Node{}
		if err := into(o); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		s.Nodes = append(s.Nodes, o)
	case gv == "discovery.k8s.io/v1" && k == "EndpointSlice":
		o := &discoveryv1.EndpointSlice{}
		if err := into(o); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		s.EndpointSlices = append(s.EndpointSlices, o)
	case gv == "v1" && k == "ConfigMap":
		o := &corev1.ConfigMap{}
		if err := into(o); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if o.Labels[PluginSourceLabel] == "true" {
			s.PluginSources = append(s.PluginSources, o)
		}
	case gv == PluginGroup+"/"+PluginVersion && k == string(PluginKind):
		s.Plugins = append(s.Plugins, u)
	case strings.HasSuffix(strings.SplitN(gv, "/", 2)[0], ".smi-spec.io"):
		if _, _, err := smi.LookupGVK(gv, k); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		s.SMI = append(s.SMI, u)
	default:
		return fmt.Errorf("%s (apiVersion %q): not an input of the mesh topology", name, gv)
	}
	return nil
}
