package httpproxy

import (
	"context"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/trellis-mesh/trellis/node-proxy/config"
	"github.com/trellis-mesh/trellis/smi/match"
)

func TestSplitWeightsAndMatches(t *testing.T) {
	v1 := startBackend(t, "127.0.0.2", echo("v1"), false)
	v2 := startBackend(t, "127.0.0.3", echo("v2"), false)
	root := svc("shop", "api", "", v1.ep(), v2.ep())
	root.Split = &config.Split{Backends: []config.Backend{{Service: "api-v1", Weight: 80}, {Service: "api-v2", Weight: 20}}}
	p := startProxy(t, baseConfig(root, svc("shop", "api-v1", "", v1.ep()), svc("shop", "api-v2", "", v2.ep())), nil)
	c := p.client(webIP, false)
	counts := map[string]int{}
	for i := 0; i < 1000; i++ {
		counts[do(t, c, "GET", "http://api.shop.mesh/", nil).header.Get("X-Backend")]++
	}
	if v := counts["v1"]; v < 750 || v > 850 {
		t.Fatalf("80/20 split over 1000 requests landed %v (want v1 within ±5 points)", counts)
	}
	// A/B: only requests matching go through the split.
	c2 := baseConfig(root, svc("shop", "api-v1", "", v1.ep()), svc("shop", "api-v2", "", v2.ep()))
	c2.Services[0].Split = &config.Split{Backends: []config.Backend{{Service: "api-v2", Weight: 1}},
		Matches: []match.HTTPSpec{{Name: "beta", Headers: []match.Header{{Name: "X-Beta", Value: "yes"}}}}}
	c2.Services[0].Endpoints = []config.Endpoint{v1.ep()}
	p.reload(t, c2)
	for i := 0; i < 20; i++ {
		if b := do(t, c, "GET", "http://api.shop.mesh/", map[string]string{"X-Beta": "yes"}).header.Get("X-Backend"); b != "v2" {
			t.Fatalf("beta request went to %s", b)
		}
		if b := do(t, c, "GET", "http://api.shop.mesh/", nil).header.Get("X-Backend"); b != "v1" {
			t.Fatalf("non-matching request went to %s", b)
		}
	}
}

// flaky fails the first n requests with code, then echoes.
func flaky(n int64, code int) (http.HandlerFunc, *atomic.Int64) {
	var calls atomic.Int64
	return func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) <= n {
			w.WriteHeader(code)
			return
		}
		echo("ok")(w, r)
	}, &calls
}

func deadAddr(t *testing.T) config.Endpoint {
	l, err := net.Listen("tcp", "127.0.0.4:0")
	if err != nil {
		t.Fatal(err)
	}
	port := int32(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	return config.Endpoint{IP: "127.0.0.4", Ready: true, Ports: map[string]int32{"web": port}}
}

func TestRetries(t *testing.T) {
	h, calls := flaky(2, 503)
	be := startBackend(t, "127.0.0.2", h, false)
	s := svc("shop", "a", "", be.ep())
	s.Resilience.Retries = &config.Retries{Attempts: 3, BackoffBase: config.Duration(time.Millisecond), BackoffMax: config.Duration(2 * time.Millisecond)}
	p := startProxy(t, baseConfig(s), nil)
	c := p.client(webIP, false)
	if r := do(t, c, "GET", "http://a.shop.mesh/", nil); r.status != 200 || calls.Load() != 3 {
		t.Fatalf("GET after two 503s: %d after %d calls, want 200 after 3", r.status, calls.Load())
	}
	if n := testutil.ToFloat64(p.metrics.Retries.WithLabelValues("shop", "a")); n != 2 {
		t.Fatalf("retries metric %v, want 2", n)
	}
	calls.Store(0)
	req, _ := http.NewRequest("POST", "http://a.shop.mesh/", strings.NewReader("body"))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 || calls.Load() != 1 {
		t.Fatalf("POST must not be retried on 503: %d after %d calls", resp.StatusCode, calls.Load())
	}
	// PUT with a small body is idempotent and replayable: retried with the same body.
	calls.Store(0)
	req, _ = http.NewRequest("PUT", "http://a.shop.mesh/p", strings.NewReader("payload"))
	resp, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 100)
	n, _ := resp.Body.Read(b)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b[:n]), "PUT /p payload") {
		t.Fatalf("PUT retry lost the body: %d %q", resp.StatusCode, b[:n])
	}
}

func TestConnectFailureRetriedAndEjected(t *testing.T) {
	be := startBackend(t, "127.0.0.2", echo("live"), false)
	s := svc("shop", "a", "", be.ep(), deadAddr(t))
	s.Resilience.Retries = &config.Retries{Attempts: 2, BackoffBase: config.Duration(time.Millisecond), BackoffMax: config.Duration(time.Millisecond)}
	s.Resilience.Outlier = &config.Outlier{Consecutive: 2, BaseEjection: config.Duration(time.Minute), MaxEjectedPercent: 50}
	p := startProxy(t, baseConfig(s), nil)
	c := p.client(webIP, false)
	for i := 0; i < 30; i++ {
		// POST too: a refused connection sent nothing, so it is safe to retry.
		if r := do(t, c, "POST", "http://a.shop.mesh/", nil); r.status != 200 {
			t.Fatalf("request %d: %d %q; a refused endpoint must be retried elsewhere", i, r.status, r.body)
		}
	}
	rt := p.holder.Load()
	var dead int
	for _, e := range rt.HTTPRoute("a.shop.mesh").Own.Pool.Endpoints() {
		if e.Addr.Addr().String() == "127.0.0.4" && e.Ejected(time.Now().UnixNano()) {
			dead++
		}
	}
	if dead != 1 {
		t.Fatal("refusing endpoint was not ejected")
	}
}

func TestErrorClassStatuses(t *testing.T) {
	slow := startBackend(t, "127.0.0.2", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(3 * time.Second):
		case <-r.Context().Done():
		}
	}, false)
	fail, _ := flaky(1<<40, 503)
	failing := startBackend(t, "127.0.0.3", fail, false)
	ok := startBackend(t, "127.0.0.5", echo("ok"), false)

	sTimeout := svc("shop", "slow", "", slow.ep())
	sTimeout.Resilience.Timeout = config.Duration(100 * time.Millisecond)
	sPerTry := svc("shop", "slowtry", "", slow.ep())
	sPerTry.Resilience.Retries = &config.Retries{Attempts: 2, PerTryTimeout: config.Duration(50 * time.Millisecond)}
	sLimited := svc("shop", "limited", "", ok.ep())
	sLimited.Resilience.RateLimit = &config.RateLimit{RPS: 0.001, Burst: 1}
	sBreaker := svc("shop", "breaker", "", failing.ep())
	sBreaker.Resilience.CircuitBreaker = &config.CircuitBreaker{ConsecutiveFailures: 2, OpenFor: config.Duration(time.Minute)}
	sBreaker.Resilience.Outlier = &config.Outlier{Consecutive: -1}
	p := startProxy(t, baseConfig(svc("shop", "empty", ""), svc("shop", "refused", "", deadAddr(t)),
		sTimeout, sPerTry, sLimited, sBreaker), nil)
	c := p.client(webIP, false)

	cases := []struct {
		host   string
		status int
		class  string
	}{
		{"empty", 503, "no_endpoint"},
		{"refused", 502, "refused"},
		{"slow", 504, "timeout"},
		{"slowtry", 504, "timeout"},
		{"limited", 200, ""},
		{"limited", 429, "rate_limited"},
		{"breaker", 503, ""}, // upstream 503 passed through
		{"breaker", 503, ""},
		{"breaker", 503, "circuit_open"},
	}
	for i, tc := range cases {
		r := do(t, c, "GET", "http://"+tc.host+".shop.mesh/", nil)
		if r.status != tc.status || r.header.Get(HeaderError) != tc.class {
			t.Errorf("case %d %s: %d %q, want %d %q (%s)", i, tc.host, r.status, r.header.Get(HeaderError), tc.status, tc.class, r.body)
		}
	}
	if failing.hits.Load() != 2 {
		t.Fatalf("open breaker let requests through: %d hits", failing.hits.Load())
	}
}

func TestGRPCEndToEnd(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("shop.Orders", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	go func() { _ = gs.Serve(l) }()
	t.Cleanup(gs.Stop)
	port := int32(l.Addr().(*net.TCPAddr).Port)
	s := config.Service{Namespace: "shop", Name: "orders",
		Ports:     []config.ServicePort{{Name: "grpc", Port: 9090, TargetPort: port, Protocol: config.ProtocolHTTP, Scheme: config.SchemeH2C}},
		Endpoints: []config.Endpoint{{IP: "127.0.0.2", Ready: true}}}
	p := startProxy(t, baseConfig(s), nil)
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(webIP)}}
	cc, err := grpc.NewClient("passthrough:///orders.shop.mesh:9090",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return d.DialContext(ctx, "tcp", p.addr) }))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	hc := healthpb.NewHealthClient(cc)
	resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "shop.Orders"})
	if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("gRPC through the proxy: %v %v", resp, err)
	}
	// Status in trailers crosses the proxy.
	_, err = hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "nope"})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("want NotFound from trailers, got %v", err)
	}
	// Server streaming.
	stream, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: "shop.Orders"})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil || first.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("watch: %v %v", first, err)
	}
	hs.SetServingStatus("shop.Orders", healthpb.HealthCheckResponse_NOT_SERVING)
	second, err := stream.Recv()
	if err != nil || second.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("streamed update: %v %v", second, err)
	}
}
