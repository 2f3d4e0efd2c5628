package shadow

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/trellis-mesh/trellis/controller/topology"
	"github.com/trellis-mesh/trellis/node-proxy/config"
)

func TestName(t *testing.T) {
	long := strings.Repeat("a", 63)
	cases := []struct{ ns, name, want string }{
		{"shop", "web", "web-shop-"},
		{long, long, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-"},
		{"x", strings.Repeat("b", 51) + "-c", strings.Repeat("b", 51) + "-"},
	}
	seen := map[string]string{}
	for _, tc := range cases {
		got := Name(tc.ns, tc.name)
		if !strings.HasPrefix(got, tc.want) || len(got) > 63 {
			t.Errorf("Name(%q, %q) = %q (%d chars), want prefix %q and <= 63", tc.ns, tc.name, got, len(got), tc.want)
		}
		if msgs := validation.IsDNS1035Label(got); len(msgs) > 0 {
			t.Errorf("Name(%q, %q) = %q: %v", tc.ns, tc.name, got, msgs)
		}
		seen[got] = tc.ns + "/" + tc.name
	}
	// Names that share the readable prefix still differ.
	a, b := Name(long, long), Name(long, long[:62]+"b")
	if a == b {
		t.Errorf("two long names collide: %s", a)
	}
}

func FuzzName(f *testing.F) {
	f.Add("shop", "web")
	f.Add(strings.Repeat("n", 63), strings.Repeat("s", 63))
	f.Fuzz(func(t *testing.T, ns, name string) {
		if len(validation.IsDNS1123Label(ns)) > 0 || len(validation.IsDNS1035Label(name)) > 0 {
			return // not a Kubernetes Service
		}
		got := Name(ns, name)
		if msgs := validation.IsDNS1035Label(got); len(msgs) > 0 {
			t.Fatalf("Name(%q, %q) = %q: %v", ns, name, got, msgs)
		}
	})
}

var opts = Options{Namespace: "trellis-system", Selector: map[string]string{"app": "proxy"}, HTTPPort: 10000, Min: 20000, Max: 20003}

func svc(ns, name string, ports ...config.ServicePort) *topology.Service {
	return &topology.Service{Namespace: ns, Name: name, UID: "uid-" + name, Ports: ports}
}

func tcp(port int32) config.ServicePort {
	return config.ServicePort{Port: port, TargetPort: port, Protocol: config.ProtocolTCP}
}
func udp(port int32) config.ServicePort {
	return config.ServicePort{Port: port, TargetPort: port, Protocol: config.ProtocolUDP}
}
func http(port int32) config.ServicePort {
	return config.ServicePort{Name: "web", Port: port, TargetPort: port, Protocol: config.ProtocolHTTP}
}

func TestPlanKeepsAssignmentsAndFillsGaps(t *testing.T) {
	top := &topology.Topology{Services: []*topology.Service{
		svc("a", "db", tcp(5432)),
		svc("a", "web", http(80)),
		svc("b", "dns", udp(53)),
	}}
	desired, a, ps := Plan(top, nil, opts)
	if len(ps) != 0 || len(desired) != 3 {
		t.Fatalf("problems %v, %d desired", ps, len(desired))
	}
	k := func(ns, n string, p int32, pr config.Protocol) topology.PortKey {
		return topology.PortKey{Namespace: ns, Name: n, Port: p, Protocol: pr}
	}
	if a[k("a", "db", 5432, "tcp")] != 20000 || a[k("b", "dns", 53, "udp")] != 20000 {
		t.Fatalf("first assignments %v", a)
	}
	// Restart: the shadows carry the assignments; a new Service sorting
	// first must not take a port already in use.
	top.Services = append([]*topology.Service{svc("0", "first", tcp(1))}, top.Services...)
	desired2, a2, _ := Plan(top, desired, opts)
	if a2[k("a", "db", 5432, "tcp")] != 20000 || a2[k("0", "first", 1, "tcp")] != 20001 {
		t.Fatalf("assignments moved: %v", a2)
	}
	if got := Assignments(desired2, opts); len(got) != len(a2) {
		t.Fatalf("read back %v, planned %v", got, a2)
	}
	for _, d := range desired2 {
		if *d.Spec.InternalTrafficPolicy != corev1.ServiceInternalTrafficPolicyLocal || d.Spec.Selector["app"] != "proxy" {
			t.Errorf("%s: %+v", d.Name, d.Spec)
		}
		if d.Labels[LabelOfName] == "web" && d.Spec.Ports[0].TargetPort.IntVal != 10000 {
			t.Errorf("http port does not target the proxy's HTTP listener: %+v", d.Spec.Ports)
		}
	}
}

func TestPlanExhaustedRange(t *testing.T) {
	top := &topology.Topology{Services: []*topology.Service{svc("a", "wide", tcp(1), tcp(2), tcp(3), tcp(4), tcp(5))}}
	desired, a, ps := Plan(top, nil, opts)
	if len(a) != 4 || len(ps) != 1 || !strings.Contains(ps[0].String(), "no free proxy port for tcp port 5") {
		t.Fatalf("assignments %v, problems %v", a, ps)
	}
	if len(desired[0].Spec.Ports) != 4 {
		t.Errorf("the unassigned port is in the shadow: %+v", desired[0].Spec.Ports)
	}
}

func TestAssignmentsConflictAndRange(t *testing.T) {
	top := &topology.Topology{Services: []*topology.Service{svc("a", "x", tcp(1)), svc("a", "y", tcp(1))}}
	d, _, _ := Plan(top, nil, opts)
	// Corrupt: both claim 20000, and one out-of-range value.
	for _, s := range d {
		s.Spec.Ports[0].TargetPort.IntVal = 20000
	}
	a := Assignments(d, opts)
	if len(a) != 1 {
		t.Fatalf("two shadows kept one proxy port: %v", a)
	}
	_, a2, _ := Plan(top, d, opts)
	if len(a2) != 2 || a2[topology.PortKey{Namespace: "a", Name: "x", Port: 1, Protocol: "tcp"}] == a2[topology.PortKey{Namespace: "a", Name: "y", Port: 1, Protocol: "tcp"}] {
		t.Fatalf("conflict not resolved: %v", a2)
	}
}

func TestNeedsUpdate(t *testing.T) {
	top := &topology.Topology{Services: []*topology.Service{svc("a", "db", tcp(5432))}}
	d, _, _ := Plan(top, nil, opts)
	cur := d[0].DeepCopy()
	cur.Spec.ClusterIP = "10.96.0.10"
	if NeedsUpdate(cur, d[0]) {
		t.Error("cluster IP filled in by the apiserver counts as a change")
	}
	cur.Spec.Ports[0].TargetPort.IntVal = 1
	if !NeedsUpdate(cur, d[0]) {
		t.Error("port change not seen")
	}
	m := Merge(cur, d[0])
	if m.Spec.ClusterIP != "10.96.0.10" || NeedsUpdate(m, d[0]) {
		t.Errorf("merge: %+v", m.Spec)
	}
}
