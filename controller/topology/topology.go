package topology

import (
	"fmt"
	"math"
	"net/netip"
	"sort"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/trellis-mesh/trellis/node-proxy/config"
	"github.com/trellis-mesh/trellis/smi"
	"github.com/trellis-mesh/trellis/smi/annotations"
	"github.com/trellis-mesh/trellis/smi/match"
)

// ZoneLabel is the well-known node label holding the topology zone.
const ZoneLabel = "topology.kubernetes.io/zone"

// Snapshot is what the watch stage hands over: the objects in the caches at
// one moment. Build never modifies them.
type Snapshot struct {
	Services       []*corev1.Service
	EndpointSlices []*discoveryv1.EndpointSlice
	Pods           []*corev1.Pod
	Namespaces     []*corev1.Namespace
	Nodes          []*corev1.Node
	// SMI holds TrafficSplits, TrafficTargets, HTTPRouteGroups, TCPRoutes
	// and UDPRoutes as read by dynamic informers (any served version).
	SMI []*unstructured.Unstructured
	// Plugins are the MeshPlugin objects, and PluginSources the ConfigMaps
	// labelled PluginSourceLabel=true that hold their Go source.
	Plugins       []*unstructured.Unstructured
	PluginSources []*corev1.ConfigMap
}

// Options are the mesh-wide settings topology needs.
type Options struct {
	// MeshNamespace is never meshed (it holds the shadow Services).
	MeshNamespace string
	// DefaultTrafficType applies to Services without a traffic-type annotation.
	DefaultTrafficType annotations.TrafficTypeValue
	// Cache, when set, keeps decoded SMI objects between builds (informer
	// objects are immutable: a changed object is a new pointer). It only
	// saves work; the result is the same without it.
	Cache *DecodeCache
}

// DecodeCache remembers, by object pointer, smi.Decode results, the
// meshed form of each Service (with the objects it was computed from, so a
// hit is only taken when every input is the same), and the pods on each
// node. Objects from informers are never modified in place (a change is a
// new pointer), so an entry whose inputs are the same pointers is still
// right.
type DecodeCache struct {
	mu sync.Mutex
	m  map[*unstructured.Unstructured]decoded

	svcMu sync.Mutex
	svcs  map[*corev1.Service]*svcMemo

	podMu sync.Mutex
	pods  map[*corev1.Pod]bool // the pods localPods saw, nil: none yet
	local map[string][]config.LocalPod
}

// svcMemo is one builder.service result and what it was computed from.
type svcMemo struct {
	meshNS   string
	defType  annotations.TrafficTypeValue
	ns       *corev1.Namespace
	slices   []*discoveryv1.EndpointSlice // sorted by name
	pods     []podDep
	zones    []zoneDep
	svc      *Service // nil: not meshed; Split and Rules are never set
	problems []smi.Problem
}

type podDep struct {
	key nsName
	pod *corev1.Pod
}

type zoneDep struct{ node, zone string }

type decoded struct {
	obj smi.Object
	ps  []smi.Problem
}

func (c *DecodeCache) decodeAll(us []*unstructured.Unstructured) ([]smi.Object, []smi.Problem) {
	var objs []smi.Object
	var ps []smi.Problem
	if c == nil {
		for _, u := range us {
			o, p := smi.Decode(u)
			ps = append(ps, p...)
			if o != nil {
				objs = append(objs, o)
			}
		}
		return objs, ps
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	next := make(map[*unstructured.Unstructured]decoded, len(us))
	for _, u := range us {
		d, ok := c.m[u]
		if !ok {
			d.obj, d.ps = smi.Decode(u)
		}
		next[u] = d
		ps = append(ps, d.ps...)
		if d.obj != nil {
			objs = append(objs, d.obj)
		}
	}
	c.m = next
	return objs, ps
}

// Topology is the mesh at one moment.
type Topology struct {
	// Services are the meshed Services, sorted by namespace then name.
	Services []*Service
	// Nodes are every node, sorted by name.
	Nodes []Node
	// LocalPods maps a node name to its pods (sorted by IP), with the
	// identity their traffic carries.
	LocalPods map[string][]config.LocalPod
	// Problems found on any object, sorted and without duplicates.
	Problems []smi.Problem
	// Policy is the compiled SMI policy (for explanations in the debug view).
	Policy *smi.Policy
	// Plugins are the middleware plugins some meshed Service uses, sorted
	// by name (every node's config carries them).
	Plugins []config.Plugin
}

// Node is one cluster node.
type Node struct {
	Name string `json:"name"`
	Zone string `json:"zone,omitempty"`
}

// Service is one meshed Service.
type Service struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	UID       string `json:"uid,omitempty"`
	// MeshedBy says why the Service is in the mesh.
	MeshedBy string `json:"meshedBy"`
	// Ports are the meshed ports, sorted by port number then protocol.
	// ListenPort is left 0: the compile stage fills it from the assignments.
	Ports []config.ServicePort `json:"ports"`
	// Endpoints sorted by IP.
	Endpoints []config.Endpoint `json:"endpoints,omitempty"`
	// Identities are the ServiceAccounts its pods run as, sorted.
	Identities []config.Identity `json:"identities,omitempty"`
	Split      *config.Split     `json:"split,omitempty"`
	// Rules allow sources (all of them, on any node) to reach the Service.
	Rules      []config.AccessRule `json:"rules,omitempty"`
	Resilience config.Resilience   `json:"resilience,omitzero"`
	// Plugins names the Topology.Plugins its HTTP requests go through,
	// outermost first.
	Plugins []string `json:"plugins,omitempty"`
}

// Key is "namespace/name".
func (s *Service) Key() string { return s.Namespace + "/" + s.Name }

// PortKey identifies one TCP or UDP service port that needs a proxy port.
type PortKey struct {
	Namespace string
	Name      string
	Port      int32
	Protocol  config.Protocol // tcp or udp
}

func (k PortKey) String() string {
	return fmt.Sprintf("%s/%s:%d/%s", k.Namespace, k.Name, k.Port, k.Protocol)
}

// Assignments maps each TCP and UDP service port to the proxy port that
// serves it. They are persisted in the shadow Services (controller/shadow)
// so that every replica, and every restart, agrees on them.
type Assignments map[PortKey]int32

// ListenKeys returns the TCP and UDP ports of s that need a proxy port.
func (s *Service) ListenKeys() []PortKey {
	var out []PortKey
	for _, p := range s.Ports {
		if p.Protocol == config.ProtocolTCP || p.Protocol == config.ProtocolUDP {
			out = append(out, PortKey{s.Namespace, s.Name, p.Port, p.Protocol})
		}
	}
	return out
}

type nsName struct{ ns, name string }

type builder struct {
	opts     Options
	problems []smi.Problem
	podByKey map[nsName]*corev1.Pod
	zoneOf   map[string]string
	nsByName map[string]*corev1.Namespace
	slices   map[nsName][]*discoveryv1.EndpointSlice
	meshed   map[nsName]*Service
	// deps collects what the service being computed reads (cache only).
	deps     *svcMemo
	nextSvcs map[*corev1.Service]*svcMemo
}

func (b *builder) problem(sev smi.Severity, kind smi.Kind, ns, name, field, fix, format string, args ...any) {
	b.problems = append(b.problems, smi.Problem{Severity: sev, Object: smi.Ref{Kind: kind, Namespace: ns, Name: name},
		Field: field, Message: fmt.Sprintf(format, args...), Fix: fix})
}

// Build computes the topology of snap. It never fails: every problem is
// reported in Topology.Problems and disables at most the object that has it.
func Build(snap *Snapshot, opts Options) *Topology {
	if opts.DefaultTrafficType == "" {
		opts.DefaultTrafficType = annotations.HTTP
	}
	b := &builder{
		opts:     opts,
		podByKey: make(map[nsName]*corev1.Pod, len(snap.Pods)),
		zoneOf:   make(map[string]string, len(snap.Nodes)),
		nsByName: make(map[string]*corev1.Namespace, len(snap.Namespaces)),
		slices:   map[nsName][]*discoveryv1.EndpointSlice{},
		meshed:   map[nsName]*Service{},
	}
	t := &Topology{LocalPods: map[string][]config.LocalPod{}}
	for _, n := range snap.Nodes {
		b.zoneOf[n.Name] = n.Labels[ZoneLabel]
		t.Nodes = append(t.Nodes, Node{Name: n.Name, Zone: n.Labels[ZoneLabel]})
	}
	sort.Slice(t.Nodes, func(i, j int) bool { return t.Nodes[i].Name < t.Nodes[j].Name })
	for _, ns := range snap.Namespaces {
		b.nsByName[ns.Name] = ns
	}
	for _, p := range snap.Pods {
		b.podByKey[nsName{p.Namespace, p.Name}] = p
	}
	for _, s := range snap.EndpointSlices {
		svc := s.Labels[discoveryv1.LabelServiceName]
		if svc == "" {
			continue
		}
		k := nsName{s.Namespace, svc}
		b.slices[k] = append(b.slices[k], s)
	}
	t.LocalPods = opts.Cache.localPods(b, snap.Pods)

	// SMI objects.
	objs, ps := opts.Cache.decodeAll(snap.SMI)
	b.problems = append(b.problems, ps...)
	svcs := append([]*corev1.Service(nil), snap.Services...)
	sort.Slice(svcs, func(i, j int) bool {
		if svcs[i].Namespace != svcs[j].Namespace {
			return svcs[i].Namespace < svcs[j].Namespace
		}
		return svcs[i].Name < svcs[j].Name
	})
	// Order SMI objects so that NewPolicy's "first copy wins" is stable.
	sort.SliceStable(objs, func(i, j int) bool { return objs[i].GetMeta().Ref.Less(objs[j].GetMeta().Ref) })
	policy := smi.NewPolicy(objs, svcs)
	t.Policy = policy
	b.problems = append(b.problems, policy.Problems()...)

	if c := opts.Cache; c != nil {
		c.svcMu.Lock()
		defer c.svcMu.Unlock()
		b.nextSvcs = make(map[*corev1.Service]*svcMemo, len(svcs))
	}
	for _, svc := range svcs {
		if s := b.service(svc); s != nil {
			t.Services = append(t.Services, s)
			b.meshed[nsName{s.Namespace, s.Name}] = s
		}
	}
	if c := opts.Cache; c != nil {
		c.svcs = b.nextSvcs // drops entries of Services that are gone
	}
	// Identities of split roots without pods of their own come from the
	// backends, so do splits before rules.
	for _, s := range t.Services {
		b.split(policy, s)
	}
	for _, s := range t.Services {
		if len(s.Identities) == 0 && s.Split != nil {
			set := map[config.Identity]bool{}
			for _, be := range s.Split.Backends {
				if bs := b.meshed[nsName{s.Namespace, be.Service}]; bs != nil {
					for _, id := range bs.Identities {
						set[id] = true
					}
				}
			}
			s.Identities = sortedIdentities(set)
		}
	}
	for _, s := range t.Services {
		b.rules(policy, s)
	}
	t.Plugins = b.plugins(snap.Plugins, snap.PluginSources)
	t.Problems = dedupe(b.problems)
	return t
}

func dedupe(ps []smi.Problem) []smi.Problem {
	smi.SortProblems(ps)
	out := ps[:0]
	for i, p := range ps {
		if i > 0 && p == ps[i-1] {
			continue
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// localPods is builder.localPods, reused while the set of pod objects is
// the same (localPods reads nothing but the pods).
func (c *DecodeCache) localPods(b *builder, pods []*corev1.Pod) map[string][]config.LocalPod {
	if c == nil {
		return b.localPods(pods)
	}
	c.podMu.Lock()
	defer c.podMu.Unlock()
	next := make(map[*corev1.Pod]bool, len(pods))
	same := c.pods != nil
	for _, p := range pods {
		next[p] = true
		same = same && c.pods[p]
	}
	if !same || len(next) != len(c.pods) {
		c.local = b.localPods(pods)
	}
	c.pods = next
	out := make(map[string][]config.LocalPod, len(c.local))
	for k, v := range c.local {
		out[k] = v
	}
	return out
}

// localPods groups pods with an IP by node. Host-network pods share the
// node's address and cannot be told apart, so they have no identity.
func (b *builder) localPods(pods []*corev1.Pod) map[string][]config.LocalPod {
	byNodeIP := map[string]map[string]*corev1.Pod{}
	for _, p := range pods {
		if p.Spec.NodeName == "" || p.Spec.HostNetwork || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		ips := podIPs(p)
		if len(ips) == 0 {
			continue
		}
		m := byNodeIP[p.Spec.NodeName]
		if m == nil {
			m = map[string]*corev1.Pod{}
			byNodeIP[p.Spec.NodeName] = m
		}
		for _, ip := range ips {
			if old, ok := m[ip]; !ok || preferPod(p, old) {
				m[ip] = p
			}
		}
	}
	out := make(map[string][]config.LocalPod, len(byNodeIP))
	for node, m := range byNodeIP {
		lps := make([]config.LocalPod, 0, len(m))
		for ip, p := range m {
			lps = append(lps, config.LocalPod{IP: ip, Name: p.Namespace + "/" + p.Name, Identity: identityOf(p)})
		}
		sort.Slice(lps, func(i, j int) bool { return ipLess(lps[i].IP, lps[j].IP) })
		out[node] = lps
	}
	return out
}

// preferPod picks between two pods claiming one IP: a running one, then the
// newer one, then by name.
func preferPod(a, b *corev1.Pod) bool {
	ar, br := a.Status.Phase == corev1.PodRunning, b.Status.Phase == corev1.PodRunning
	if ar != br {
		return ar
	}
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return b.CreationTimestamp.Before(&a.CreationTimestamp)
	}
	return a.Namespace+"/"+a.Name < b.Namespace+"/"+b.Name
}

func podIPs(p *corev1.Pod) []string {
	var out []string
	seen := map[string]bool{}
	add := func(s string) {
		ip, err := netip.ParseAddr(s)
		if err != nil || ip.Zone() != "" {
			return
		}
		s = ip.Unmap().String()
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	for _, ip := range p.Status.PodIPs {
		add(ip.IP)
	}
	if p.Status.PodIP != "" {
		add(p.Status.PodIP)
	}
	return out
}

func ipLess(a, b string) bool {
	x, errx := netip.ParseAddr(a)
	y, erry := netip.ParseAddr(b)
	if errx != nil || erry != nil {
		return a < b
	}
	return x.Less(y)
}

func identityOf(p *corev1.Pod) config.Identity {
	sa := p.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	return config.Identity{ServiceAccount: sa, Namespace: p.Namespace}
}

func sortedIdentities(set map[config.Identity]bool) []config.Identity {
	out := make([]config.Identity, 0, len(set))
	for id := range set {
		out = append(out, id)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	if len(out) == 0 {
		return nil
	}
	return out
}

// service returns the meshed form of svc, or nil when it is not meshed.
// With a cache, a result computed from the same objects is reused (as a
// copy: Build sets Split, Rules and Identities on what it returns).
func (b *builder) service(svc *corev1.Service) *Service {
	if svc.Namespace == b.opts.MeshNamespace {
		return nil
	}
	slices := b.slices[nsName{svc.Namespace, svc.Name}]
	sort.Slice(slices, func(i, j int) bool { return slices[i].Name < slices[j].Name })
	c := b.opts.Cache
	if c == nil {
		return b.computeService(svc, slices)
	}
	if m := c.svcs[svc]; m != nil && b.memoValid(m, svc, slices) {
		b.nextSvcs[svc] = m
		b.problems = append(b.problems, m.problems...)
		return m.svc.clone()
	}
	start := len(b.problems)
	b.deps = &svcMemo{meshNS: b.opts.MeshNamespace, defType: b.opts.DefaultTrafficType, ns: b.nsByName[svc.Namespace],
		slices: append([]*discoveryv1.EndpointSlice(nil), slices...)}
	s := b.computeService(svc, slices)
	m := b.deps
	b.deps = nil
	m.svc = s
	m.problems = append([]smi.Problem(nil), b.problems[start:]...)
	b.nextSvcs[svc] = m
	return s.clone()
}

func (s *Service) clone() *Service {
	if s == nil {
		return nil
	}
	cp := *s
	return &cp
}

// memoValid reports whether m was computed from the objects b holds now.
func (b *builder) memoValid(m *svcMemo, svc *corev1.Service, slices []*discoveryv1.EndpointSlice) bool {
	if m.meshNS != b.opts.MeshNamespace || m.defType != b.opts.DefaultTrafficType || m.ns != b.nsByName[svc.Namespace] || len(m.slices) != len(slices) {
		return false
	}
	for i, sl := range slices {
		if m.slices[i] != sl {
			return false
		}
	}
	for _, d := range m.pods {
		if b.podByKey[d.key] != d.pod {
			return false
		}
	}
	for _, d := range m.zones {
		if b.zoneOf[d.node] != d.zone {
			return false
		}
	}
	return true
}

// pod looks up a pod, noting the dependency for the memo.
func (b *builder) pod(k nsName) *corev1.Pod {
	p := b.podByKey[k]
	if b.deps != nil {
		b.deps.pods = append(b.deps.pods, podDep{k, p})
	}
	return p
}

// zone looks up a node's zone, noting the dependency for the memo.
func (b *builder) zone(node string) string {
	z := b.zoneOf[node]
	if b.deps != nil {
		b.deps.zones = append(b.deps.zones, zoneDep{node, z})
	}
	return z
}

func (b *builder) computeService(svc *corev1.Service, slices []*discoveryv1.EndpointSlice) *Service {
	meshed, why, ps := annotations.Meshed(svc, b.nsByName[svc.Namespace])
	b.problems = append(b.problems, ps...)
	if !meshed {
		return nil
	}
	kind := smi.Kind("Service")
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		b.problem(smi.Warning, kind, svc.Namespace, svc.Name, "spec.type", "remove the trellis.io/mesh annotation, or point a selector Service at the pods",
			"ExternalName Services have no pods to route to; the Service is not meshed")
		return nil
	}
	st, ps := annotations.ForService(svc, b.opts.DefaultTrafficType)
	b.problems = append(b.problems, ps...)
	s := &Service{Namespace: svc.Namespace, Name: svc.Name, UID: string(svc.UID), MeshedBy: why}

	for i, sp := range svc.Spec.Ports {
		field := fmt.Sprintf("spec.ports[%d]", i)
		var proto config.Protocol
		switch {
		case sp.Protocol == corev1.ProtocolSCTP:
			b.problem(smi.Warning, kind, svc.Namespace, svc.Name, field+".protocol", "move SCTP ports to a Service outside the mesh",
				"SCTP is not supported by the mesh; port %d is not meshed", sp.Port)
			continue
		case sp.Protocol == corev1.ProtocolUDP:
			if st.TrafficType != annotations.UDP {
				continue // annotations.ForService reported it
			}
			proto = config.ProtocolUDP
		default:
			switch st.TrafficType {
			case annotations.UDP:
				continue // reported
			case annotations.TCP:
				proto = config.ProtocolTCP
			default:
				proto = config.ProtocolHTTP
			}
		}
		p := config.ServicePort{Name: sp.Name, Port: sp.Port, Protocol: proto}
		if proto == config.ProtocolHTTP {
			p.Scheme = config.Scheme(st.Scheme)
			if p.Scheme == config.SchemeHTTP {
				p.Scheme = "" // the default; keeps configs small
			}
		}
		p.TargetPort = resolveTargetPort(sp, slices)
		s.Ports = append(s.Ports, p)
	}
	if len(s.Ports) == 0 {
		b.problem(smi.Warning, kind, svc.Namespace, svc.Name, "spec.ports", "give the Service a TCP port, or set trellis.io/traffic-type to match its ports",
			"no port of this Service can be meshed with traffic type %s; the Service is not meshed", st.TrafficType)
		return nil
	}
	sort.Slice(s.Ports, func(i, j int) bool {
		if s.Ports[i].Port != s.Ports[j].Port {
			return s.Ports[i].Port < s.Ports[j].Port
		}
		return s.Ports[i].Protocol < s.Ports[j].Protocol
	})
	// Two kube ports with one number (53/TCP and 53/UDP) end up as one
	// protocol each, but http and tcp cannot share a number in the config.
	for i := 1; i < len(s.Ports); i++ {
		if s.Ports[i].Port == s.Ports[i-1].Port {
			b.problem(smi.Warning, kind, svc.Namespace, svc.Name, "spec.ports", "use distinct port numbers",
				"port %d is listed for two protocols; only the %s one is meshed", s.Ports[i].Port, s.Ports[i-1].Protocol)
			s.Ports = append(s.Ports[:i], s.Ports[i+1:]...)
			i--
		}
	}
	s.Endpoints, s.Identities = b.endpoints(svc, s.Ports, slices)
	s.Resilience = resilience(st)
	return s
}

// resolveTargetPort picks the pod port of a service port: a numeric
// targetPort as written; a named one as most endpoints resolve it (ties:
// the lowest); the port itself when nothing resolves it.
func resolveTargetPort(sp corev1.ServicePort, slices []*discoveryv1.EndpointSlice) int32 {
	if sp.TargetPort.Type == intstr.Int && sp.TargetPort.IntVal > 0 {
		return sp.TargetPort.IntVal
	}
	if sp.TargetPort.Type == intstr.Int && sp.TargetPort.IntVal == 0 {
		return sp.Port
	}
	counts := map[int32]int{}
	for _, sl := range slices {
		if v, ok := slicePort(sl, sp); ok {
			counts[v] += len(sl.Endpoints)
		}
	}
	best, bestN := sp.Port, -1
	for v, n := range counts {
		if n > bestN || (n == bestN && v < best) {
			best, bestN = v, n
		}
	}
	return best
}

func slicePort(sl *discoveryv1.EndpointSlice, sp corev1.ServicePort) (int32, bool) {
	want := sp.Protocol
	if want == "" {
		want = corev1.ProtocolTCP
	}
	for _, p := range sl.Ports {
		name := ""
		if p.Name != nil {
			name = *p.Name
		}
		proto := corev1.ProtocolTCP
		if p.Protocol != nil {
			proto = *p.Protocol
		}
		if name == sp.Name && proto == want && p.Port != nil && *p.Port > 0 && *p.Port <= 65535 {
			return *p.Port, true
		}
	}
	return 0, false
}

func (b *builder) endpoints(svc *corev1.Service, ports []config.ServicePort, slices []*discoveryv1.EndpointSlice) ([]config.Endpoint, []config.Identity) {
	byIP := map[string]int{}
	var eps []config.Endpoint
	ids := map[config.Identity]bool{}
	for _, sl := range slices {
		if sl.AddressType != discoveryv1.AddressTypeIPv4 && sl.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		// Per-pod ports for named ports that resolve differently here.
		var over map[string]int32
		for _, p := range ports {
			if p.Name == "" {
				continue
			}
			kp := corev1.ServicePort{Name: p.Name, Protocol: kubeProto(p.Protocol)}
			if v, ok := slicePort(sl, kp); ok && v != p.TargetPort {
				if over == nil {
					over = map[string]int32{}
				}
				over[p.Name] = v
			}
		}
		for _, e := range sl.Endpoints {
			ready := e.Conditions.Ready == nil || *e.Conditions.Ready
			node := ""
			if e.NodeName != nil {
				node = *e.NodeName
			}
			var zone string
			if e.Zone != nil && *e.Zone != "" {
				zone = *e.Zone
			} else {
				zone = b.zone(node)
			}
			if e.TargetRef != nil && e.TargetRef.Kind == "Pod" {
				ns := e.TargetRef.Namespace
				if ns == "" {
					ns = sl.Namespace
				}
				if pod := b.pod(nsName{ns, e.TargetRef.Name}); pod != nil {
					ids[identityOf(pod)] = true
					if node == "" {
						node = pod.Spec.NodeName
						zone = b.zone(node)
					}
				}
			}
			for _, a := range e.Addresses {
				ip, err := netip.ParseAddr(a)
				if err != nil || ip.Zone() != "" {
					b.problem(smi.Warning, "EndpointSlice", sl.Namespace, sl.Name, "endpoints[].addresses", "", "%q is not an IP address; skipped", a)
					continue
				}
				s := ip.Unmap().String()
				if i, dup := byIP[s]; dup {
					// The same pod in two slices (a slice being replaced):
					// ready wins.
					eps[i].Ready = eps[i].Ready || ready
					continue
				}
				byIP[s] = len(eps)
				ep := config.Endpoint{IP: s, Node: node, Zone: zone, Ready: ready}
				if len(over) > 0 {
					ep.Ports = over
				}
				eps = append(eps, ep)
			}
		}
	}
	sort.Slice(eps, func(i, j int) bool { return ipLess(eps[i].IP, eps[j].IP) })
	return eps, sortedIdentities(ids)
}

func kubeProto(p config.Protocol) corev1.Protocol {
	if p == config.ProtocolUDP {
		return corev1.ProtocolUDP
	}
	return corev1.ProtocolTCP
}

func resilience(st annotations.ServiceSettings) config.Resilience {
	var r config.Resilience
	r.Timeout = config.Duration(st.Timeout)
	if st.Retry != nil && st.Retry.Attempts > 0 {
		tries := st.Retry.Attempts + 1
		if tries > 10 {
			tries = 10
		}
		rt := &config.Retries{Attempts: int32(tries), PerTryTimeout: config.Duration(st.PerTryTimeout)}
		for _, sr := range st.Retry.On {
			for c := sr.From; c <= sr.To && c <= 599; c++ {
				if c >= 100 {
					rt.On = append(rt.On, int32(c))
				}
			}
		}
		r.Retries = rt
	} else if st.Retry != nil {
		// An explicit retry-attempts of 0 turns off even the proxy's
		// default retry of connection failures.
		r.Retries = &config.Retries{Attempts: 1}
	}
	if rl := st.RateLimit; rl != nil && rl.Average > 0 {
		r.RateLimit = &config.RateLimit{RPS: float64(rl.Average), Burst: int32(min(rl.Burst, math.MaxInt32))}
	}
	if cb := st.CircuitBreaker; cb != nil && (cb.ConsecutiveFailures > 0 || cb.FailureRatio > 0) {
		r.CircuitBreaker = &config.CircuitBreaker{ConsecutiveFailures: int32(min(cb.ConsecutiveFailures, math.MaxInt32)),
			FailureRatio: cb.FailureRatio, OpenFor: config.Duration(cb.OpenDuration)}
	}
	return r
}

// split attaches the winning TrafficSplit of s, keeping only backends the
// proxy can use.
func (b *builder) split(policy *smi.Policy, s *Service) {
	plan, ok := policy.SplitPlan(s.Namespace, s.Name)
	if !ok {
		return
	}
	ref := plan.Split
	warn := func(field, fix, format string, args ...any) {
		b.problem(smi.Warning, ref.Kind, ref.Namespace, ref.Name, field, fix, format, args...)
	}
	if !plan.MatchAll && len(plan.Matches) == 0 {
		return // smi reported it: nothing is selected, all goes to the root
	}
	allToRoot := true
	for _, ps := range plan.Ports {
		if !ps.ToRoot {
			allToRoot = false
		}
	}
	if allToRoot {
		return
	}
	// Candidates in the split's order, from the first port that has any.
	type cand struct {
		name   string
		weight int64
	}
	var cands []cand
	seen := map[string]bool{}
	for _, ps := range plan.Ports {
		for _, wb := range ps.Backends {
			if !seen[wb.Service] {
				seen[wb.Service] = true
				cands = append(cands, cand{wb.Service, wb.Weight})
			}
		}
	}
	var kept []cand
	for _, c := range cands {
		be := b.meshed[nsName{s.Namespace, c.name}]
		if be == nil {
			warn("spec.backends", fmt.Sprintf("opt Service %s/%s into the mesh (annotation trellis.io/mesh: \"true\")", s.Namespace, c.name),
				"backend %q is not in the mesh; its share is left out of the split", c.name)
			continue
		}
		if why := portsMismatch(s, be); why != "" {
			warn("spec.backends", fmt.Sprintf("give Service %s/%s the same ports and traffic type as %s", s.Namespace, c.name, s.Name),
				"backend %q %s; its share is left out of the split", c.name, why)
			continue
		}
		kept = append(kept, c)
	}
	var total int64
	onlySelf := true
	for _, c := range kept {
		total += c.weight
		if c.weight > 0 && c.name != s.Name {
			onlySelf = false
		}
	}
	if total > 0 && onlySelf {
		return // everything goes to the root's own endpoints anyway
	}
	if total <= 0 {
		if len(cands) > 0 && len(kept) < len(cands) {
			warn("spec.backends", "fix the backends above", "no usable backend has weight; all traffic goes to Service %q", s.Name)
		}
		return
	}
	sp := &config.Split{Source: ref.NamespacedName()}
	for _, c := range kept {
		w := c.weight
		if total > math.MaxInt32 {
			w = c.weight * math.MaxInt32 / total
			if w == 0 && c.weight > 0 {
				w = 1
			}
		}
		sp.Backends = append(sp.Backends, config.Backend{Service: c.name, Weight: int32(w)})
	}
	if !plan.MatchAll {
		for _, p := range s.Ports {
			if p.Protocol != config.ProtocolHTTP {
				warn("spec.matches", fmt.Sprintf("set trellis.io/traffic-type: \"http\" on Service %s, or remove the matches", s.Name),
					"HTTP matches need every meshed port of Service %q to be http, but port %d is %s; the split is not applied", s.Name, p.Port, p.Protocol)
				return
			}
		}
		for _, m := range plan.Matches {
			sp.Matches = append(sp.Matches, m.Spec)
		}
	}
	s.Split = sp
}

func portsMismatch(root, be *Service) string {
	for _, rp := range root.Ports {
		found := false
		for _, bp := range be.Ports {
			if bp.Port == rp.Port {
				found = true
				if bp.Protocol != rp.Protocol {
					return fmt.Sprintf("serves port %d as %s but the root serves it as %s", rp.Port, bp.Protocol, rp.Protocol)
				}
			}
		}
		if !found {
			return fmt.Sprintf("has no meshed port %d", rp.Port)
		}
	}
	return ""
}

// rules compiles the TrafficTargets whose destination is an identity of s
// into access rules on s's ports.
func (b *builder) rules(policy *smi.Policy, s *Service) {
	if len(s.Identities) > 1 {
		names := make([]string, len(s.Identities))
		for i, id := range s.Identities {
			names[i] = id.String()
		}
		b.problem(smi.Warning, "Service", s.Namespace, s.Name, "", "run every pod of the Service as one ServiceAccount",
			"its pods run as several ServiceAccounts (%s); access is decided per Service, so when ACL is on no TrafficTarget applies and access to it is denied", strings.Join(names, ", "))
		return
	}
	if len(s.Identities) == 0 {
		return
	}
	id := s.Identities[0]
	for _, g := range policy.Grants(smi.Identity{Namespace: id.Namespace, Name: id.ServiceAccount}) {
		var sources []config.Identity
		for _, src := range g.Sources {
			sources = append(sources, config.Identity{ServiceAccount: src.Name, Namespace: src.Namespace})
		}
		sort.Slice(sources, func(i, j int) bool { return sources[i].String() < sources[j].String() })
		sources = uniqIdentities(sources)
		if len(sources) == 0 {
			continue
		}
		for _, r := range g.Rules {
			if r.Unusable != "" {
				continue
			}
			src := fmt.Sprintf("TrafficTarget %s rule %d (%s %s)", g.Target.NamespacedName(), r.Index, r.Kind, r.Name)
			var ports []int32
			var specs []match.HTTPSpec
			switch r.Kind {
			case smi.KindHTTPRouteGroup:
				ports = s.portsFor(g.Port, nil, config.ProtocolHTTP)
				for _, m := range r.HTTP {
					specs = append(specs, m.Spec)
				}
				if len(r.HTTP) > 0 {
					src += " match " + labels(r.HTTP)
				}
			case smi.KindTCPRoute:
				ports = s.portsFor(g.Port, r.Ports, config.ProtocolTCP, config.ProtocolHTTP)
			case smi.KindUDPRoute:
				ports = s.portsFor(g.Port, r.Ports, config.ProtocolUDP)
			}
			if len(ports) == 0 {
				continue // the rule selects no port of this Service
			}
			s.Rules = append(s.Rules, config.AccessRule{Source: src, Sources: sources, Ports: ports, HTTP: specs})
		}
	}
}

func labels(ms []smi.NamedMatch) string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Label()
	}
	return strings.Join(out, ",")
}

func uniqIdentities(ids []config.Identity) []config.Identity {
	out := ids[:0]
	for i, id := range ids {
		if i > 0 && id == ids[i-1] {
			continue
		}
		out = append(out, id)
	}
	return out
}

// portsFor lists the service ports of the given protocols whose pod port is
// grantPort (0: any) and in podPorts (empty: any).
func (s *Service) portsFor(grantPort int32, podPorts []int32, protos ...config.Protocol) []int32 {
	var out []int32
	for _, p := range s.Ports {
		okProto := false
		for _, pr := range protos {
			if p.Protocol == pr {
				okProto = true
			}
		}
		if !okProto {
			continue
		}
		if grantPort != 0 && !s.podPortIs(p, []int32{grantPort}) {
			continue
		}
		if len(podPorts) > 0 && !s.podPortIs(p, podPorts) {
			continue
		}
		out = append(out, p.Port)
	}
	return out
}

func (s *Service) podPortIs(p config.ServicePort, want []int32) bool {
	has := func(v int32) bool {
		for _, w := range want {
			if w == v {
				return true
			}
		}
		return false
	}
	if has(p.TargetPort) {
		return true
	}
	for _, e := range s.Endpoints {
		if v, ok := e.Ports[p.Name]; ok && has(v) {
			return true
		}
	}
	return false
}
