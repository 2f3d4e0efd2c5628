package bench

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/trellis-mesh/trellis/controller/topology"
)

// Shape sizes a synthetic mesh.
type Shape struct {
	Services       int // meshed Services
	Nodes          int
	PodsPerService int
	// PerNamespace Services share a namespace (and ServiceAccounts).
	PerNamespace int
}

// Mesh is a generated snapshot plus handles to mutate it.
type Mesh struct {
	Snap   *topology.Snapshot
	splits []int // indexes into Snap.SMI of TrafficSplits
}

func ns(i, per int) string { return fmt.Sprintf("team-%03d", i/per) }

// Generate builds a snapshot shaped like a busy cluster after the
// informers' transforms: Services with two ports, EndpointSlices, slim
// pods spread over nodes, a TrafficSplit for every tenth Service and a
// TrafficTarget + HTTPRouteGroup per namespace (ACL rules on every node).
func Generate(s Shape) *Mesh {
	if s.PerNamespace == 0 {
		s.PerNamespace = 50
	}
	m := &Mesh{Snap: &topology.Snapshot{}}
	snap := m.Snap
	for n := 0; n < s.Nodes; n++ {
		snap.Nodes = append(snap.Nodes, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("node-%03d", n),
			Labels: map[string]string{topology.ZoneLabel: fmt.Sprintf("zone-%d", n%3)}}})
	}
	seenNS := map[string]bool{}
	ip := 0
	for i := 0; i < s.Services; i++ {
		namespace := ns(i, s.PerNamespace)
		if !seenNS[namespace] {
			seenNS[namespace] = true
			snap.Namespaces = append(snap.Namespaces, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace, Labels: map[string]string{"trellis.io/mesh": "enabled"}}})
			snap.SMI = append(snap.SMI, routeGroup(namespace), target(namespace))
		}
		name := fmt.Sprintf("svc-%05d", i)
		sa := fmt.Sprintf("sa-%02d", i%10)
		snap.Services = append(snap.Services, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, UID: "uid-" + "name",
				Annotations: map[string]string{"trellis.io/retry-attempts": "2"}},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": name}, Ports: []corev1.ServicePort{
				{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP},
				{Name: "admin", Port: 9090, TargetPort: intstr.FromInt32(9090), Protocol: corev1.ProtocolTCP},
			}},
		})
		sl := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: name + "-abcde", Namespace: namespace, Labels: map[string]string{discoveryv1.LabelServiceName: name}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(int32(8080))}, {Name: ptr("admin"), Port: ptr(int32(9090))}},
		}
		for k := 0; k < s.PodsPerService; k++ {
			ip++
			addr := fmt.Sprintf("10.%d.%d.%d", 1+ip/65536, (ip/256)%256, ip%256)
			node := fmt.Sprintf("node-%03d", (i+k)%s.Nodes)
			pod := fmt.Sprintf("%s-%d", name, k)
			snap.Pods = append(snap.Pods, &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: pod, Namespace: namespace, Labels: map[string]string{"app": name}},
				Spec:       corev1.PodSpec{NodeName: node, ServiceAccountName: sa},
				Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: addr, PodIPs: []corev1.PodIP{{IP: addr}}},
			})
			sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{Addresses: []string{addr}, NodeName: ptr(node),
				Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)},
				TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: namespace, Name: pod}})
		}
		snap.EndpointSlices = append(snap.EndpointSlices, sl)
		if i%10 == 0 && i+2 < s.Services && ns(i+2, s.PerNamespace) == namespace {
			m.splits = append(m.splits, len(snap.SMI))
			snap.SMI = append(snap.SMI, split(namespace, name, fmt.Sprintf("svc-%05d", i+1), fmt.Sprintf("svc-%05d", i+2), 50))
		}
	}
	return m
}

// Splits is the number of TrafficSplits.
func (m *Mesh) Splits() int { return len(m.splits) }

// SetSplit changes the weights of TrafficSplit k (a new object, as an
// informer would deliver it).
func (m *Mesh) SetSplit(k int, w int64) {
	i := m.splits[k%len(m.splits)]
	old := m.Snap.SMI[i]
	spec := old.Object["spec"].(map[string]any)
	backends := spec["backends"].([]any)
	m.Snap.SMI[i] = split(old.GetNamespace(), spec["service"].(string),
		backends[0].(map[string]any)["service"].(string), backends[1].(map[string]any)["service"].(string), w)
}

func split(namespace, root, a, b string, w int64) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "split.smi-spec.io/v1alpha4", "kind": "TrafficSplit",
		"metadata": map[string]any{"name": root + "-split", "namespace": namespace},
		"spec": map[string]any{"service": root, "backends": []any{
			map[string]any{"service": a, "weight": w}, map[string]any{"service": b, "weight": 100 - w}}},
	}}
}

func routeGroup(namespace string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "specs.smi-spec.io/v1alpha4", "kind": "HTTPRouteGroup",
		"metadata": map[string]any{"name": "api", "namespace": namespace},
		"spec": map[string]any{"matches": []any{
			map[string]any{"name": "read", "methods": []any{"GET"}, "pathRegex": "/api/.*"}}},
	}}
}

func target(namespace string) *unstructured.Unstructured {
	var sources []any
	for k := 0; k < 10; k += 2 {
		sources = append(sources, map[string]any{"kind": "ServiceAccount", "name": fmt.Sprintf("sa-%02d", k), "namespace": namespace})
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "access.smi-spec.io/v1alpha3", "kind": "TrafficTarget",
		"metadata": map[string]any{"name": "to-sa-01", "namespace": namespace},
		"spec": map[string]any{
			"destination": map[string]any{"kind": "ServiceAccount", "name": "sa-01", "namespace": namespace},
			"sources":     sources,
			"rules":       []any{map[string]any{"kind": "HTTPRouteGroup", "name": "api", "matches": []any{"read"}}},
		},
	}}
}

func ptr[T any](v T) *T { return &v }
