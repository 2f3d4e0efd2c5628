package traffic

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/internal/cli/clienv"
	"github.com/trellis-mesh/trellis/internal/cli/clitest"
	"github.com/trellis-mesh/trellis/node-proxy/admin"
	"github.com/trellis-mesh/trellis/node-proxy/telemetry"
)

// fleet is a set of node proxies, each with the proxy's real metrics
// registry served by the proxy's real admin handler, standing in for the
// DaemonSet pods of mesh namespace stat-mesh (listed from the apiserver).
type fleet struct {
	metrics  map[string]*telemetry.Metrics
	handlers map[string]*atomic.Pointer[http.Handler]
	servers  map[string]*httptest.Server
}

func newFleet(t *testing.T) *fleet {
	f := &fleet{metrics: map[string]*telemetry.Metrics{}, handlers: map[string]*atomic.Pointer[http.Handler]{}, servers: map[string]*httptest.Server{}}
	for _, pod := range []string{"trellis-proxy-a", "trellis-proxy-b", "trellis-proxy-c"} {
		f.restart(pod)
		h := f.handlers[pod]
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { (*h.Load()).ServeHTTP(w, r) }))
		t.Cleanup(srv.Close)
		f.servers[pod] = srv
	}
	// Proxy d is up but its admin port answers with an error.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "not ready: no config from the controller yet", http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	f.servers["trellis-proxy-d"] = srv
	return f
}

// restart gives a proxy a fresh registry, as a restarted process has.
func (f *fleet) restart(pod string) {
	m := telemetry.NewMetrics()
	f.metrics[pod] = m
	var h http.Handler = admin.Handler(fakeState{}, m.Registry)
	if f.handlers[pod] == nil {
		f.handlers[pod] = &atomic.Pointer[http.Handler]{}
	}
	f.handlers[pod].Store(&h)
}

// source lists proxies from the apiserver as the command does, and reads
// their metrics from the fleet's servers.
func (f *fleet) source(env *clienv.Env) metricsSource {
	return &fleetSource{podSource: &podSource{env: env}, f: f}
}

type fleetSource struct {
	*podSource
	f *fleet
}

func (s *fleetSource) Metrics(ctx context.Context, p proxy) ([]byte, error) {
	srv := s.f.servers[p.Pod]
	if srv == nil {
		return nil, fmt.Errorf("no test server for %s", p.Pod)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+metricsPath, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4;q=1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s from pod stat-mesh/%s port %d: %s: %s", metricsPath, p.Pod, adminPort, resp.Status, strings.TrimSpace(string(b)))
	}
	return b, nil
}

// script is the clock and what happens between scrapes: wait runs the
// next step (traffic) and moves the clock by the interval; when the steps
// are used up, it reports an interrupt.
type script struct {
	mu    sync.Mutex
	now   time.Time
	steps []func()
}

func (s *script) Now() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.now
}

func (s *script) Wait(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.steps) == 0 {
		return context.Canceled
	}
	s.steps[0]()
	s.steps = s.steps[1:]
	s.now = s.now.Add(d)
	return ctx.Err()
}

func (f *fleet) deps(s *script) deps {
	return deps{source: f.source, now: s.Now, wait: s.Wait}
}

// req records n requests on a proxy as its HTTP handler does.
func req(m *telemetry.Metrics, srcNS, srcSA, srcSvc, dstNS, dstSvc string, code int, class string, secs float64, n int) {
	cc := telemetry.CodeClass(code)
	m.HTTPRequests.WithLabelValues(srcNS, srcSA, srcSvc, dstNS, dstSvc, cc, class).Add(float64(n))
	for range n {
		m.HTTPDuration.WithLabelValues(srcNS, srcSvc, dstNS, dstSvc, cc).Observe(secs)
	}
}

// baseline is traffic before the first scrape: it must not show.
func (f *fleet) baseline() {
	req(f.metrics["trellis-proxy-a"], "shop", "frontend", "shop/frontend", "shop", "web", 200, "ok", 8, 1000)
	req(f.metrics["trellis-proxy-a"], "shop", "web", "shop/web", "shop", "api", 200, "ok", 0.0015, 300)
	req(f.metrics["trellis-proxy-a"], "shop", "web", "shop/web", "shop", "api", 504, "timeout", 3, 7)
	req(f.metrics["trellis-proxy-b"], "shop", "batch", "", "shop", "api", 403, "denied", 0.0002, 500)
}

// traffic is one interval of traffic, spread over proxies a and b.
//
// shop/web gets 100 requests: 50 at 3ms, 40 at 20ms (2 of them 502s), 10
// at 300ms, so p50 = 5ms, p95 = 375ms, p99 = 475ms (see
// TestParseProxyMetrics for the arithmetic), success 98%.
//
// shop/api gets 20: 8 GETs from web at 1.5ms and one 504 at 3s; 4 denied
// and 4 rate-limited requests from batch at 0.2ms; 2 from cron and 1 from
// an unidentified client at 1.5ms. Success is 11 of the 12 admitted.
//
// store/cart gets 6 TCP connections; a request for an unknown host (no
// destination) counts nowhere.
func (f *fleet) traffic() {
	a, b := f.metrics["trellis-proxy-a"], f.metrics["trellis-proxy-b"]
	req(a, "shop", "frontend", "shop/frontend", "shop", "web", 200, "ok", 0.003, 30)
	req(a, "shop", "frontend", "shop/frontend", "shop", "web", 200, "ok", 0.020, 20)
	req(b, "shop", "frontend", "shop/frontend", "shop", "web", 200, "ok", 0.003, 20)
	req(b, "shop", "frontend", "shop/frontend", "shop", "web", 200, "ok", 0.020, 18)
	req(b, "shop", "frontend", "shop/frontend", "shop", "web", 502, "refused", 0.020, 2)
	req(b, "shop", "frontend", "shop/frontend", "shop", "web", 200, "ok", 0.300, 10)

	req(a, "shop", "web", "shop/web", "shop", "api", 200, "ok", 0.0015, 8)
	req(a, "shop", "web", "shop/web", "shop", "api", 504, "timeout", 3, 1)
	req(b, "shop", "batch", "", "shop", "api", 403, "denied", 0.0002, 4)
	req(b, "shop", "batch", "", "shop", "api", 429, "rate_limited", 0.0002, 4)
	req(b, "shop", "cron", "", "shop", "api", 200, "ok", 0.0015, 2)
	req(b, "", "", "", "shop", "api", 200, "ok", 0.0015, 1)

	b.TCPConns.WithLabelValues("shop", "frontend", "shop/frontend", "store", "cart", "ok").Add(6)
	req(a, "shop", "frontend", "shop/frontend", "", "", 404, "no_route", 0.0001, 5)
}

// golden runs the command and compares what it printed and its exit code.
func golden(t *testing.T, name string, d deps, args ...string) clitest.Result {
	t.Helper()
	kc := testCluster(t)
	r := clitest.Run(t, func(env *clienv.Env) []*cobra.Command { return commands(env, d) }, kc, args...)
	got := fmt.Sprintf("$ kubectl trellis %s\n--- stdout\n%s--- stderr\n%s--- exit %d\n", strings.Join(args, " "), r.Out, r.Err, r.Code)
	clitest.Golden(t, name, got)
	return r
}

func TestStat(t *testing.T) {
	cases := []struct {
		name string
		args []string
		code int
	}{
		{"stat_namespace", []string{"stat", "-n", "shop", "--mesh-namespace", "stat-mesh"}, 0},
		{"stat_all_wide", []string{"stat", "-A", "-o", "wide", "--mesh-namespace", "stat-mesh"}, 0},
		{"stat_json", []string{"stat", "-n", "shop", "-o", "json", "--mesh-namespace", "stat-mesh"}, 0},
		{"stat_service", []string{"stat", "web", "-n", "shop", "--interval", "5s", "--mesh-namespace", "stat-mesh"}, 0},
		{"stat_not_meshed", []string{"stat", "db", "-n", "shop", "--mesh-namespace", "stat-mesh"}, 0},
		{"stat_tcp_only", []string{"stat", "-n", "store", "-o", "wide", "--mesh-namespace", "stat-mesh"}, 0},
		{"stat_unknown_service", []string{"stat", "nosuch", "-n", "shop", "--mesh-namespace", "stat-mesh"}, clienv.ExitNotFound},
		{"stat_no_proxies", []string{"stat", "-n", "shop", "--mesh-namespace", "empty-mesh"}, clienv.ExitFailure},
		{"stat_not_installed", []string{"stat", "-n", "shop", "--mesh-namespace", "nowhere"}, clienv.ExitNotFound},
		{"stat_bad_interval", []string{"stat", "--interval", "1ms"}, clienv.ExitUsage},
		{"stat_service_all_namespaces", []string{"stat", "web", "-A"}, clienv.ExitUsage},
		{"stat_bad_output", []string{"stat", "-o", "name"}, clienv.ExitUsage},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFleet(t)
			f.baseline()
			s := &script{now: time.Unix(1_700_000_000, 0), steps: []func(){f.traffic}}
			if r := golden(t, tc.name, f.deps(s), tc.args...); r.Code != tc.code {
				t.Fatalf("exit %d, want %d", r.Code, tc.code)
			}
		})
	}
}

// TestStatWatch prints three intervals: traffic, none, then traffic again
// after proxy a restarted (its counters start over; the restart must not
// produce negative or huge rates).
func TestStatWatch(t *testing.T) {
	f := newFleet(t)
	f.baseline()
	s := &script{now: time.Unix(1_700_000_000, 0), steps: []func(){
		f.traffic,
		func() {},
		func() {
			f.restart("trellis-proxy-a")
			f.traffic()
		},
	}}
	r := golden(t, "stat_watch", f.deps(s), "stat", "-n", "shop", "--watch", "--mesh-namespace", "stat-mesh")
	if r.Code != 0 {
		t.Fatalf("an interrupted watch must exit 0, got %d", r.Code)
	}
	if n := strings.Count(r.Out, "SERVICE"); n != 3 {
		t.Fatalf("%d tables printed, want 3", n)
	}
}

// TestStatWatchYAML checks that repeated data output is a valid stream.
func TestStatWatchYAML(t *testing.T) {
	f := newFleet(t)
	s := &script{now: time.Unix(1_700_000_000, 0), steps: []func(){f.traffic, f.traffic}}
	r := golden(t, "stat_watch_yaml", f.deps(s), "stat", "web", "-n", "shop", "-w", "-o", "yaml", "--mesh-namespace", "stat-mesh")
	if strings.Count(r.Out, "\n---\n") != 1 {
		t.Fatalf("want two YAML documents separated by ---:\n%s", r.Out)
	}
}

func TestTop(t *testing.T) {
	cases := []struct {
		name string
		args []string
		code int
	}{
		{"top_namespace", []string{"top", "-n", "shop", "--once", "--mesh-namespace", "stat-mesh"}, 0},
		{"top_all_wide", []string{"top", "-A", "--once", "-o", "wide", "--mesh-namespace", "stat-mesh"}, 0},
		{"top_json", []string{"top", "-n", "shop", "--once", "-o", "json", "--mesh-namespace", "stat-mesh"}, 0},
		{"top_limit", []string{"top", "-n", "shop", "--once", "--limit", "2", "--mesh-namespace", "stat-mesh"}, 0},
		{"top_quiet_namespace", []string{"top", "-n", "books", "--once", "--mesh-namespace", "stat-mesh"}, 0},
		{"top_bad_limit", []string{"top", "--limit", "0"}, clienv.ExitUsage},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFleet(t)
			f.baseline()
			s := &script{now: time.Unix(1_700_000_000, 0), steps: []func(){f.traffic}}
			if r := golden(t, tc.name, f.deps(s), tc.args...); r.Code != tc.code {
				t.Fatalf("exit %d, want %d", r.Code, tc.code)
			}
		})
	}
}

// TestTopRefreshes runs top without --once: it reprints every interval
// until interrupted.
func TestTopRefreshes(t *testing.T) {
	f := newFleet(t)
	s := &script{now: time.Unix(1_700_000_000, 0), steps: []func(){f.traffic, func() {}}}
	r := golden(t, "top_refresh", f.deps(s), "top", "-n", "shop", "--mesh-namespace", "stat-mesh")
	if r.Code != 0 || strings.Count(r.Out, "SOURCE_SERVICE") != 1 || !strings.Contains(r.Out, "No traffic") {
		t.Fatalf("want one table then a no-traffic line, exit 0; got exit %d:\n%s", r.Code, r.Out)
	}
}

// TestPodSourceThroughAPIServer reads metrics the production way, through
// the apiserver's pods/proxy subresource. The test apiserver has no
// kubelets, so the read must fail with an error naming the pod and port.
func TestPodSourceThroughAPIServer(t *testing.T) {
	kc := testCluster(t)
	var got error
	run := func(env *clienv.Env) []*cobra.Command {
		return []*cobra.Command{{Use: "probe", RunE: func(cmd *cobra.Command, _ []string) error {
			src := &podSource{env: env}
			ps, _, err := src.Proxies(cmd.Context())
			if err != nil {
				return err
			}
			if len(ps) != 3 {
				return fmt.Errorf("listed %v, want the 3 running proxies", ps)
			}
			_, got = src.Metrics(cmd.Context(), ps[0])
			return nil
		}}}
	}
	if r := clitest.Run(t, run, kc, "probe", "--mesh-namespace", "stat-mesh"); r.Code != 0 {
		t.Fatalf("%+v", r)
	}
	if got == nil || !strings.Contains(got.Error(), "pod stat-mesh/trellis-proxy-a port 15000") {
		t.Fatalf("want an error naming the pod and port, got %v", got)
	}
}

// TestStatNumbers checks stat's and top's JSON against the hand-computed
// figures of fleet.traffic, so a golden rewritten by mistake cannot hide a
// wrong number.
func TestStatNumbers(t *testing.T) {
	run := func(out any, args ...string) {
		t.Helper()
		f := newFleet(t)
		f.baseline()
		s := &script{now: time.Unix(1_700_000_000, 0), steps: []func(){f.traffic}}
		r := clitest.Run(t, func(env *clienv.Env) []*cobra.Command { return commands(env, f.deps(s)) }, testCluster(t), args...)
		if r.Code != 0 {
			t.Fatalf("%v: exit %d: %s", args, r.Code, r.Err)
		}
		if err := json.Unmarshal([]byte(r.Out), out); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
	}
	var st struct{ Services []serviceRow }
	run(&st, "stat", "-A", "-o", "json", "--mesh-namespace", "stat-mesh")
	rows := map[string]serviceRow{}
	for _, r := range st.Services {
		rows[r.Namespace+"/"+r.Service] = r
	}
	eq := func(what string, got *float64, want float64) {
		t.Helper()
		if got == nil || math.Abs(*got-want) > 1e-3 {
			t.Errorf("%s = %v, want %v", what, got, want)
		}
	}
	web, api, idle, cart := rows["shop/web"], rows["shop/api"], rows["shop/idle"], rows["store/cart"]
	if web.RPS != 50 || api.RPS != 10 || idle.RPS != 0 || cart.ConnsPerSecond != 3 {
		t.Errorf("rates: web %v api %v idle %v cart conns %v", web.RPS, api.RPS, idle.RPS, cart.ConnsPerSecond)
	}
	eq("web success", web.SuccessRate, 0.98)
	eq("web p50", web.LatencyMs.P50, 5)
	eq("web p95", web.LatencyMs.P95, 375)
	eq("web p99", web.LatencyMs.P99, 475)
	// api: 12 admitted (8 + 1 timeout from web, 2 cron, 1 unidentified), 11 fine.
	eq("api success", api.SuccessRate, 11.0/12)
	eq("api denied", api.DeniedShare, 4.0/20)
	eq("api rate limited", api.RateLimitedShare, 4.0/20)
	// 8 at 0.2ms, 11 at 1.5ms, 1 at 3s: rank 10 is 2 of 11 into (1ms, 2.5ms].
	eq("api p50", api.LatencyMs.P50, 1+1.5*2/11)
	eq("api p99", api.LatencyMs.P99, 2500+2500*0.8)
	if idle.SuccessRate != nil || idle.LatencyMs.P50 != nil || cart.SuccessRate != nil {
		t.Errorf("no HTTP traffic must be null, not 0: idle %+v cart %+v", idle.figures, cart.figures)
	}
	if _, ok := rows["shop/db"]; ok {
		t.Error("shop/db opted out of the mesh but is listed")
	}

	var top struct{ Pairs []pairRow }
	run(&top, "top", "-A", "--once", "-o", "json", "--mesh-namespace", "stat-mesh")
	pairs := map[string]pairRow{}
	for _, p := range top.Pairs {
		pairs[p.SourceNamespace+"/"+p.SourceServiceAccount+">"+p.DestinationService] = p
	}
	batch, cron, fe := pairs["shop/batch>api"], pairs["shop/cron>api"], pairs["shop/frontend>web"]
	if batch.SuccessRate != nil || batch.RPS != 4 || !batch.LatencyShared || !cron.LatencyShared || fe.LatencyShared {
		t.Errorf("batch %+v cron %+v frontend %+v", batch, cron, fe)
	}
	eq("batch denied", batch.DeniedShare, 0.5)
	eq("frontend>web p99", fe.LatencyMs.P99, 475)
	if top.Pairs[0].DestinationService != "web" {
		t.Errorf("busiest pair first: %+v", top.Pairs[0])
	}
}
