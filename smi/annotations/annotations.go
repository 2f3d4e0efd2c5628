package annotations

import (
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/trellis-mesh/trellis/smi"
)

// Prefix of every Trellis annotation and label.
const Prefix = "trellis.io/"

// Annotation and label names.
const (
	// Mesh on a Service: "true" meshes it, "false" keeps it out even when
	// its namespace is meshed.
	Mesh = Prefix + "mesh"
	// NamespaceLabel on a Namespace: "enabled" meshes every Service in it
	// (unless the Service says Mesh: "false"); "disabled" or absent does not.
	NamespaceLabel = Prefix + "mesh"

	TrafficType   = Prefix + "traffic-type"   // http | tcp | udp
	Scheme        = Prefix + "scheme"         // http | h2c | https
	RetryAttempts = Prefix + "retry-attempts" // retries after the first attempt, 0-10
	RetryOn       = Prefix + "retry-on"       // status codes or classes: "502,503,504", "5xx"
	Timeout       = Prefix + "timeout"        // overall, including retries: "10s"
	PerTryTimeout = Prefix + "per-try-timeout"

	RateLimitAverage = Prefix + "ratelimit-average" // requests per second
	RateLimitBurst   = Prefix + "ratelimit-burst"   // requests

	CircuitBreakerConsecutiveFailures = Prefix + "circuit-breaker-consecutive-failures"
	CircuitBreakerFailureRatio        = Prefix + "circuit-breaker-failure-ratio" // 0 < r <= 1
	CircuitBreakerOpenDuration        = Prefix + "circuit-breaker-open-duration" // "10s"
)

// Traefik Mesh prefixes, in the order Traefik Mesh itself resolved them.
const (
	TraefikPrefix = "mesh.traefik.io/"
	MaeshPrefix   = "maesh.containo.us/"
)

// aliases maps a Traefik Mesh annotation suffix to the Trellis annotation
// it stands for. circuit-breaker-expression is translated specially.
var aliases = map[string]string{
	"traffic-type":      TrafficType,
	"scheme":            Scheme,
	"retry-attempts":    RetryAttempts,
	"ratelimit-average": RateLimitAverage,
	"ratelimit-burst":   RateLimitBurst,
}

const traefikCircuitBreaker = "circuit-breaker-expression"

// TrafficTypeValue is how the proxy handles a Service's traffic.
type TrafficTypeValue string

// Traffic types.
const (
	HTTP TrafficTypeValue = "http"
	TCP  TrafficTypeValue = "tcp"
	UDP  TrafficTypeValue = "udp"
)

// SchemeValue is how the proxy speaks to HTTP backends.
type SchemeValue string

// Schemes.
const (
	SchemeHTTP  SchemeValue = "http"
	SchemeH2C   SchemeValue = "h2c"
	SchemeHTTPS SchemeValue = "https"
)

// StatusRange is an inclusive range of HTTP status codes.
type StatusRange struct {
	From int `json:"from"`
	To   int `json:"to"`
}

// Retry settings. Attempts counts retries after the first try.
type Retry struct {
	Attempts int `json:"attempts"`
	// On lists the response statuses that are retried (for idempotent
	// methods). Connection failures before a response are always retried.
	On []StatusRange `json:"on,omitempty"`
}

// RateLimit is a token bucket: Average requests per second, Burst tokens.
type RateLimit struct {
	Average int `json:"average"`
	Burst   int `json:"burst"`
}

// CircuitBreaker opens (fails fast with 503) after ConsecutiveFailures
// failures in a row, or when FailureRatio of recent requests failed;
// failures are connection errors and 5xx responses. It stays open for
// OpenDuration (0: the proxy's default), then lets a probe through.
type CircuitBreaker struct {
	ConsecutiveFailures int           `json:"consecutiveFailures,omitempty"`
	FailureRatio        float64       `json:"failureRatio,omitempty"`
	OpenDuration        time.Duration `json:"openDuration,omitempty"`
}

// Settings are the tuning annotations of one Service. Zero values mean
// "not set": the caller applies the mesh-wide defaults.
type Settings struct {
	TrafficType    TrafficTypeValue `json:"trafficType,omitempty"`
	Scheme         SchemeValue      `json:"scheme,omitempty"`
	Retry          *Retry           `json:"retry,omitempty"`
	Timeout        time.Duration    `json:"timeout,omitempty"`
	PerTryTimeout  time.Duration    `json:"perTryTimeout,omitempty"`
	RateLimit      *RateLimit       `json:"rateLimit,omitempty"`
	CircuitBreaker *CircuitBreaker  `json:"circuitBreaker,omitempty"`
	// From maps each Trellis annotation that is in effect to the
	// annotation it was read from (itself, or a Traefik Mesh alias).
	From map[string]string `json:"from,omitempty"`
}

type parser struct {
	ref  smi.Ref
	ps   []smi.Problem
	from map[string]string
}

func (p *parser) bad(annotation, fix, format string, args ...any) {
	p.ps = append(p.ps, smi.Problem{Severity: smi.Error, Object: p.ref, Field: fmt.Sprintf("metadata.annotations[%q]", annotation),
		Message: fmt.Sprintf(format, args...) + "; the setting is ignored", Fix: fix})
}

func (p *parser) warn(annotation, fix, format string, args ...any) {
	p.ps = append(p.ps, smi.Problem{Severity: smi.Warning, Object: p.ref, Field: fmt.Sprintf("metadata.annotations[%q]", annotation),
		Message: fmt.Sprintf(format, args...), Fix: fix})
}

// resolve returns the effective raw values of the Trellis annotations,
// keyed by Trellis name, after applying Traefik Mesh aliases. A Trellis
// annotation wins over mesh.traefik.io, which wins over maesh.containo.us.
func (p *parser) resolve(ann map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range ann {
		if strings.HasPrefix(k, Prefix) && k != Mesh {
			out[k] = v
			p.from[k] = k
		}
	}
	for _, prefix := range []string{TraefikPrefix, MaeshPrefix} {
		keys := sortedKeys(ann)
		for _, k := range keys {
			suffix, ok := strings.CutPrefix(k, prefix)
			if !ok {
				continue
			}
			v := ann[k]
			if suffix == traefikCircuitBreaker {
				continue // translated in Parse
			}
			target, known := aliases[suffix]
			if !known {
				p.warn(k, "remove it, or see docs/annotations.md for the Trellis annotations", "is not a Traefik Mesh annotation Trellis understands")
				continue
			}
			if prev, set := p.from[target]; set {
				if out[target] != v {
					p.warn(k, fmt.Sprintf("remove %s, or make it agree with %s", k, prev), "is ignored: %s=%q takes precedence", prev, out[target])
				}
				continue
			}
			out[target] = v
			p.from[target] = k
		}
	}
	return out
}

// Parse reads the tuning annotations of Service ref (namespace/name). Each
// problem names the annotation; a bad value disables only that setting.
func Parse(namespace, name string, ann map[string]string) (Settings, []smi.Problem) {
	p := &parser{ref: smi.Ref{Kind: "Service", Namespace: namespace, Name: name}, from: map[string]string{}}
	raw := p.resolve(ann)
	var s Settings
	src := func(k string) string { return p.from[k] }
	known := map[string]bool{Mesh: true}
	use := func(k string) (string, bool) {
		known[k] = true
		v, ok := raw[k]
		return strings.TrimSpace(v), ok
	}

	if v, ok := use(TrafficType); ok {
		switch TrafficTypeValue(strings.ToLower(v)) {
		case HTTP, TCP, UDP:
			s.TrafficType = TrafficTypeValue(strings.ToLower(v))
		default:
			p.bad(src(TrafficType), "use http, tcp or udp", "%q is not a traffic type", v)
			delete(p.from, TrafficType)
		}
	}
	if v, ok := use(Scheme); ok {
		switch SchemeValue(strings.ToLower(v)) {
		case SchemeHTTP, SchemeH2C, SchemeHTTPS:
			s.Scheme = SchemeValue(strings.ToLower(v))
		default:
			p.bad(src(Scheme), "use http, h2c or https", "%q is not a scheme", v)
			delete(p.from, Scheme)
		}
	}
	if v, ok := use(RetryAttempts); ok {
		n, err := strconv.Atoi(v)
		switch {
		case err != nil:
			p.bad(src(RetryAttempts), `use a whole number such as "2" (quoted in YAML)`, "%q is not a whole number", v)
			delete(p.from, RetryAttempts)
		case n < 0 || n > 10:
			p.bad(src(RetryAttempts), "use 0 to 10", "%d is out of range", n)
			delete(p.from, RetryAttempts)
		default: // 0 is kept: it turns off the proxy's default retry too
			s.Retry = &Retry{Attempts: n}
		}
	}
	if v, ok := use(RetryOn); ok {
		on, err := parseStatuses(v)
		switch {
		case err != nil:
			p.bad(src(RetryOn), `list status codes or classes, e.g. "502,503,504" or "5xx"`, "%v", err)
			delete(p.from, RetryOn)
		case s.Retry == nil:
			p.warn(src(RetryOn), "set "+RetryAttempts+" too", "has no effect without %s", RetryAttempts)
		default:
			s.Retry.On = on
		}
	}
	s.Timeout = p.duration(use, Timeout)
	s.PerTryTimeout = p.duration(use, PerTryTimeout)
	if s.Timeout > 0 && s.PerTryTimeout > s.Timeout {
		p.warn(src(PerTryTimeout), "make it shorter than "+Timeout, "%s is longer than the overall timeout %s, so a retry can never start", s.PerTryTimeout, s.Timeout)
	}
	if s.PerTryTimeout > 0 && s.Retry == nil {
		p.warn(src(PerTryTimeout), "set "+RetryAttempts+", or use "+Timeout, "without %s there is one try; it acts as an overall timeout", RetryAttempts)
	}
	avg, avgOK := p.positiveInt(use, RateLimitAverage)
	burst, burstOK := p.positiveInt(use, RateLimitBurst)
	switch {
	case avgOK && burstOK:
		s.RateLimit = &RateLimit{Average: avg, Burst: burst}
	case avgOK:
		s.RateLimit = &RateLimit{Average: avg, Burst: avg}
	case burstOK:
		p.warn(src(RateLimitBurst), "set "+RateLimitAverage+" too", "has no effect without %s", RateLimitAverage)
	}
	cb := &CircuitBreaker{}
	if n, ok := p.positiveInt(use, CircuitBreakerConsecutiveFailures); ok {
		cb.ConsecutiveFailures = n
	}
	if v, ok := use(CircuitBreakerFailureRatio); ok {
		r, err := strconv.ParseFloat(v, 64)
		if err != nil || math.IsNaN(r) || r <= 0 || r > 1 {
			p.bad(src(CircuitBreakerFailureRatio), `use a ratio above 0 and at most 1, e.g. "0.5"`, "%q is not a ratio in (0, 1]", v)
			delete(p.from, CircuitBreakerFailureRatio)
		} else {
			cb.FailureRatio = r
		}
	}
	p.translateTraefikCircuitBreaker(ann, cb)
	cb.OpenDuration = p.duration(use, CircuitBreakerOpenDuration)
	if cb.ConsecutiveFailures > 0 || cb.FailureRatio > 0 {
		s.CircuitBreaker = cb
	} else if cb.OpenDuration > 0 {
		p.warn(src(CircuitBreakerOpenDuration), "set "+CircuitBreakerConsecutiveFailures+" or "+CircuitBreakerFailureRatio, "has no effect without a circuit-breaker trigger")
	}
	// Unknown trellis.io annotations: probably typos.
	for _, k := range sortedKeys(ann) {
		if strings.HasPrefix(k, Prefix) && !known[k] {
			p.warn(k, "see docs/annotations.md for the annotation names", "is not a Trellis annotation and is ignored%s", suggest(k))
		}
	}
	if len(p.from) > 0 {
		s.From = p.from
	}
	smi.SortProblems(p.ps)
	return s, p.ps
}

// Traefik's circuit-breaker expressions that have a Trellis equivalent.
var (
	reNetworkErrorRatio = regexp.MustCompile(`^\s*NetworkErrorRatio\(\)\s*>=?\s*([0-9.]+)\s*$`)
	reResponseCodeRatio = regexp.MustCompile(`^\s*ResponseCodeRatio\(\s*500\s*,\s*600\s*,\s*0\s*,\s*600\s*\)\s*>=?\s*([0-9.]+)\s*$`)
)

func (p *parser) translateTraefikCircuitBreaker(ann map[string]string, cb *CircuitBreaker) {
	for _, prefix := range []string{TraefikPrefix, MaeshPrefix} {
		k := prefix + traefikCircuitBreaker
		v, ok := ann[k]
		if !ok {
			continue
		}
		if prev, set := p.from[CircuitBreakerFailureRatio]; set {
			p.warn(k, "remove it", "is ignored: %s is set", prev)
			return
		}
		m := reNetworkErrorRatio.FindStringSubmatch(v)
		if m == nil {
			m = reResponseCodeRatio.FindStringSubmatch(v)
		}
		if m == nil {
			p.bad(k, fmt.Sprintf("use %s and %s instead", CircuitBreakerConsecutiveFailures, CircuitBreakerFailureRatio),
				"%q: Trellis translates only NetworkErrorRatio() > R and ResponseCodeRatio(500, 600, 0, 600) > R", v)
			return
		}
		r, err := strconv.ParseFloat(m[1], 64)
		if err != nil || r <= 0 || r > 1 {
			p.bad(k, "use a ratio above 0 and at most 1", "%q: ratio %s is not in (0, 1]", v, m[1])
			return
		}
		cb.FailureRatio = r
		p.from[CircuitBreakerFailureRatio] = k
		p.warn(k, fmt.Sprintf("replace it with %s: %q", CircuitBreakerFailureRatio, m[1]), "was translated to a failure ratio of %s (Trellis counts connection errors and 5xx responses together as failures)", m[1])
		return
	}
}

func (p *parser) duration(use func(string) (string, bool), k string) time.Duration {
	v, ok := use(k)
	if !ok {
		return 0
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		// Traefik-style bare numbers are seconds.
		if n, nerr := strconv.ParseFloat(v, 64); nerr == nil && n > 0 && n < 1e6 {
			return time.Duration(n * float64(time.Second))
		}
		p.bad(p.from[k], `use a duration such as "500ms", "2s" or "1m"`, "%q is not a duration", v)
		delete(p.from, k)
		return 0
	}
	if d <= 0 {
		p.bad(p.from[k], "use a positive duration, or remove the annotation for no limit", "%s is not positive", v)
		delete(p.from, k)
		return 0
	}
	return d
}

func (p *parser) positiveInt(use func(string) (string, bool), k string) (int, bool) {
	v, ok := use(k)
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		p.bad(p.from[k], `use a whole number above 0 (quoted in YAML, e.g. "100")`, "%q is not a whole number above 0", v)
		delete(p.from, k)
		return 0, false
	}
	return n, true
}

// parseStatuses reads "502,503,504", "5xx" or a mix.
func parseStatuses(v string) ([]StatusRange, error) {
	var out []StatusRange
	for _, part := range strings.Split(v, ",") {
		part = strings.TrimSpace(strings.ToLower(part))
		if part == "" {
			continue
		}
		if len(part) == 3 && strings.HasSuffix(part, "xx") && part[0] >= '1' && part[0] <= '5' {
			base := int(part[0]-'0') * 100
			out = append(out, StatusRange{base, base + 99})
			continue
		}
		n, err := strconv.Atoi(part)
		if err != nil || n < 100 || n > 599 {
			return nil, fmt.Errorf("%q is not an HTTP status code (100-599) or class (5xx)", part)
		}
		out = append(out, StatusRange{n, n})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%q lists no status", v)
	}
	return out, nil
}

// Meshed reports whether a Service is in the mesh: its own trellis.io/mesh
// annotation decides when present; otherwise its namespace's trellis.io/mesh
// label must be "enabled". why explains the decision.
func Meshed(svc *corev1.Service, ns *corev1.Namespace) (meshed bool, why string, ps []smi.Problem) {
	ref := smi.Ref{Kind: "Service", Namespace: svc.Namespace, Name: svc.Name}
	if v, ok := svc.Annotations[Mesh]; ok {
		switch strings.ToLower(strings.TrimSpace(v)) {
		case "true":
			return true, fmt.Sprintf("Service annotation %s=%q", Mesh, v), nil
		case "false":
			return false, fmt.Sprintf("Service annotation %s=%q", Mesh, v), nil
		default:
			ps = append(ps, smi.Problem{Severity: smi.Error, Object: ref, Field: fmt.Sprintf("metadata.annotations[%q]", Mesh),
				Message: fmt.Sprintf("%q is neither \"true\" nor \"false\"; the namespace label decides", v), Fix: `use "true" or "false"`})
		}
	}
	if ns != nil {
		if v, ok := ns.Labels[NamespaceLabel]; ok {
			switch v {
			case "enabled":
				return true, fmt.Sprintf("namespace %s label %s=enabled", ns.Name, NamespaceLabel), ps
			case "disabled":
				return false, fmt.Sprintf("namespace %s label %s=disabled", ns.Name, NamespaceLabel), ps
			default:
				ps = append(ps, smi.Problem{Severity: smi.Error, Object: smi.Ref{Kind: "Namespace", Name: ns.Name}, Field: fmt.Sprintf("metadata.labels[%q]", NamespaceLabel),
					Message: fmt.Sprintf("%q is neither \"enabled\" nor \"disabled\"; the namespace is not meshed", v), Fix: "use enabled or disabled"})
			}
		}
	}
	return false, fmt.Sprintf("not opted in: annotate the Service %s: \"true\" or label its namespace %s=enabled", Mesh, NamespaceLabel), ps
}

// ServiceSettings are a Service's settings with mesh-wide defaults applied
// and checked against its ports.
type ServiceSettings struct {
	Settings
	TrafficType TrafficTypeValue `json:"trafficType"`
	Scheme      SchemeValue      `json:"scheme,omitempty"`
}

// ForService parses svc's annotations, applies defaultType when no traffic
// type is set (UDP for a Service whose ports are all UDP), and reports
// settings that cannot apply to its traffic type or ports.
func ForService(svc *corev1.Service, defaultType TrafficTypeValue) (ServiceSettings, []smi.Problem) {
	s, ps := Parse(svc.Namespace, svc.Name, svc.Annotations)
	out := ServiceSettings{Settings: s, TrafficType: s.TrafficType, Scheme: s.Scheme}
	ref := smi.Ref{Kind: "Service", Namespace: svc.Namespace, Name: svc.Name}
	allUDP, anyUDP := len(svc.Spec.Ports) > 0, false
	for _, p := range svc.Spec.Ports {
		if p.Protocol == corev1.ProtocolUDP {
			anyUDP = true
		} else {
			allUDP = false
		}
	}
	if out.TrafficType == "" {
		out.TrafficType = defaultType
		if allUDP {
			out.TrafficType = UDP
		}
	}
	field := func(k string) string {
		if from, ok := s.From[k]; ok {
			k = from
		}
		return fmt.Sprintf("metadata.annotations[%q]", k)
	}
	if out.TrafficType == UDP && !allUDP && len(svc.Spec.Ports) > 0 {
		ps = append(ps, smi.Problem{Severity: smi.Warning, Object: ref, Field: field(TrafficType), Message: "is udp but the Service has TCP ports; they are not meshed", Fix: "split TCP and UDP ports into two Services"})
	}
	if out.TrafficType != UDP && anyUDP {
		ps = append(ps, smi.Problem{Severity: smi.Warning, Object: ref, Field: "spec.ports", Message: fmt.Sprintf("has UDP ports but the traffic type is %s; the UDP ports are not meshed", out.TrafficType), Fix: "split TCP and UDP ports into two Services, or set " + TrafficType + `: "udp"`})
	}
	if out.TrafficType == HTTP {
		if out.Scheme == "" {
			out.Scheme = SchemeHTTP
		}
		return out, ps
	}
	// Settings that only HTTP traffic has.
	for _, k := range []string{Scheme, RetryAttempts, RetryOn, Timeout, PerTryTimeout, CircuitBreakerConsecutiveFailures, CircuitBreakerFailureRatio, CircuitBreakerOpenDuration} {
		if _, set := s.From[k]; set {
			ps = append(ps, smi.Problem{Severity: smi.Warning, Object: ref, Field: field(k), Message: fmt.Sprintf("has no effect on %s traffic", out.TrafficType), Fix: "remove it, or set " + TrafficType + `: "http"`})
		}
	}
	out.Scheme, out.Retry, out.Timeout, out.PerTryTimeout, out.CircuitBreaker = "", nil, 0, 0, nil
	// A rate limit stays: for TCP and UDP it counts new connections (flows).
	smi.SortProblems(ps)
	return out, ps
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

var allNames = []string{Mesh, TrafficType, Scheme, RetryAttempts, RetryOn, Timeout, PerTryTimeout, RateLimitAverage, RateLimitBurst,
	CircuitBreakerConsecutiveFailures, CircuitBreakerFailureRatio, CircuitBreakerOpenDuration}

// Names lists every Trellis annotation name.
func Names() []string { return append([]string(nil), allNames...) }

// suggest names the closest known annotation for a typo.
func suggest(k string) string {
	best, bestD := "", 4
	for _, n := range allNames {
		if d := distance(k, n); d < bestD {
			best, bestD = n, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %s?)", best)
}

// distance is the Levenshtein distance, for short strings.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := 1
			if a[i-1] == b[j-1] {
				c = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+c)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
