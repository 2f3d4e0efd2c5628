package smi

import (
	"fmt"
	"strings"

	"github.com/trellis-mesh/trellis/smi/match"
)

// Reason explains an access decision. Message is the sentence the kubectl
// plugin's "why" command and the proxy's 403 body print; the other fields
// are the same facts for programs.
type Reason struct {
	Allowed bool `json:"allowed"`
	// For an allow: the TrafficTarget, rule and match that allowed it.
	TrafficTarget string `json:"trafficTarget,omitempty"` // namespace/name
	Rule          int    `json:"rule"`                    // index in rules (specs in v1alpha1); -1 if none
	RuleKind      Kind   `json:"ruleKind,omitempty"`
	RuleName      string `json:"ruleName,omitempty"`
	Match         string `json:"match,omitempty"` // match name, or #index when unnamed
	Message       string `json:"message"`
}

// String is Message.
func (r Reason) String() string { return r.Message }

// Allowed decides whether pods running as src may send req to pods running
// as dst. Access is denied unless a valid TrafficTarget whose destination is
// dst lists src as a source and has a rule that selects req (SMI access
// control is default-deny and additive). An HTTPRouteGroup rule selects HTTP
// requests by its matches; a TCPRoute rule selects every connection over TCP
// (HTTP included) to its ports; a UDPRoute rule selects UDP to its ports.
func (p *Policy) Allowed(src, dst Identity, req Request) (bool, Reason) {
	grants := p.grants[dst]
	deny := func(format string, args ...any) (bool, Reason) {
		msg := "denied: " + fmt.Sprintf(format, args...)
		if inv := p.invalid[dst]; len(inv) > 0 {
			names := make([]string, len(inv))
			for i, r := range inv {
				names[i] = r.NamespacedName()
			}
			msg += fmt.Sprintf("; note: TrafficTarget %s for this destination is invalid and disabled (see its problems)", strings.Join(names, ", "))
		}
		return false, Reason{Rule: -1, Message: msg}
	}
	if len(grants) == 0 {
		return deny("no TrafficTarget has destination ServiceAccount %s (access is denied by default; create a TrafficTarget in namespace %s)", dst, dst.Namespace)
	}
	var withSource []*Grant
	var names []string
	for _, g := range grants {
		names = append(names, g.Target.NamespacedName())
		for _, s := range g.Sources {
			if s == src {
				withSource = append(withSource, g)
				break
			}
		}
	}
	if len(withSource) == 0 {
		return deny("TrafficTarget %s has destination ServiceAccount %s but none lists source ServiceAccount %s", strings.Join(names, ", "), dst, src)
	}
	var misses []string
	for _, g := range withSource {
		var why []string
		if g.Port != 0 && g.Port != req.Port {
			misses = append(misses, fmt.Sprintf("TrafficTarget %s allows destination port %d only", g.Target.NamespacedName(), g.Port))
			continue
		}
		for _, r := range g.Rules {
			label := fmt.Sprintf("rule %d (%s %s)", r.Index, r.Kind, r.Name)
			if r.Unusable != "" {
				why = append(why, label+": "+r.Unusable)
				continue
			}
			switch r.Kind {
			case KindHTTPRouteGroup:
				if req.Protocol != HTTP {
					why = append(why, label+": selects HTTP requests only")
					continue
				}
				for _, nm := range r.HTTP {
					if nm.Match.Match(req.Method, req.Path, req.Header) {
						return true, Reason{Allowed: true, TrafficTarget: g.Target.NamespacedName(), Rule: r.Index, RuleKind: r.Kind, RuleName: r.Name, Match: nm.Label(),
							Message: fmt.Sprintf("allowed by TrafficTarget %s rule %d (HTTPRouteGroup %s, match %q)", g.Target.NamespacedName(), r.Index, r.Name, nm.Label())}
					}
				}
				why = append(why, fmt.Sprintf("%s: no match among %s", label, labels(r.HTTP)))
			case KindTCPRoute, KindUDPRoute:
				want := TCP
				if r.Kind == KindUDPRoute {
					want = UDP
				}
				if req.Protocol == UDP && want == TCP || req.Protocol != UDP && want == UDP {
					why = append(why, fmt.Sprintf("%s: selects %s only", label, strings.ToUpper(string(want))))
					continue
				}
				if !match.Ports(r.Ports, req.Port) {
					why = append(why, fmt.Sprintf("%s: port %d is not in %v", label, req.Port, r.Ports))
					continue
				}
				m := r.MatchName
				if m == "" {
					m = "#0"
				}
				return true, Reason{Allowed: true, TrafficTarget: g.Target.NamespacedName(), Rule: r.Index, RuleKind: r.Kind, RuleName: r.Name, Match: m,
					Message: fmt.Sprintf("allowed by TrafficTarget %s rule %d (%s %s, %s)", g.Target.NamespacedName(), r.Index, r.Kind, r.Name, portsText(r.Ports))}
			}
		}
		misses = append(misses, fmt.Sprintf("TrafficTarget %s: %s", g.Target.NamespacedName(), strings.Join(why, "; ")))
	}
	return deny("source ServiceAccount %s is listed but no rule selects %s: %s", src, req, strings.Join(misses, "; "))
}

func labels(ms []NamedMatch) string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = fmt.Sprintf("%q", m.Label())
	}
	return "[" + strings.Join(out, ", ") + "]"
}

func portsText(ps []int32) string {
	if len(ps) == 0 {
		return "all ports"
	}
	return fmt.Sprintf("ports %v", ps)
}

// SplitDecision says where a request to a root Service goes.
type SplitDecision struct {
	// TrafficSplit is namespace/name of the split that applied, if any.
	TrafficSplit string `json:"trafficSplit,omitempty"`
	// ToRoot: send to the root Service's own endpoints (no split applies,
	// the request is not selected by the split's matches, or no backend
	// has weight).
	ToRoot bool `json:"toRoot"`
	// Backends with positive weight, in the split's order.
	Backends []WeightedBackend `json:"backends,omitempty"`
	Reason   string            `json:"reason"`
}

// Split decides how a request to root Service namespace/name on root port
// req.Port is split. Matches of the split (v1alpha3+) select HTTP requests;
// a request they do not select, and any non-HTTP traffic to a split with
// matches, goes to the root Service.
func (p *Policy) Split(namespace, name string, req Request) SplitDecision {
	plan, ok := p.plans[namespace+"/"+name]
	if !ok {
		return SplitDecision{ToRoot: true, Reason: fmt.Sprintf("no TrafficSplit applies to Service %s/%s", namespace, name)}
	}
	ts := plan.Split.NamespacedName()
	if !plan.MatchAll {
		if req.Protocol != HTTP {
			return SplitDecision{ToRoot: true, Reason: fmt.Sprintf("TrafficSplit %s has matches, which select HTTP requests only; %s traffic goes to the root Service", ts, strings.ToUpper(string(req.Protocol)))}
		}
		hit := ""
		for _, nm := range plan.Matches {
			if nm.Match.Match(req.Method, req.Path, req.Header) {
				hit = fmt.Sprintf("HTTPRouteGroup %s match %q", nm.Group, nm.Label())
				break
			}
		}
		if hit == "" {
			return SplitDecision{ToRoot: true, Reason: fmt.Sprintf("%s does not match TrafficSplit %s's matches; it goes to the root Service", req, ts)}
		}
		d := p.splitPort(plan, req)
		if !d.ToRoot {
			d.Reason += " (selected by " + hit + ")"
		}
		return d
	}
	return p.splitPort(plan, req)
}

func (p *Policy) splitPort(plan *SplitPlan, req Request) SplitDecision {
	ts := plan.Split.NamespacedName()
	for _, ps := range plan.Ports {
		if ps.Port != req.Port || (req.Protocol == UDP) != (ps.Protocol == "UDP") {
			continue
		}
		if ps.ToRoot {
			return SplitDecision{TrafficSplit: ts, ToRoot: true, Reason: fmt.Sprintf("TrafficSplit %s has no backend with weight on port %d; traffic goes to the root Service", ts, req.Port)}
		}
		d := SplitDecision{TrafficSplit: ts}
		var parts []string
		for _, b := range ps.Backends {
			if b.Weight > 0 {
				d.Backends = append(d.Backends, b)
				parts = append(parts, fmt.Sprintf("%s=%d", b.Service, b.Weight))
			}
		}
		d.Reason = fmt.Sprintf("split by TrafficSplit %s: %s", ts, strings.Join(parts, ", "))
		return d
	}
	return SplitDecision{TrafficSplit: ts, ToRoot: true, Reason: fmt.Sprintf("root Service %s has no port %d/%s; TrafficSplit %s does not apply", plan.Root, req.Port, strings.ToUpper(string(protoOf(req))), ts)}
}

func protoOf(r Request) Protocol {
	if r.Protocol == UDP {
		return UDP
	}
	return TCP
}
