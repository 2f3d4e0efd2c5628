package annotations

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/smi"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

func TestParse(t *testing.T) {
	tests := []struct {
		name  string
		ann   map[string]string
		want  Settings
		probs []string // substrings, one per problem, in order
	}{
		{"none", nil, Settings{}, nil},
		{"all trellis annotations", map[string]string{
			TrafficType: "HTTP", Scheme: "h2c", RetryAttempts: "3", RetryOn: "502, 503,5xx",
			Timeout: "10s", PerTryTimeout: "2s", RateLimitAverage: "100", RateLimitBurst: "200",
			CircuitBreakerConsecutiveFailures: "5", CircuitBreakerFailureRatio: "0.5", CircuitBreakerOpenDuration: "30s",
		}, Settings{
			TrafficType: HTTP, Scheme: SchemeH2C,
			Retry:   &Retry{Attempts: 3, On: []StatusRange{{502, 502}, {503, 503}, {500, 599}}},
			Timeout: 10 * time.Second, PerTryTimeout: 2 * time.Second,
			RateLimit:      &RateLimit{Average: 100, Burst: 200},
			CircuitBreaker: &CircuitBreaker{ConsecutiveFailures: 5, FailureRatio: 0.5, OpenDuration: 30 * time.Second},
		}, nil},
		{"traefik mesh aliases", map[string]string{
			"mesh.traefik.io/traffic-type": "tcp", "mesh.traefik.io/retry-attempts": "2",
			"mesh.traefik.io/ratelimit-average": "10", "mesh.traefik.io/ratelimit-burst": "20",
		}, Settings{TrafficType: TCP, Retry: &Retry{Attempts: 2}, RateLimit: &RateLimit{Average: 10, Burst: 20}}, nil},
		{"maesh aliases", map[string]string{"maesh.containo.us/traffic-type": "udp", "maesh.containo.us/scheme": "https"},
			Settings{TrafficType: UDP, Scheme: SchemeHTTPS}, nil},
		{"precedence trellis > mesh.traefik.io > maesh.containo.us", map[string]string{
			TrafficType: "http", "mesh.traefik.io/traffic-type": "tcp", "maesh.containo.us/traffic-type": "udp",
			"mesh.traefik.io/scheme": "h2c", "maesh.containo.us/scheme": "h2c",
		}, Settings{TrafficType: HTTP, Scheme: SchemeH2C}, []string{
			`maesh.containo.us/traffic-type"] is ignored: trellis.io/traffic-type="http" takes precedence`,
			`mesh.traefik.io/traffic-type"] is ignored: trellis.io/traffic-type="http" takes precedence`,
		}},
		{"traefik circuit breaker expressions", map[string]string{"mesh.traefik.io/circuit-breaker-expression": "NetworkErrorRatio() > 0.30"},
			Settings{CircuitBreaker: &CircuitBreaker{FailureRatio: 0.30}}, []string{"was translated to a failure ratio of 0.30"}},
		{"traefik response code ratio", map[string]string{"maesh.containo.us/circuit-breaker-expression": "ResponseCodeRatio(500, 600, 0, 600) > 0.25"},
			Settings{CircuitBreaker: &CircuitBreaker{FailureRatio: 0.25}}, []string{"failure ratio of 0.25"}},
		{"untranslatable traefik expression", map[string]string{"mesh.traefik.io/circuit-breaker-expression": "LatencyAtQuantileMS(50.0) > 100"},
			Settings{}, []string{`circuit-breaker-expression"] "LatencyAtQuantileMS(50.0) > 100": Trellis translates only`}},
		{"bad values name the annotation", map[string]string{
			TrafficType: "grpc", RetryAttempts: "two", Timeout: "soon", RateLimitAverage: "-1", CircuitBreakerFailureRatio: "1.5", Scheme: "ftp",
		}, Settings{}, []string{
			`["trellis.io/circuit-breaker-failure-ratio"] "1.5" is not a ratio in (0, 1]; the setting is ignored`,
			`["trellis.io/ratelimit-average"] "-1" is not a whole number above 0`,
			`["trellis.io/retry-attempts"] "two" is not a whole number`,
			`["trellis.io/scheme"] "ftp" is not a scheme`,
			`["trellis.io/timeout"] "soon" is not a duration`,
			`["trellis.io/traffic-type"] "grpc" is not a traffic type`,
		}},
		{"bare seconds like traefik", map[string]string{Timeout: "5"}, Settings{Timeout: 5 * time.Second}, nil},
		{"burst defaults to average", map[string]string{RateLimitAverage: "50"}, Settings{RateLimit: &RateLimit{Average: 50, Burst: 50}}, nil},
		{"settings without effect", map[string]string{RateLimitBurst: "5", RetryOn: "503", CircuitBreakerOpenDuration: "5s"}, Settings{}, []string{
			"circuit-breaker-open-duration\"] has no effect without a circuit-breaker trigger",
			"ratelimit-burst\"] has no effect without trellis.io/ratelimit-average",
			"retry-on\"] has no effect without trellis.io/retry-attempts",
		}},
		{"bad status", map[string]string{RetryAttempts: "1", RetryOn: "5xx,700"}, Settings{Retry: &Retry{Attempts: 1}}, []string{`"700" is not an HTTP status code`}},
		{"typo", map[string]string{"trellis.io/retry-atempts": "2", "mesh.traefik.io/retries": "1"}, Settings{}, []string{
			`mesh.traefik.io/retries"] is not a Traefik Mesh annotation Trellis understands`,
			`trellis.io/retry-atempts"] is not a Trellis annotation and is ignored (did you mean trellis.io/retry-attempts?)`,
		}},
		{"per-try longer than overall", map[string]string{RetryAttempts: "2", Timeout: "1s", PerTryTimeout: "2s"},
			Settings{Retry: &Retry{Attempts: 2}, Timeout: time.Second, PerTryTimeout: 2 * time.Second}, []string{"longer than the overall timeout"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ps := Parse("shop", "web", tc.ann)
			got.From = nil
			if a, b := mustJSON(t, got), mustJSON(t, tc.want); a != b {
				t.Errorf("settings:\n got %s\nwant %s", a, b)
			}
			if len(ps) != len(tc.probs) {
				t.Fatalf("got %d problems, want %d:\n%s", len(ps), len(tc.probs), lines(ps))
			}
			for i, p := range ps {
				if !strings.HasPrefix(p.String(), "Service shop/web: metadata.annotations[") || !strings.Contains(p.String(), tc.probs[i]) {
					t.Errorf("problem %d = %q, want it to name the annotation and contain %q", i, p, tc.probs[i])
				}
			}
		})
	}
}

func TestFromRecordsSource(t *testing.T) {
	s, _ := Parse("a", "b", map[string]string{"maesh.containo.us/retry-attempts": "1", Timeout: "1s"})
	if s.From[RetryAttempts] != "maesh.containo.us/retry-attempts" || s.From[Timeout] != Timeout {
		t.Fatalf("From = %v", s.From)
	}
}

func TestMeshed(t *testing.T) {
	svc := func(ann map[string]string) *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", Annotations: ann}}
	}
	ns := func(v string) *corev1.Namespace {
		n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}
		if v != "" {
			n.Labels = map[string]string{NamespaceLabel: v}
		}
		return n
	}
	tests := []struct {
		svc    *corev1.Service
		ns     *corev1.Namespace
		want   bool
		why    string
		nprobs int
	}{
		{svc(nil), ns(""), false, "not opted in", 0},
		{svc(nil), nil, false, "not opted in", 0},
		{svc(map[string]string{Mesh: "true"}), ns(""), true, "Service annotation", 0},
		{svc(map[string]string{Mesh: "false"}), ns("enabled"), false, "Service annotation", 0},
		{svc(nil), ns("enabled"), true, "label trellis.io/mesh=enabled", 0},
		{svc(nil), ns("disabled"), false, "=disabled", 0},
		{svc(map[string]string{Mesh: "yes"}), ns("enabled"), true, "label", 1},
		{svc(nil), ns("on"), false, "not opted in", 1},
	}
	for i, tc := range tests {
		got, why, ps := Meshed(tc.svc, tc.ns)
		if got != tc.want || !strings.Contains(why, tc.why) || len(ps) != tc.nprobs {
			t.Errorf("case %d: Meshed = %v, %q, %v; want %v, %q, %d problems", i, got, why, ps, tc.want, tc.why, tc.nprobs)
		}
	}
}

// TestForService is a golden test: Services with annotations in, effective
// settings and problems out.
func TestForService(t *testing.T) {
	in, err := os.ReadFile(filepath.Join("testdata", "services.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	for _, doc := range strings.Split(string(in), "\n---\n") {
		svc := &corev1.Service{}
		if err := yaml.UnmarshalStrict([]byte(doc), svc); err != nil {
			t.Fatal(err)
		}
		s, ps := ForService(svc, HTTP)
		b, err := yaml.Marshal(map[string]any{"service": svc.Namespace + "/" + svc.Name, "settings": s, "problems": problemStrings(ps)})
		if err != nil {
			t.Fatal(err)
		}
		out.WriteString("---\n")
		out.Write(b)
	}
	golden := filepath.Join("testdata", "services.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update)", err)
	}
	if string(want) != out.String() {
		t.Errorf("%s differs; run go test ./smi/annotations -update and review the diff. Got:\n%s", golden, out.String())
	}
}

func FuzzParse(f *testing.F) {
	f.Add(TrafficType, "http", "mesh.traefik.io/circuit-breaker-expression", "NetworkErrorRatio() > 0.5")
	f.Add(RetryOn, "5xx,502", RetryAttempts, "3")
	f.Add(Timeout, "1.5", PerTryTimeout, "-1s")
	f.Add("trellis.io/x", "", "maesh.containo.us/ratelimit-burst", "9999999999999999999")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		s, ps := Parse("ns", "svc", map[string]string{k1: v1, k2: v2})
		for _, p := range ps {
			if p.Object.Kind != "Service" || !strings.HasPrefix(p.Field, "metadata.annotations[") {
				t.Fatalf("problem does not name the annotation: %v", p)
			}
		}
		if s.Retry != nil && (s.Retry.Attempts < 1 || s.Retry.Attempts > 10) {
			t.Fatalf("retry attempts out of range: %d", s.Retry.Attempts)
		}
		if s.RateLimit != nil && (s.RateLimit.Average <= 0 || s.RateLimit.Burst <= 0) {
			t.Fatalf("bad rate limit %+v", s.RateLimit)
		}
		if cb := s.CircuitBreaker; cb != nil && (cb.FailureRatio < 0 || cb.FailureRatio > 1 || cb.ConsecutiveFailures < 0) {
			t.Fatalf("bad circuit breaker %+v", cb)
		}
		if s.Timeout < 0 || s.PerTryTimeout < 0 {
			t.Fatalf("negative timeout")
		}
	})
}

func mustJSON(t *testing.T, v any) string {
	b, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func lines(ps []smi.Problem) string { return strings.Join(problemStrings(ps), "\n") }

func problemStrings(ps []smi.Problem) []string {
	out := []string{}
	for _, p := range ps {
		out = append(out, string(p.Severity)+": "+p.String())
	}
	return out
}
