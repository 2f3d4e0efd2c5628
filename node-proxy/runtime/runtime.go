package runtime

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/trellis-mesh/trellis/node-proxy/balance"
	"github.com/trellis-mesh/trellis/node-proxy/config"
	"github.com/trellis-mesh/trellis/node-proxy/plugin"
	"github.com/trellis-mesh/trellis/node-proxy/resilience"
	"github.com/trellis-mesh/trellis/smi/match"
)

// Identity is the identity of a traffic source. It is a plain value: today
// it comes from the source address of a local pod, with mTLS it will come
// from the peer certificate.
type Identity = config.Identity

// Source is what the proxy knows about a client.
type Source struct {
	Identity Identity
	Known    bool   // false: the address is not a pod on this node
	Pod      string // pod name, "" if unknown
	Service  string // a meshed Service the pod backs ("ns/name"), for metrics
}

// Service is the live side of one config.Service.
type Service struct {
	Namespace, Name string
	Key             string
	Limiter         *rate.Limiter
	Retry           *resilience.Retry
	Timeout         time.Duration
	ConnectTimeout  time.Duration
	UDPIdleTimeout  time.Duration
	// TCPIdleTimeout closes a TCP connection after this long without a
	// byte in either direction. The config has no field for it yet, so it
	// is DefaultTCPIdleTimeout for every service.
	TCPIdleTimeout time.Duration
	cfg            *config.Service
}

// DefaultTCPIdleTimeout is the TCP idle timeout of every service (as
// Envoy's tcp_proxy default): long enough for pooled database connections,
// short enough that connections whose peers vanished do not pile up.
const DefaultTCPIdleTimeout = time.Hour

// Target is one (backend service, port): where a request or connection
// finally goes.
type Target struct {
	Service   *Service
	Port      config.ServicePort
	Pool      *balance.Pool
	Breaker   *resilience.Breaker
	Scheme    config.Scheme
	TLS       *tls.Config // for https
	targetKey string
}

// Rule is a compiled access rule.
type Rule struct {
	Source  string
	Sources []Identity
	Ports   []int32
	HTTP    []*match.HTTP
}

// Route is what a request to one (service, port) does.
type Route struct {
	Service *Service
	Port    config.ServicePort
	Own     *Target // the service's own endpoints
	// Split, when set, chooses the Target per request/connection.
	Split   *balance.Split[*Target]
	Matches []*match.HTTP // A/B: split applies only when one matches
	ACL     bool
	Rules   []Rule
	// NeedsHeaders is true when an access rule or split match of this
	// route looks at request headers; otherwise AllowHTTP and Choose may be
	// given a nil header.
	NeedsHeaders bool
	// Plugins are the Service's middleware plugins, instantiated, one
	// chain per stage (Plugins.Before, Plugins.After); nil when the Service
	// has none, and for tcp and udp ports. Shared by the Service's routes.
	Plugins *plugin.Chains
}

// HasPlugins reports whether requests over r go through plugins (and so
// need a net/http ResponseWriter and Request).
func (r *Route) HasPlugins() bool { return r.Plugins != nil }

// Runtime is an immutable compiled config.
type Runtime struct {
	Config  *config.Config
	Version string
	hosts   map[string]*Route
	TCP     map[int32]*Route // by listen port
	UDP     map[int32]*Route
	sources map[netip.Addr]Source
	states  map[netip.AddrPort]*balance.State
	targets map[string]*Target
	svcs    map[string]*Service
	matches map[string]*match.HTTP // compiled matches by HTTPSpec.Key
	// Routes lists every route, sorted as in the config.
	Routes []*Route
	// Plugins are the config's plugins, compiled (nil without plugins).
	Plugins *plugin.Set
}

// PluginErrors lists the plugins that did not load, and the (plugin,
// Service) pairs whose New failed: for /debug/config and logs. The
// Services using them run without them or answer 503, by each plugin's
// failure policy.
func (rt *Runtime) PluginErrors() []*plugin.LoadError { return rt.Plugins.Errors() }

// Hooks let telemetry observe events of pools and breakers, and give
// plugins their environment.
type Hooks struct {
	OnEject         func(t *Target, e *balance.Endpoint, d time.Duration)
	OnBreakerChange func(t *Target, s resilience.BreakerState)
	// Plugins is the environment of plugins: logger, metrics, timeouts.
	// nil: the previous runtime's, else defaults (no logs, unregistered
	// metrics).
	Plugins *plugin.Env
}

// Build compiles cfg. prev (may be nil) donates live state for unchanged
// parts. On error nothing is shared or changed.
func Build(cfg *config.Config, prev *Runtime, hooks Hooks) (*Runtime, error) {
	if cfg == nil {
		return nil, errors.New("runtime: nil config")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	rt := &Runtime{
		Config:  cfg,
		Version: cfg.Version,
		hosts:   make(map[string]*Route),
		TCP:     make(map[int32]*Route),
		UDP:     make(map[int32]*Route),
		sources: make(map[netip.Addr]Source, len(cfg.LocalPods)),
		states:  make(map[netip.AddrPort]*balance.State),
		targets: make(map[string]*Target),
		svcs:    make(map[string]*Service),
	}
	if prev == nil {
		prev = &Runtime{}
	}
	domain := cfg.Domain()

	// Services first (limiters, policies), then targets, then routes.
	for i := range cfg.Services {
		cs := &cfg.Services[i]
		s := &Service{Namespace: cs.Namespace, Name: cs.Name, Key: cs.Key(), cfg: cs,
			Timeout: cs.Resilience.Timeout.D(), ConnectTimeout: cs.Resilience.ConnectTimeout.D(),
			UDPIdleTimeout: cs.Resilience.UDPIdleTimeout.D(), TCPIdleTimeout: DefaultTCPIdleTimeout}
		if s.ConnectTimeout == 0 {
			s.ConnectTimeout = 2 * time.Second
		}
		if s.UDPIdleTimeout == 0 {
			s.UDPIdleTimeout = time.Minute
		}
		old := prev.svcs[s.Key]
		if old != nil && reflect.DeepEqual(old.cfg.Resilience.RateLimit, cs.Resilience.RateLimit) {
			s.Limiter = old.Limiter
		} else {
			s.Limiter = resilience.NewLimiter(cs.Resilience.RateLimit)
		}
		if old != nil && reflect.DeepEqual(old.cfg.Resilience.Retries, cs.Resilience.Retries) {
			s.Retry = old.Retry
		} else {
			s.Retry = resilience.NewRetry(cs.Resilience.Retries)
		}
		rt.svcs[s.Key] = s
	}

	for i := range cfg.Services {
		cs := &cfg.Services[i]
		for _, p := range cs.Ports {
			if _, err := rt.target(cfg, cs, p, prev, hooks); err != nil {
				return nil, fmt.Errorf("services[%d] %s port %d: %w", i, cs.Key(), p.Port, err)
			}
		}
	}

	for i := range cfg.Services {
		cs := &cfg.Services[i]
		s := rt.svcs[cs.Key()]
		rules, err := rt.compileRules(cs.Rules, prev)
		if err != nil {
			return nil, fmt.Errorf("services[%d] %s: %w", i, cs.Key(), err)
		}
		for _, p := range cs.Ports {
			r := &Route{Service: s, Port: p, Own: rt.targets[targetKey(cs.Key(), p.Port)],
				ACL: cfg.ACL == config.ACLOn, Rules: rules, NeedsHeaders: needsHeaders(cs)}
			if sp := cs.Split; sp != nil {
				var choices []*Target
				var weights []uint32
				for _, b := range sp.Backends {
					choices = append(choices, rt.targets[targetKey(cs.Namespace+"/"+b.Service, p.Port)])
					weights = append(weights, uint32(b.Weight))
				}
				r.Split = balance.NewSplit(choices, weights)
				for k, m := range sp.Matches {
					cm, err := rt.compileMatch(m, prev)
					if err != nil {
						return nil, fmt.Errorf("services[%d].split.matches[%d]: %w", i, k, err)
					}
					r.Matches = append(r.Matches, cm)
				}
			}
			rt.Routes = append(rt.Routes, r)
			switch p.Protocol {
			case config.ProtocolHTTP:
				host := cs.Name + "." + cs.Namespace + "." + domain
				rt.hosts[host+":"+strconv.Itoa(int(p.Port))] = r
			case config.ProtocolTCP:
				rt.TCP[p.ListenPort] = r
			case config.ProtocolUDP:
				rt.UDP[p.ListenPort] = r
			}
		}
		// Host without a port: port 80 if served, else the only HTTP port.
		host := cs.Name + "." + cs.Namespace + "." + domain
		var httpPorts []int32
		for _, p := range cs.Ports {
			if p.Protocol == config.ProtocolHTTP {
				httpPorts = append(httpPorts, p.Port)
			}
		}
		if r, ok := rt.hosts[host+":80"]; ok {
			rt.hosts[host] = r
		} else if len(httpPorts) == 1 {
			rt.hosts[host] = rt.hosts[host+":"+strconv.Itoa(int(httpPorts[0]))]
		}
	}

	// Sources: local pods, with a Service they back for metrics.
	backs := map[netip.Addr]string{}
	for i := range cfg.Services {
		for _, e := range cfg.Services[i].Endpoints {
			ip := netip.MustParseAddr(e.IP).Unmap()
			if _, ok := backs[ip]; !ok {
				backs[ip] = cfg.Services[i].Key()
			}
		}
	}
	for _, p := range cfg.LocalPods {
		ip := netip.MustParseAddr(p.IP).Unmap()
		rt.sources[ip] = Source{Identity: p.Identity, Known: true, Pod: p.Name, Service: backs[ip]}
	}
	rt.buildPlugins(cfg, prev, hooks)
	return rt, nil
}

// buildPlugins compiles the config's plugins (reusing the previous
// runtime's compiled programs and, where nothing they depend on changed,
// its instantiated chains) and gives each HTTP route of a Service with
// plugins its chains. It comes last in Build: nothing after it can fail,
// and a plugin that does not load never fails the Build (it is recorded
// in PluginErrors; its Services skip it or answer 503, by its policy).
func (rt *Runtime) buildPlugins(cfg *config.Config, prev *Runtime, hooks Hooks) {
	if len(cfg.Plugins) == 0 {
		if prev.Plugins != nil {
			plugin.NewSet(nil, prev.Plugins, hooks.Plugins) // forgets their metrics
		}
		return
	}
	rt.Plugins = plugin.NewSet(cfg.Plugins, prev.Plugins, hooks.Plugins)
	chains := map[string]*plugin.Chains{}
	for i := range cfg.Services {
		cs := &cfg.Services[i]
		if len(cs.Plugins) > 0 {
			chains[cs.Key()] = rt.Plugins.Chains(cs.Key(), cs.Plugins, rt.svcs[cs.Key()].Timeout, prev.Plugins)
		}
	}
	for _, r := range rt.Routes {
		if r.Port.Protocol == config.ProtocolHTTP {
			r.Plugins = chains[r.Service.Key]
		}
	}
}

// needsHeaders reports whether any access rule or split match of cs has a
// header condition.
func needsHeaders(cs *config.Service) bool {
	for _, r := range cs.Rules {
		for _, m := range r.HTTP {
			if len(m.Headers) > 0 {
				return true
			}
		}
	}
	if cs.Split != nil {
		for _, m := range cs.Split.Matches {
			if len(m.Headers) > 0 {
				return true
			}
		}
	}
	return false
}

func targetKey(svc string, port int32) string { return svc + ":" + strconv.Itoa(int(port)) }

func (rt *Runtime) target(cfg *config.Config, cs *config.Service, p config.ServicePort, prev *Runtime, hooks Hooks) (*Target, error) {
	key := targetKey(cs.Key(), p.Port)
	t := &Target{Service: rt.svcs[cs.Key()], Port: p, Scheme: p.Scheme, targetKey: key}
	if t.Scheme == "" {
		t.Scheme = config.SchemeHTTP
	}
	if t.Scheme == config.SchemeHTTPS {
		tc := &tls.Config{ServerName: cs.Name + "." + cs.Namespace + ".svc", NextProtos: []string{"h2", "http/1.1"}}
		if p.TLS != nil {
			if p.TLS.ServerName != "" {
				tc.ServerName = p.TLS.ServerName
			}
			tc.InsecureSkipVerify = p.TLS.InsecureSkipVerify
			if p.TLS.CAPEM != "" {
				pool := x509.NewCertPool()
				if !pool.AppendCertsFromPEM([]byte(p.TLS.CAPEM)) {
					return nil, errors.New("tls.caPEM: no PEM certificate found")
				}
				tc.RootCAs = pool
			}
		}
		if old := prev.targets[key]; old != nil && old.TLS != nil && reflect.DeepEqual(old.Port.TLS, p.TLS) {
			tc = old.TLS // same pointer keeps the forwarder's transport and its pooled connections
		}
		t.TLS = tc
	}
	var eps []*balance.Endpoint
	for _, e := range cs.Endpoints {
		port := p.TargetPort
		if o, ok := e.Ports[p.Name]; ok && p.Name != "" {
			port = o
		}
		ap := netip.AddrPortFrom(netip.MustParseAddr(e.IP).Unmap(), uint16(port))
		st := rt.states[ap]
		if st == nil {
			st = prev.states[ap]
			if st == nil {
				st = &balance.State{}
			}
			rt.states[ap] = st
		}
		eps = append(eps, &balance.Endpoint{Addr: ap, HostPort: ap.String(), Node: e.Node, Zone: e.Zone, Ready: e.Ready, State: st})
	}
	zone := ""
	if cs.Resilience.SameZone {
		zone = cfg.Zone
	}
	t.Pool = balance.NewPool(eps, zone, outlier(cs.Resilience.Outlier))
	if hooks.OnEject != nil {
		t.Pool.OnEject = func(e *balance.Endpoint, d time.Duration) { hooks.OnEject(t, e, d) }
	}
	if old := prev.targets[key]; old != nil && old.Breaker != nil &&
		reflect.DeepEqual(old.Service.cfg.Resilience.CircuitBreaker, cs.Resilience.CircuitBreaker) {
		t.Breaker = old.Breaker
	} else {
		t.Breaker = resilience.NewBreaker(cs.Resilience.CircuitBreaker)
	}
	if t.Breaker != nil && hooks.OnBreakerChange != nil {
		t.Breaker.SetOnChange(func(s resilience.BreakerState) { hooks.OnBreakerChange(t, s) })
	}
	rt.targets[key] = t
	return t, nil
}

func outlier(o *config.Outlier) balance.Outlier {
	out := balance.Outlier{Consecutive: 5, Base: 10 * time.Second, Max: 5 * time.Minute, MaxEjectedPercent: 50}
	if o == nil {
		return out
	}
	if o.Consecutive != 0 {
		out.Consecutive = o.Consecutive
	}
	if o.BaseEjection != 0 {
		out.Base = o.BaseEjection.D()
	}
	if o.MaxEjection != 0 {
		out.Max = o.MaxEjection.D()
	}
	if out.Max < out.Base {
		out.Max = out.Base
	}
	if o.MaxEjectedPercent != 0 {
		out.MaxEjectedPercent = o.MaxEjectedPercent
	}
	return out
}

func (rt *Runtime) compileRules(rs []config.AccessRule, prev *Runtime) ([]Rule, error) {
	out := make([]Rule, 0, len(rs))
	for i, r := range rs {
		cr := Rule{Source: r.Source, Sources: r.Sources, Ports: r.Ports}
		for k, m := range r.HTTP {
			cm, err := rt.compileMatch(m, prev)
			if err != nil {
				return nil, fmt.Errorf("rules[%d].http[%d]: %w", i, k, err)
			}
			cr.HTTP = append(cr.HTTP, cm)
		}
		out = append(out, cr)
	}
	return out, nil
}

// compileMatch compiles s once per distinct spec: a compiled match is
// immutable, so every rule and split naming the same HTTPRouteGroup match
// shares it, and a reload reuses the previous runtime's (regexps are the
// bulk of a large runtime's memory).
func (rt *Runtime) compileMatch(s match.HTTPSpec, prev *Runtime) (*match.HTTP, error) {
	key := s.Key()
	if m, ok := rt.matches[key]; ok {
		return m, nil
	}
	m, ok := prev.matches[key]
	if !ok {
		var err error
		if m, err = match.CompileHTTP(s); err != nil {
			return nil, err
		}
	}
	if rt.matches == nil {
		rt.matches = map[string]*match.HTTP{}
	}
	rt.matches[key] = m
	return m, nil
}

// HTTPRoute finds the route for a Host/:authority value. It does not
// allocate for lower-case hosts.
func (rt *Runtime) HTTPRoute(host string) *Route {
	if r, ok := rt.hosts[host]; ok {
		return r
	}
	// Slow path: case and a trailing dot ("api.shop.mesh.:80").
	h := strings.ToLower(host)
	if name, port, ok := strings.Cut(h, ":"); ok {
		h = strings.TrimSuffix(name, ".") + ":" + port
	} else {
		h = strings.TrimSuffix(h, ".")
	}
	return rt.hosts[h]
}

// Source identifies a client by its address.
func (rt *Runtime) Source(addr netip.Addr) Source {
	return rt.sources[addr.Unmap()]
}

// Choose picks the Target for one HTTP request (split with matches).
func (r *Route) Choose(method, path string, h http.Header) *Target {
	if r.Split == nil {
		return r.Own
	}
	if len(r.Matches) > 0 {
		if _, ok := match.AnyHTTP(r.Matches, method, path, h); !ok {
			return r.Own
		}
	}
	return r.Split.Choose()
}

// ChooseL4 picks the Target for one TCP connection or UDP flow.
func (r *Route) ChooseL4() *Target {
	if r.Split == nil {
		return r.Own
	}
	return r.Split.Choose()
}

// Holder holds the live Runtime.
type Holder struct {
	p atomic.Pointer[Runtime]
}

// Load returns the live Runtime, nil before the first Store.
func (h *Holder) Load() *Runtime { return h.p.Load() }

// Store swaps in rt and returns the previous one.
func (h *Holder) Store(rt *Runtime) *Runtime { return h.p.Swap(rt) }
