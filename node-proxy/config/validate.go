package config

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"

	"github.com/trellis-mesh/trellis/smi/match"
)

// FieldError is one problem at one field path, e.g.
// `services[3].ports[0].targetPort: must be 1-65535, got 0`.
type FieldError struct {
	Path string
	Msg  string
}

func (e FieldError) Error() string { return e.Path + ": " + e.Msg }

// ValidationError lists every problem found in a config.
type ValidationError struct {
	Problems []FieldError
}

func (e *ValidationError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "config is invalid (%d problem", len(e.Problems))
	if len(e.Problems) != 1 {
		b.WriteByte('s')
	}
	b.WriteString("):")
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.Error())
	}
	return b.String()
}

// maxProblems bounds the report so a huge broken config gives a readable one.
const maxProblems = 50

type validator struct {
	probs   []FieldError
	checked map[string]error // HTTP match specs checked, by HTTPSpec.Key
}

func (v *validator) add(path, format string, args ...any) {
	if len(v.probs) < maxProblems {
		v.probs = append(v.probs, FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
	}
}

func (v *validator) port(path string, p int32) {
	if p < 1 || p > 65535 {
		v.add(path, "must be 1-65535, got %d", p)
	}
}

func (v *validator) dur(path string, d Duration, max Duration) {
	if d < 0 {
		v.add(path, "must not be negative")
	}
	if max > 0 && d > max {
		v.add(path, "must be at most %s, got %s", max.D(), d.D())
	}
}

// Validate checks c as a whole: ranges, references between objects, and
// conflicts (duplicate names, ports and IPs). It returns a *ValidationError
// listing every problem with its field path, or nil.
func (c *Config) Validate() error {
	v := &validator{}
	if c.Version == "" {
		v.add("version", "must be set; the producer sets it to Config.Hash()")
	}
	if c.Node == "" {
		v.add("node", "must name the node this config was compiled for")
	}
	if c.MeshDomain != "" && !isDNSName(c.MeshDomain) {
		v.add("meshDomain", "%q is not a DNS name (lower-case labels of a-z, 0-9 and '-', separated by dots)", c.MeshDomain)
	}
	if c.Listeners.HTTP < 0 || c.Listeners.HTTP > 65535 {
		v.add("listeners.http", "must be 0 (off) or 1-65535, got %d", c.Listeners.HTTP)
	}
	switch c.ACL {
	case "", ACLOn, ACLOff:
	default:
		v.add("acl", "must be \"on\" or \"off\", got %q", c.ACL)
	}

	byKey := make(map[string]int, len(c.Services))
	for i := range c.Services {
		s := &c.Services[i]
		path := fmt.Sprintf("services[%d]", i)
		if !isLabel(s.Namespace) {
			v.add(path+".namespace", "%q is not a valid namespace name (a DNS-1123 label)", s.Namespace)
		}
		if !isLabel(s.Name) {
			v.add(path+".name", "%q is not a valid Service name (a DNS-1123 label)", s.Name)
		}
		if j, dup := byKey[s.Key()]; dup {
			v.add(path, "Service %s is listed twice (also services[%d]); list it once", s.Key(), j)
			continue
		}
		byKey[s.Key()] = i
	}

	tcpPorts := map[int32]string{}
	udpPorts := map[int32]string{}
	for i := range c.Services {
		s := &c.Services[i]
		path := fmt.Sprintf("services[%d]", i)
		v.service(path, c, s, byKey, tcpPorts, udpPorts)
	}

	podIPs := make(map[netip.Addr]int, len(c.LocalPods))
	for i, p := range c.LocalPods {
		path := fmt.Sprintf("localPods[%d]", i)
		ip, ok := v.ip(path+".ip", p.IP)
		if ok {
			if j, dup := podIPs[ip]; dup {
				v.add(path+".ip", "%s is also localPods[%d].ip; a pod IP identifies one pod", p.IP, j)
			}
			podIPs[ip] = i
		}
		v.identity(path+".identity", p.Identity)
	}

	names := map[string]int{}
	for i, p := range c.Plugins {
		path := fmt.Sprintf("plugins[%d]", i)
		if p.Name == "" {
			v.add(path+".name", "must be set")
		} else if j, dup := names[p.Name]; dup {
			v.add(path+".name", "%q is also plugins[%d].name", p.Name, j)
		}
		names[p.Name] = i
		v.plugin(path, &p)
	}
	for i := range c.Services {
		for k, name := range c.Services[i].Plugins {
			if _, ok := names[name]; !ok {
				v.add(fmt.Sprintf("services[%d].plugins[%d]", i, k), "%q is not in plugins", name)
			}
		}
	}

	if len(v.probs) == 0 {
		return nil
	}
	return &ValidationError{Problems: v.probs}
}

func (v *validator) plugin(path string, p *Plugin) {
	if p.Version == "" {
		v.add(path+".version", "must be set (a content hash: proxies compile each version once)")
	}
	if p.Module == "" || strings.ContainsAny(p.Module, " \\") || strings.HasPrefix(p.Module, "/") || strings.HasSuffix(p.Module, "/") {
		v.add(path+".module", "must be a Go import path such as github.com/acme/addheader, got %q", p.Module)
	}
	if len(p.Files) == 0 {
		v.add(path+".files", "must hold the plugin's Go source files")
	}
	for name := range p.Files {
		if name == "" || strings.HasPrefix(name, "/") || strings.Contains(name, "..") || !strings.HasSuffix(name, ".go") {
			v.add(path+".files", "%q: must be a relative path to a .go file inside the module", name)
		}
	}
	if len(p.Config) > 0 && !json.Valid(p.Config) {
		v.add(path+".config", "must be JSON")
	}
	switch p.Stage {
	case "", StageAfterAccess, StageBeforeAccess:
	default:
		v.add(path+".stage", "must be %q or %q, got %q", StageAfterAccess, StageBeforeAccess, p.Stage)
	}
	switch p.FailurePolicy {
	case "", FailClosed, FailOpen:
	default:
		v.add(path+".failurePolicy", "must be %q or %q, got %q", FailClosed, FailOpen, p.FailurePolicy)
	}
}

func (v *validator) ip(path, s string) (netip.Addr, bool) {
	ip, err := netip.ParseAddr(s)
	if err != nil || ip.Zone() != "" {
		v.add(path, "%q is not an IP address", s)
		return netip.Addr{}, false
	}
	return ip.Unmap(), true
}

func (v *validator) identity(path string, id Identity) {
	if !isLabel(id.Namespace) {
		v.add(path+".namespace", "%q is not a valid namespace name", id.Namespace)
	}
	if !isSubdomain(id.ServiceAccount) {
		v.add(path+".serviceAccount", "%q is not a valid ServiceAccount name", id.ServiceAccount)
	}
}

func (v *validator) service(path string, c *Config, s *Service, byKey map[string]int, tcpPorts, udpPorts map[int32]string) {
	if len(s.Ports) == 0 {
		v.add(path+".ports", "must list at least one port")
	}
	portNums := map[int32]int{}
	portNames := map[string]int{}
	allHTTP := true
	for j, p := range s.Ports {
		pp := fmt.Sprintf("%s.ports[%d]", path, j)
		v.port(pp+".port", p.Port)
		v.port(pp+".targetPort", p.TargetPort)
		if k, dup := portNums[p.Port]; dup {
			v.add(pp+".port", "%d is also ports[%d].port", p.Port, k)
		}
		portNums[p.Port] = j
		if p.Name != "" {
			if k, dup := portNames[p.Name]; dup {
				v.add(pp+".name", "%q is also ports[%d].name", p.Name, k)
			}
			portNames[p.Name] = j
		}
		if p.Protocol != ProtocolHTTP {
			allHTTP = false
		}
		switch p.Protocol {
		case ProtocolHTTP:
			switch p.Scheme {
			case "", SchemeHTTP, SchemeH2C, SchemeHTTPS:
			default:
				v.add(pp+".scheme", "must be http, h2c or https, got %q", p.Scheme)
			}
			if p.TLS != nil && p.Scheme != SchemeHTTPS {
				v.add(pp+".tls", "is only used with scheme https; remove it or set scheme: https")
			}
			if p.TLS != nil && p.TLS.ServerName != "" && !isDNSName(strings.ToLower(p.TLS.ServerName)) {
				v.add(pp+".tls.serverName", "%q is not a DNS name", p.TLS.ServerName)
			}
			if p.ListenPort != 0 {
				v.add(pp+".listenPort", "must be 0 for http ports: they share listeners.http")
			}
		case ProtocolTCP, ProtocolUDP:
			if p.Scheme != "" {
				v.add(pp+".scheme", "is only for http ports; remove it")
			}
			if p.TLS != nil {
				v.add(pp+".tls", "is only for http ports with scheme https; remove it")
			}
			v.port(pp+".listenPort", p.ListenPort)
			used := tcpPorts
			if p.Protocol == ProtocolUDP {
				used = udpPorts
			}
			if other, dup := used[p.ListenPort]; dup && p.ListenPort != 0 {
				v.add(pp+".listenPort", "%s port %d is already used by %s", p.Protocol, p.ListenPort, other)
			} else if p.ListenPort != 0 {
				used[p.ListenPort] = pp
			}
			if p.Protocol == ProtocolTCP && p.ListenPort != 0 && p.ListenPort == c.Listeners.HTTP {
				v.add(pp+".listenPort", "%d is listeners.http", p.ListenPort)
			}
		default:
			v.add(pp+".protocol", "must be http, tcp or udp, got %q", p.Protocol)
		}
	}

	ips := map[netip.Addr]int{}
	for j, e := range s.Endpoints {
		ep := fmt.Sprintf("%s.endpoints[%d]", path, j)
		if ip, ok := v.ip(ep+".ip", e.IP); ok {
			if k, dup := ips[ip]; dup {
				v.add(ep+".ip", "%s is also endpoints[%d].ip", e.IP, k)
			}
			ips[ip] = j
		}
		for name, port := range e.Ports {
			if _, ok := portNames[name]; !ok || name == "" {
				v.add(ep+".ports["+name+"]", "no port of this Service is named %q", name)
			}
			v.port(ep+".ports["+name+"]", port)
		}
	}

	if sp := s.Split; sp != nil {
		v.split(path+".split", c, s, sp, byKey, allHTTP)
	}

	for j, r := range s.Rules {
		rp := fmt.Sprintf("%s.rules[%d]", path, j)
		if r.Source == "" {
			v.add(rp+".source", "must say which policy this rule comes from; it is shown in 403 reasons")
		}
		if len(r.Sources) == 0 {
			v.add(rp+".sources", "must list at least one identity")
		}
		for k, id := range r.Sources {
			v.identity(fmt.Sprintf("%s.sources[%d]", rp, k), id)
		}
		for k, p := range r.Ports {
			if _, ok := portNums[p]; !ok {
				v.add(fmt.Sprintf("%s.ports[%d]", rp, k), "%d is not a port of Service %s", p, s.Key())
			}
		}
		v.matches(rp+".http", r.HTTP)
	}

	v.resilience(path+".resilience", &s.Resilience)
}

func (v *validator) matches(path string, ms []match.HTTPSpec) {
	for k, m := range ms {
		// Many rules name the same HTTPRouteGroup match: check each
		// distinct spec once.
		key := m.Key()
		err, seen := v.checked[key]
		if !seen {
			err = match.CheckHTTP(m)
			if v.checked == nil {
				v.checked = map[string]error{}
			}
			v.checked[key] = err
		}
		if err != nil {
			v.add(fmt.Sprintf("%s[%d]", path, k), "%v", err)
		}
	}
}

func (v *validator) split(path string, c *Config, root *Service, sp *Split, byKey map[string]int, allHTTP bool) {
	if len(sp.Backends) == 0 {
		v.add(path+".backends", "must list at least one backend")
	}
	var total int64
	seen := map[string]int{}
	for k, b := range sp.Backends {
		bp := fmt.Sprintf("%s.backends[%d]", path, k)
		if b.Weight < 0 {
			v.add(bp+".weight", "must not be negative, got %d", b.Weight)
		}
		total += int64(b.Weight)
		if j, dup := seen[b.Service]; dup {
			v.add(bp+".service", "%q is also backends[%d]; merge their weights", b.Service, j)
		}
		seen[b.Service] = k
		idx, ok := byKey[root.Namespace+"/"+b.Service]
		if !ok {
			v.add(bp+".service", "Service %s/%s is not in services; a backend must be a meshed Service in the root's namespace", root.Namespace, b.Service)
			continue
		}
		be := &c.Services[idx]
		for _, rp := range root.Ports {
			found := false
			for _, p := range be.Ports {
				if p.Port == rp.Port {
					found = true
					if p.Protocol != rp.Protocol {
						v.add(bp+".service", "port %d of backend %s is %s but the root's is %s", rp.Port, be.Key(), p.Protocol, rp.Protocol)
					}
				}
			}
			if !found {
				v.add(bp+".service", "backend %s has no port %d, which root %s serves", be.Key(), rp.Port, root.Key())
			}
		}
	}
	if len(sp.Backends) > 0 && total == 0 {
		v.add(path+".backends", "all weights are 0; at least one backend must weigh more than 0")
	}
	if total > 1<<31-1 {
		v.add(path+".backends", "weights add up to more than 2^31-1")
	}
	if len(sp.Matches) > 0 && !allHTTP {
		v.add(path+".matches", "HTTP matches need every port of %s to be http", root.Key())
	}
	v.matches(path+".matches", sp.Matches)
}

func (v *validator) resilience(path string, r *Resilience) {
	const day = Duration(24 * 3600 * 1e9)
	v.dur(path+".timeout", r.Timeout, day)
	v.dur(path+".connectTimeout", r.ConnectTimeout, Duration(5*60*1e9))
	v.dur(path+".udpIdleTimeout", r.UDPIdleTimeout, day)
	if rt := r.Retries; rt != nil {
		p := path + ".retries"
		if rt.Attempts < 1 || rt.Attempts > 10 {
			v.add(p+".attempts", "must be 1-10 (tries including the first), got %d", rt.Attempts)
		}
		v.dur(p+".perTryTimeout", rt.PerTryTimeout, day)
		v.dur(p+".backoffBase", rt.BackoffBase, Duration(60*1e9))
		v.dur(p+".backoffMax", rt.BackoffMax, Duration(5*60*1e9))
		if rt.BackoffMax != 0 && rt.BackoffBase > rt.BackoffMax {
			v.add(p+".backoffBase", "%s is larger than backoffMax %s", rt.BackoffBase.D(), rt.BackoffMax.D())
		}
		for k, code := range rt.On {
			if code < 100 || code > 599 {
				v.add(fmt.Sprintf("%s.on[%d]", p, k), "must be an HTTP status 100-599, got %d", code)
			}
		}
		if rt.Budget < 0 || rt.Budget > 1 || rt.Budget != rt.Budget {
			v.add(p+".budget", "must be 0-1 (retries per request), got %v", rt.Budget)
		}
		if rt.MaxBodyBytes < 0 || rt.MaxBodyBytes > 16<<20 {
			v.add(p+".maxBodyBytes", "must be 0-16777216, got %d", rt.MaxBodyBytes)
		}
	}
	if cb := r.CircuitBreaker; cb != nil {
		p := path + ".circuitBreaker"
		if cb.ConsecutiveFailures < 0 {
			v.add(p+".consecutiveFailures", "must not be negative")
		}
		if cb.FailureRatio < 0 || cb.FailureRatio > 1 || cb.FailureRatio != cb.FailureRatio {
			v.add(p+".failureRatio", "must be in (0, 1], got %v", cb.FailureRatio)
		}
		if cb.ConsecutiveFailures == 0 && cb.FailureRatio == 0 {
			v.add(p, "set consecutiveFailures, failureRatio or both")
		}
		if cb.MinRequests < 0 {
			v.add(p+".minRequests", "must not be negative")
		}
		v.dur(p+".window", cb.Window, day)
		v.dur(p+".openFor", cb.OpenFor, day)
	}
	if rl := r.RateLimit; rl != nil {
		p := path + ".rateLimit"
		if !(rl.RPS > 0) || rl.RPS > 1e9 {
			v.add(p+".rps", "must be > 0 and at most 1e9, got %v", rl.RPS)
		}
		if rl.Burst < 0 {
			v.add(p+".burst", "must not be negative")
		}
	}
	if o := r.Outlier; o != nil {
		p := path + ".outlier"
		if o.Consecutive < -1 {
			v.add(p+".consecutive", "must be -1 (off), 0 (default 5) or more, got %d", o.Consecutive)
		}
		v.dur(p+".baseEjection", o.BaseEjection, day)
		v.dur(p+".maxEjection", o.MaxEjection, day)
		if o.MaxEjectedPercent < 0 || o.MaxEjectedPercent > 100 {
			v.add(p+".maxEjectedPercent", "must be 0-100, got %d", o.MaxEjectedPercent)
		}
	}
}

// isLabel reports whether s is a DNS-1123 label (Kubernetes names of
// namespaces and Services).
func isLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i > 0 && i < len(s)-1:
		default:
			return false
		}
	}
	return true
}

// isSubdomain reports whether s is a DNS-1123 subdomain (ServiceAccount names).
func isSubdomain(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if !isLabel(l) {
			return false
		}
	}
	return true
}

func isDNSName(s string) bool { return isSubdomain(s) }
