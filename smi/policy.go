package smi

import (
	"fmt"
	"net/http"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/trellis-mesh/trellis/smi/match"
)

// Protocol of a request or connection.
type Protocol string

// Protocols.
const (
	HTTP Protocol = "http"
	TCP  Protocol = "tcp"
	UDP  Protocol = "udp"
)

// Request describes what a decision is about. For Allowed, Port is the
// destination pod's port (TCPRoute/UDPRoute ports and v1alpha1/2
// destination.port name pod ports). For Split, Port is the root Service's
// port. Method, Path (without query) and Header are for HTTP only.
type Request struct {
	Protocol Protocol    `json:"protocol"`
	Port     int32       `json:"port,omitempty"`
	Method   string      `json:"method,omitempty"`
	Path     string      `json:"path,omitempty"`
	Header   http.Header `json:"header,omitempty"`
}

func (r Request) String() string {
	s := strings.ToUpper(string(r.Protocol))
	if r.Protocol == HTTP {
		s += " " + r.Method + " " + r.Path
	}
	if r.Port != 0 {
		s += fmt.Sprintf(" on port %d", r.Port)
	}
	return s
}

// Policy is the compiled form of a set of SMI objects and Services. It is
// immutable: build a new one for every snapshot. Its methods are pure and
// safe for concurrent use.
type Policy struct {
	grants   map[Identity][]*Grant
	invalid  map[Identity][]Ref // invalid TrafficTargets by destination, for reasons
	plans    map[string]*SplitPlan
	problems []Problem
}

// Grant is one valid TrafficTarget, compiled: Sources may reach pods running
// as Destination through any usable rule.
type Grant struct {
	Target      Ref         `json:"trafficTarget"`
	Destination Identity    `json:"destination"`
	Port        int32       `json:"port,omitempty"` // v1alpha1/2 destination.port; 0 = all
	Sources     []Identity  `json:"sources"`
	Rules       []GrantRule `json:"rules"`
}

// GrantRule is one rule of a Grant with its traffic spec resolved.
type GrantRule struct {
	Index int    `json:"index"`
	Kind  Kind   `json:"kind"`
	Name  string `json:"name"`
	// Unusable says why the rule allows nothing (spec not found, ...).
	Unusable string `json:"unusable,omitempty"`
	// HTTP holds the selected matches of an HTTPRouteGroup rule.
	HTTP []NamedMatch `json:"http,omitempty"`
	// MatchName and Ports are the selected match of a TCPRoute or UDPRoute
	// rule; no ports means every port.
	MatchName string  `json:"matchName,omitempty"`
	Ports     []int32 `json:"ports,omitempty"`
}

// NamedMatch is one compiled HTTPRouteGroup match.
type NamedMatch struct {
	Group string         `json:"group"` // namespace/name of the HTTPRouteGroup
	Index int            `json:"index"` // position in the group
	Match *match.HTTP    `json:"-"`
	Spec  match.HTTPSpec `json:"spec"`
}

// Label names the match for humans: its name, or #index when unnamed.
func (n NamedMatch) Label() string {
	if n.Spec.Name != "" {
		return n.Spec.Name
	}
	return fmt.Sprintf("#%d", n.Index)
}

// SplitPlan is the winning TrafficSplit for one root Service, resolved
// against the Services.
type SplitPlan struct {
	Split Ref    `json:"trafficSplit"`
	Root  string `json:"root"` // namespace/name
	// MatchAll is true when the split has no matches and applies to every
	// request. Otherwise only HTTP requests matching one of Matches are
	// split; the rest go to the root Service.
	MatchAll bool         `json:"matchAll"`
	Matches  []NamedMatch `json:"matches,omitempty"`
	// Ports has one entry per port of the root Service, sorted.
	Ports []PortSplit `json:"ports"`
}

// PortSplit is the split of one root Service port.
type PortSplit struct {
	Port     int32           `json:"port"`
	Protocol corev1.Protocol `json:"protocol"`
	// Backends that exist and expose Port, with their weights (0 kept).
	Backends []WeightedBackend `json:"backends,omitempty"`
	// ToRoot is set when no backend has weight; traffic goes to the root
	// Service's own endpoints.
	ToRoot bool `json:"toRoot,omitempty"`
}

// WeightedBackend is one backend for one port. TargetPort is the backend
// Service's own targetPort for that port (named ports are resolved per
// backend pod by the caller, as for any Service).
type WeightedBackend struct {
	Service    string             `json:"service"`
	Weight     int64              `json:"weight"`
	TargetPort intstr.IntOrString `json:"targetPort"`
}

// Problems are the cross-object findings of NewPolicy (references that do
// not resolve, conflicting splits, ...), sorted. Decoding problems are
// returned by Decode.
func (p *Policy) Problems() []Problem { return append([]Problem(nil), p.problems...) }

// Grants returns the compiled TrafficTargets whose destination is dst,
// ordered by TrafficTarget.
func (p *Policy) Grants(dst Identity) []*Grant { return p.grants[dst] }

// Destinations lists every identity that has at least one Grant, sorted.
func (p *Policy) Destinations() []Identity {
	out := make([]Identity, 0, len(p.grants))
	for id := range p.grants {
		out = append(out, id)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// SplitPlan returns the split of Service namespace/name, if any.
func (p *Policy) SplitPlan(namespace, name string) (*SplitPlan, bool) {
	sp, ok := p.plans[namespace+"/"+name]
	return sp, ok
}

// SplitPlans returns every split plan, sorted by root.
func (p *Policy) SplitPlans() []*SplitPlan {
	out := make([]*SplitPlan, 0, len(p.plans))
	for _, sp := range p.plans {
		out = append(out, sp)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Root < out[j].Root })
	return out
}

type nsName struct{ ns, name string }

// NewPolicy compiles decoded objects (invalid ones are skipped, but named in
// reasons) and the cluster's Services. It never fails: every problem is
// reported against the object that has it and disables at most that object.
func NewPolicy(objs []Object, svcs []*corev1.Service) *Policy {
	p := &Policy{grants: map[Identity][]*Grant{}, invalid: map[Identity][]Ref{}, plans: map[string]*SplitPlan{}}
	services := map[nsName]*corev1.Service{}
	for _, s := range svcs {
		if s != nil {
			services[nsName{s.Namespace, s.Name}] = s
		}
	}
	groups := map[nsName]*HTTPRouteGroup{}
	tcps := map[nsName]*TCPRoute{}
	udps := map[nsName]*UDPRoute{}
	invalidRoutes := map[Ref]bool{}
	var splits []*TrafficSplit
	var targets []*TrafficTarget
	seen := map[Ref]bool{}
	for _, o := range objs {
		if o == nil {
			continue
		}
		m := o.GetMeta()
		if seen[m.Ref] {
			p.problems = append(p.problems, Problem{Severity: Warning, Object: m.Ref, Message: "appears more than once in the input; the first copy is used"})
			continue
		}
		seen[m.Ref] = true
		if m.Invalid {
			if tt, ok := o.(*TrafficTarget); ok {
				p.invalid[tt.Destination] = append(p.invalid[tt.Destination], m.Ref)
			}
			invalidRoutes[m.Ref] = true
			continue
		}
		k := nsName{m.Namespace, m.Name}
		switch x := o.(type) {
		case *HTTPRouteGroup:
			groups[k] = x
		case *TCPRoute:
			tcps[k] = x
		case *UDPRoute:
			udps[k] = x
		case *TrafficSplit:
			splits = append(splits, x)
		case *TrafficTarget:
			targets = append(targets, x)
		}
	}
	compiledGroups := map[nsName][]NamedMatch{}
	compileGroup := func(k nsName) []NamedMatch {
		if c, ok := compiledGroups[k]; ok {
			return c
		}
		g := groups[k]
		var out []NamedMatch
		for i, spec := range g.Matches {
			m, err := match.CompileHTTP(spec)
			if err != nil { // Decode already marked the group invalid
				continue
			}
			out = append(out, NamedMatch{Group: k.ns + "/" + k.name, Index: i, Match: m, Spec: spec})
		}
		compiledGroups[k] = out
		return out
	}

	// ---- TrafficTargets
	sort.Slice(targets, func(i, j int) bool { return targets[i].Ref.Less(targets[j].Ref) })
	for _, tt := range targets {
		ps := &problems{ref: tt.Ref}
		rulesField := "spec.rules"
		if strings.HasSuffix(tt.APIVersion, "/v1alpha1") {
			rulesField = "specs"
		}
		g := &Grant{Target: tt.Ref, Destination: tt.Destination, Port: tt.Port, Sources: tt.Sources}
		for i, r := range tt.Rules {
			gr := GrantRule{Index: i, Kind: r.Kind, Name: r.Name}
			path := fmt.Sprintf("%s[%d]", rulesField, i)
			k := nsName{tt.Namespace, r.Name}
			missing := func(ref Ref) {
				state := "not found"
				if invalidRoutes[ref] {
					state = "invalid (see its own problems)"
				}
				gr.Unusable = fmt.Sprintf("%s %s is %s", ref.Kind, ref.NamespacedName(), state)
				ps.warnf(path+".name", fmt.Sprintf("create %s %s or fix the name", ref.Kind, ref.NamespacedName()), "%s %q is %s; this rule allows nothing until it is", r.Kind, r.Name, state)
			}
			switch r.Kind {
			case KindHTTPRouteGroup:
				grp, ok := groups[k]
				if !ok {
					missing(Ref{KindHTTPRouteGroup, k.ns, k.name})
					break
				}
				all := compileGroup(k)
				if r.Matches == nil {
					gr.HTTP = all
				} else {
					for j, name := range r.Matches {
						found := false
						for _, nm := range all {
							if nm.Spec.Name == name {
								gr.HTTP = append(gr.HTTP, nm)
								found = true
							}
						}
						if !found {
							ps.warnf(fmt.Sprintf("%s.matches[%d]", path, j), fmt.Sprintf("use one of %s", matchNames(grp)), "%q is not a match of HTTPRouteGroup %s; it allows nothing", name, k.ns+"/"+k.name)
						}
					}
				}
				if len(gr.HTTP) == 0 && gr.Unusable == "" {
					gr.Unusable = fmt.Sprintf("no match of HTTPRouteGroup %s/%s is selected", k.ns, k.name)
				}
			case KindTCPRoute, KindUDPRoute:
				var pm PortMatch
				var ok bool
				if r.Kind == KindTCPRoute {
					var rt *TCPRoute
					if rt, ok = tcps[k]; ok {
						pm = rt.Match
					}
				} else {
					var rt *UDPRoute
					if rt, ok = udps[k]; ok {
						pm = rt.Match
					}
				}
				if !ok {
					missing(Ref{r.Kind, k.ns, k.name})
					break
				}
				if r.Matches != nil && !contains(r.Matches, pm.Name) {
					fix := fmt.Sprintf("select %q or omit matches", pm.Name)
					if pm.Name == "" {
						fix = "omit matches (the route's match has no name)"
					}
					gr.Unusable = fmt.Sprintf("%s %s/%s has match %q, which the rule does not select", r.Kind, k.ns, k.name, pm.Name)
					ps.warnf(path+".matches", fix, "does not name the match of %s %s/%s (%q); this rule allows nothing", r.Kind, k.ns, k.name, pm.Name)
					break
				}
				gr.MatchName = pm.Name
				gr.Ports = pm.Ports
			}
			g.Rules = append(g.Rules, gr)
		}
		p.grants[tt.Destination] = append(p.grants[tt.Destination], g)
		p.problems = append(p.problems, ps.out...)
	}

	// ---- TrafficSplits: the oldest valid split per root wins.
	sort.Slice(splits, func(i, j int) bool {
		a, b := splits[i], splits[j]
		if !a.Created.Equal(b.Created) {
			return a.Created.Before(b.Created)
		}
		return a.Ref.Less(b.Ref)
	})
	winner := map[nsName]*TrafficSplit{}
	var winners []*TrafficSplit
	for _, ts := range splits {
		k := nsName{ts.Namespace, ts.Service}
		if w, ok := winner[k]; ok {
			p.problems = append(p.problems, Problem{Severity: Warning, Object: ts.Ref, Field: "spec.service",
				Message: fmt.Sprintf("%q is already split by TrafficSplit %s, which is older; this TrafficSplit is ignored (splits are not merged; the oldest wins)", ts.Service, w.NamespacedName()),
				Fix:     fmt.Sprintf("merge the backends into TrafficSplit %s and delete this one", w.NamespacedName())})
			continue
		}
		winner[k] = ts
		winners = append(winners, ts)
	}
	for _, ts := range winners {
		ps := &problems{ref: ts.Ref}
		root, ok := services[nsName{ts.Namespace, ts.Service}]
		if !ok {
			ps.warnf("spec.service", fmt.Sprintf("create Service %s/%s or fix the name", ts.Namespace, ts.Service), "Service %q not found; the split does nothing until it exists", ts.Service)
			p.problems = append(p.problems, ps.out...)
			continue
		}
		plan := &SplitPlan{Split: ts.Ref, Root: ts.Namespace + "/" + ts.Service, MatchAll: len(ts.Matches) == 0}
		for i, gname := range ts.Matches {
			k := nsName{ts.Namespace, gname}
			if _, ok := groups[k]; !ok {
				state := "not found"
				if invalidRoutes[Ref{KindHTTPRouteGroup, k.ns, k.name}] {
					state = "invalid (see its own problems)"
				}
				ps.warnf(fmt.Sprintf("spec.matches[%d].name", i), fmt.Sprintf("create HTTPRouteGroup %s/%s or fix the name", k.ns, k.name), "HTTPRouteGroup %q is %s; its matches select nothing", gname, state)
				continue
			}
			plan.Matches = append(plan.Matches, compileGroup(k)...)
		}
		if !plan.MatchAll && len(plan.Matches) == 0 {
			ps.warnf("spec.matches", "fix the HTTPRouteGroup references", "select no request; all traffic goes to the root Service")
		}
		// Backends: existence, self-reference, nesting.
		type resolved struct {
			b     Backend
			index int
			svc   *corev1.Service
		}
		var rs []resolved
		for i, b := range ts.Backends {
			path := fmt.Sprintf("spec.backends[%d].service", i)
			if b.Service == ts.Service {
				ps.warnf(path, "point the backend at a version-specific Service", "%q is the root Service itself; its share goes to the root Service's own endpoints (which usually include every version), not through this split again", b.Service)
			} else if w, nested := winner[nsName{ts.Namespace, b.Service}]; nested {
				ps.warnf(path, "point the backend at a Service that is not split, or flatten the two splits", "%q is the root of TrafficSplit %s; splits are not hierarchical, so this share goes straight to %q's own endpoints", b.Service, w.NamespacedName(), b.Service)
			}
			svc, ok := services[nsName{ts.Namespace, b.Service}]
			if !ok {
				ps.warnf(path, fmt.Sprintf("create Service %s/%s, or remove the backend", ts.Namespace, b.Service), "Service %q not found; the backend is skipped until it exists", b.Service)
				continue
			}
			rs = append(rs, resolved{b, i, svc})
		}
		rootPorts := append([]corev1.ServicePort(nil), root.Spec.Ports...)
		sort.Slice(rootPorts, func(i, j int) bool {
			if rootPorts[i].Port != rootPorts[j].Port {
				return rootPorts[i].Port < rootPorts[j].Port
			}
			return proto(rootPorts[i].Protocol) < proto(rootPorts[j].Protocol)
		})
		var sum int64
		for _, r := range rs {
			sum += r.b.Weight
		}
		for _, rp := range rootPorts {
			psplit := PortSplit{Port: rp.Port, Protocol: proto(rp.Protocol)}
			var total int64
			for _, r := range rs {
				bp, ok := findPort(r.svc, rp.Port, proto(rp.Protocol))
				if !ok {
					ps.warnf(fmt.Sprintf("spec.backends[%d].service", r.index), fmt.Sprintf("add port %d/%s to Service %s/%s", rp.Port, proto(rp.Protocol), ts.Namespace, r.b.Service),
						"Service %q has no port %d/%s, which the root Service exposes; it gets no traffic on that port", r.b.Service, rp.Port, proto(rp.Protocol))
					continue
				}
				tp := bp.TargetPort
				if tp.Type == intstr.Int && tp.IntVal == 0 && tp.StrVal == "" {
					tp = intstr.FromInt32(bp.Port) // targetPort defaults to port
				}
				psplit.Backends = append(psplit.Backends, WeightedBackend{Service: r.b.Service, Weight: r.b.Weight, TargetPort: tp})
				total += r.b.Weight
			}
			if total == 0 {
				psplit.ToRoot = true
			}
			plan.Ports = append(plan.Ports, psplit)
		}
		if sum == 0 && len(rs) > 0 {
			ps.warnf("spec.backends", "give at least one backend a positive weight", "all weights are 0; traffic goes to the root Service")
		}
		p.plans[plan.Root] = plan
		p.problems = append(p.problems, ps.out...)
	}
	SortProblems(p.problems)
	return p
}

func proto(p corev1.Protocol) corev1.Protocol {
	if p == "" {
		return corev1.ProtocolTCP
	}
	return p
}

func findPort(svc *corev1.Service, port int32, pr corev1.Protocol) (corev1.ServicePort, bool) {
	for _, sp := range svc.Spec.Ports {
		if sp.Port == port && proto(sp.Protocol) == pr {
			return sp, true
		}
	}
	return corev1.ServicePort{}, false
}

func matchNames(g *HTTPRouteGroup) string {
	var names []string
	for _, m := range g.Matches {
		if m.Name != "" {
			names = append(names, fmt.Sprintf("%q", m.Name))
		}
	}
	if len(names) == 0 {
		return "no name (the group's matches are unnamed; omit matches to use them all)"
	}
	return strings.Join(names, ", ")
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}
