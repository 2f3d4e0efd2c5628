package shadow

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/trellis-mesh/trellis/controller/topology"
	"github.com/trellis-mesh/trellis/node-proxy/config"
	"github.com/trellis-mesh/trellis/smi"
)

// Labels and annotations on shadow Services.
const (
	LabelManagedBy   = "app.kubernetes.io/managed-by"
	ManagedBy        = "trellis-controller"
	LabelOfNamespace = "trellis.io/shadow-of-namespace"
	LabelOfName      = "trellis.io/shadow-of-name"
	AnnotationOf     = "trellis.io/shadow-of"
	AnnotationOfUID  = "trellis.io/shadow-of-uid"
)

// Options say where shadow Services live and what they point at.
type Options struct {
	Namespace string
	// Selector selects the node proxy pods.
	Selector map[string]string
	// HTTPPort is the proxy's shared HTTP listener.
	HTTPPort int32
	// Min and Max bound the proxy ports assigned to TCP and UDP ports.
	Min, Max int32
}

// Name is the shadow Service name of Service namespace/name: readable
// when it fits, always at most 63 characters, and unique (it ends in a
// hash of the full name, so truncation never makes two originals collide).
func Name(namespace, name string) string {
	sum := sha256.Sum256([]byte(namespace + "/" + name))
	h := hex.EncodeToString(sum[:])[:10]
	base := name + "-" + namespace
	const room = 63 - 1 - 10
	if len(base) > room {
		base = base[:room]
	}
	base = strings.TrimRight(base, "-")
	return base + "-" + h
}

// IsShadow reports whether s is a shadow Service in namespace ns.
func IsShadow(s *corev1.Service, ns string) bool {
	return s.Namespace == ns && s.Labels[LabelManagedBy] == ManagedBy && s.Labels[LabelOfName] != ""
}

// Of returns the namespace and name of the Service s shadows.
func Of(s *corev1.Service) (string, string) {
	return s.Labels[LabelOfNamespace], s.Labels[LabelOfName]
}

// Existing filters the shadow Services out of all Services, sorted by name.
func Existing(all []*corev1.Service, ns string) []*corev1.Service {
	var out []*corev1.Service
	for _, s := range all {
		if IsShadow(s, ns) {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func l4(p corev1.Protocol) config.Protocol {
	if p == corev1.ProtocolUDP {
		return config.ProtocolUDP
	}
	return config.ProtocolTCP
}

// Assignments reads the proxy ports recorded in existing shadow Services.
// Only ports in [Min, Max] count; when two claim one proxy port, the first
// by shadow name keeps it. Every replica computes the same result.
func Assignments(existing []*corev1.Service, o Options) topology.Assignments {
	a := topology.Assignments{}
	taken := map[config.Protocol]map[int32]bool{config.ProtocolTCP: {}, config.ProtocolUDP: {}}
	sorted := append([]*corev1.Service(nil), existing...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	for _, s := range sorted {
		if !IsShadow(s, o.Namespace) {
			continue
		}
		ns, name := Of(s)
		for _, p := range s.Spec.Ports {
			if p.TargetPort.Type != intstr.Int {
				continue
			}
			lp := p.TargetPort.IntVal
			proto := l4(p.Protocol)
			if lp < o.Min || lp > o.Max || taken[proto][lp] {
				continue
			}
			taken[proto][lp] = true
			a[topology.PortKey{Namespace: ns, Name: name, Port: p.Port, Protocol: proto}] = lp
		}
	}
	return a
}

// Plan computes the shadow Services the mesh needs and the proxy port of
// every TCP and UDP port: existing assignments are kept; new ports get the
// lowest free port of the range. A Service whose ports cannot all get one
// is reported; its other ports are still served.
func Plan(top *topology.Topology, existing []*corev1.Service, o Options) ([]*corev1.Service, topology.Assignments, []smi.Problem) {
	old := Assignments(existing, o)
	a := topology.Assignments{}
	taken := map[config.Protocol]map[int32]bool{config.ProtocolTCP: {}, config.ProtocolUDP: {}}
	for _, s := range top.Services {
		for _, k := range s.ListenKeys() {
			if lp, ok := old[k]; ok {
				a[k] = lp
				taken[k.Protocol][lp] = true
			}
		}
	}
	next := map[config.Protocol]int32{config.ProtocolTCP: o.Min, config.ProtocolUDP: o.Min}
	var problems []smi.Problem
	for _, s := range top.Services {
		for _, k := range s.ListenKeys() {
			if _, ok := a[k]; ok {
				continue
			}
			p := next[k.Protocol]
			for p <= o.Max && (taken[k.Protocol][p] || (k.Protocol == config.ProtocolTCP && p == o.HTTPPort)) {
				p++
			}
			next[k.Protocol] = p
			if p > o.Max {
				problems = append(problems, smi.Problem{Severity: smi.Error, Object: smi.Ref{Kind: "Service", Namespace: s.Namespace, Name: s.Name},
					Field:   "spec.ports",
					Message: fmt.Sprintf("no free proxy port for %s port %d: all of %d-%d are in use; the port is not meshed", k.Protocol, k.Port, o.Min, o.Max),
					Fix:     "widen listenPorts in the trellis-controller settings, or mesh fewer TCP/UDP ports"})
				continue
			}
			taken[k.Protocol][p] = true
			a[k] = p
		}
	}
	var desired []*corev1.Service
	for _, s := range top.Services {
		desired = append(desired, build(s, a, o))
	}
	sort.Slice(desired, func(i, j int) bool { return desired[i].Name < desired[j].Name })
	return desired, a, problems
}

func build(s *topology.Service, a topology.Assignments, o Options) *corev1.Service {
	itp := corev1.ServiceInternalTrafficPolicyLocal
	sel := make(map[string]string, len(o.Selector))
	for k, v := range o.Selector {
		sel[k] = v
	}
	out := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{
			Name:      Name(s.Namespace, s.Name),
			Namespace: o.Namespace,
			Labels: map[string]string{
				LabelManagedBy:              ManagedBy,
				"app.kubernetes.io/part-of": "trellis",
				LabelOfNamespace:            s.Namespace,
				LabelOfName:                 s.Name,
			},
			Annotations: map[string]string{AnnotationOf: s.Namespace + "/" + s.Name, AnnotationOfUID: s.UID},
		},
		Spec: corev1.ServiceSpec{
			Type:                  corev1.ServiceTypeClusterIP,
			Selector:              sel,
			InternalTrafficPolicy: &itp,
		},
	}
	for _, p := range s.Ports {
		sp := corev1.ServicePort{Name: p.Name, Port: p.Port, Protocol: corev1.ProtocolTCP}
		if sp.Name == "" {
			sp.Name = "p-" + strconv.Itoa(int(p.Port))
		}
		switch p.Protocol {
		case config.ProtocolHTTP:
			sp.TargetPort = intstr.FromInt32(o.HTTPPort)
		default:
			lp, ok := a[topology.PortKey{Namespace: s.Namespace, Name: s.Name, Port: p.Port, Protocol: p.Protocol}]
			if !ok {
				continue
			}
			if p.Protocol == config.ProtocolUDP {
				sp.Protocol = corev1.ProtocolUDP
			}
			sp.TargetPort = intstr.FromInt32(lp)
		}
		out.Spec.Ports = append(out.Spec.Ports, sp)
	}
	return out
}

// NeedsUpdate reports whether cur differs from want in what the controller
// owns (labels, annotations, selector, ports, traffic policy).
func NeedsUpdate(cur, want *corev1.Service) bool {
	for k, v := range want.Labels {
		if cur.Labels[k] != v {
			return true
		}
	}
	for k, v := range want.Annotations {
		if cur.Annotations[k] != v {
			return true
		}
	}
	if len(cur.Spec.Selector) != len(want.Spec.Selector) {
		return true
	}
	for k, v := range want.Spec.Selector {
		if cur.Spec.Selector[k] != v {
			return true
		}
	}
	if cur.Spec.InternalTrafficPolicy == nil || *cur.Spec.InternalTrafficPolicy != *want.Spec.InternalTrafficPolicy {
		return true
	}
	if len(cur.Spec.Ports) != len(want.Spec.Ports) {
		return true
	}
	for i, p := range want.Spec.Ports {
		c := cur.Spec.Ports[i]
		if c.Name != p.Name || c.Port != p.Port || c.Protocol != p.Protocol || c.TargetPort != p.TargetPort {
			return true
		}
	}
	return false
}

// Merge returns a copy of cur carrying want's owned fields (the cluster IP
// and anything else the apiserver filled in are kept).
func Merge(cur, want *corev1.Service) *corev1.Service {
	out := cur.DeepCopy()
	if out.Labels == nil {
		out.Labels = map[string]string{}
	}
	for k, v := range want.Labels {
		out.Labels[k] = v
	}
	if out.Annotations == nil {
		out.Annotations = map[string]string{}
	}
	for k, v := range want.Annotations {
		out.Annotations[k] = v
	}
	out.Spec.Selector = want.Spec.Selector
	out.Spec.InternalTrafficPolicy = want.Spec.InternalTrafficPolicy
	out.Spec.Ports = want.Spec.Ports
	return out
}
