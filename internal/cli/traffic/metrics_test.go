package traffic

import (
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/node-proxy/admin"
	"github.com/trellis-mesh/trellis/node-proxy/config"
	"github.com/trellis-mesh/trellis/node-proxy/telemetry"
)

// Bucket bounds of the proxy's duration histogram, for hand computations.
var proxyBounds = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, math.Inf(1)}

func cumulative(bounds []float64, counts ...float64) *hist {
	h := &hist{Bounds: bounds}
	var sum float64
	for _, c := range counts {
		sum += c
		h.Counts = append(h.Counts, sum)
	}
	return h
}

func TestQuantile(t *testing.T) {
	b := []float64{1, 2, 4, math.Inf(1)}
	cases := []struct {
		name string
		q    float64
		h    *hist
		want float64
	}{
		// 10 observations in each of (0,1], (1,2], (2,4].
		{"median in the middle bucket", 0.5, cumulative(b, 10, 10, 10, 0), 1.5},
		{"interpolated in the first bucket from 0", 0.15, cumulative(b, 10, 10, 10, 0), 0.45},
		{"top of a bucket", 1.0 / 3, cumulative(b, 10, 10, 10, 0), 1},
		{"q=1 ends at the last finite bucket holding data", 1, cumulative(b, 10, 10, 10, 0), 4},
		{"rank in +Inf returns the highest finite bound", 0.99, cumulative(b, 1, 0, 0, 9), 4},
		{"empty buckets below are skipped", 0.5, cumulative(b, 0, 0, 4, 0), 3},
		{"no observations", 0.5, cumulative(b, 0, 0, 0, 0), math.NaN()},
		{"no finite bucket", 0.5, &hist{Bounds: []float64{math.Inf(1)}, Counts: []float64{3}}, math.NaN()},
		{"q<0", -1, cumulative(b, 1, 0, 0, 0), math.Inf(-1)},
		{"q>1", 2, cumulative(b, 1, 0, 0, 0), math.Inf(1)},
		// A scrape that raced an observation: cumulative counts dip; the
		// dip is ironed out (the 2 becomes 3) as Prometheus does, so rank
		// 3 of 6 ends the first bucket.
		{"non-monotonic counts", 0.5, &hist{Bounds: b, Counts: []float64{3, 2, 6, 6}}, 1},
		{"rank past a dip", 0.75, &hist{Bounds: b, Counts: []float64{3, 2, 6, 6}}, 2 + 2*(1.5/3)},
	}
	for _, tc := range cases {
		got := quantile(tc.q, tc.h)
		if !(math.IsNaN(tc.want) && math.IsNaN(got)) && math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("%s: quantile(%v) = %v, want %v", tc.name, tc.q, got, tc.want)
		}
	}
}

// fakeState is an admin.State for a proxy that is ready with no config.
type fakeState struct{}

func (fakeState) Ready() string                      { return "" }
func (fakeState) Live() (*config.Config, time.Time)  { return nil, time.Time{} }
func (fakeState) LastRejection() (string, time.Time) { return "", time.Time{} }

// fetch serves m the way the proxy's admin port does and reads it back.
func fetch(t *testing.T, m *telemetry.Metrics) []byte {
	t.Helper()
	srv := httptest.NewServer(admin.Handler(fakeState{}, m.Registry))
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/metrics", nil)
	req.Header.Set("Accept", "text/plain;version=0.0.4;q=1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// observe records n requests the way the proxy's HTTP handler does.
func observe(m *telemetry.Metrics, src, dst [3]string, srcSvc string, code int, class string, secs float64, n int) {
	cc := telemetry.CodeClass(code)
	for range n {
		m.HTTPRequests.WithLabelValues(src[0], src[1], srcSvc, dst[0], dst[1], cc, class).Inc()
		m.HTTPDuration.WithLabelValues(src[0], srcSvc, dst[0], dst[1], cc).Observe(secs)
	}
}

var (
	frontend = [3]string{"shop", "frontend"}
	webSvc   = [3]string{"shop", "web"}
)

// TestParseProxyMetrics parses what the proxy's real registry exports and
// checks the quantiles of the buckets' difference against hand-computed
// values.
func TestParseProxyMetrics(t *testing.T) {
	m := telemetry.NewMetrics()
	// Traffic before the first scrape must not count.
	observe(m, frontend, webSvc, "shop/frontend", 200, "ok", 8, 1000)
	m.TCPConns.WithLabelValues("shop", "frontend", "shop/frontend", "shop", "db", "ok").Add(3)
	first, err := parseMetrics(fetch(t, m))
	if err != nil {
		t.Fatal(err)
	}
	// 50 at 3ms, 40 at 20ms (2 of them 5xx), 10 at 300ms.
	observe(m, frontend, webSvc, "shop/frontend", 200, "ok", 0.003, 50)
	observe(m, frontend, webSvc, "shop/frontend", 200, "ok", 0.020, 38)
	observe(m, frontend, webSvc, "shop/frontend", 502, "refused", 0.020, 2)
	observe(m, frontend, webSvc, "shop/frontend", 200, "ok", 0.300, 10)
	m.TCPConns.WithLabelValues("shop", "frontend", "shop/frontend", "shop", "db", "ok").Add(4)
	second, err := parseMetrics(fetch(t, m))
	if err != nil {
		t.Fatal(err)
	}
	if second.Start == 0 {
		t.Error("process_start_time_seconds not read: restarts would go unnoticed")
	}
	first.At, second.At = time.Unix(100, 0), time.Unix(102, 0)
	px := proxy{Pod: "p", Node: "n"}
	w, err := diff(&scrape{proxies: []proxy{px}, samples: map[string]*sample{"p": first}}, &scrape{proxies: []proxy{px}, samples: map[string]*sample{"p": second}})
	if err != nil {
		t.Fatal(err)
	}
	f := byService(w)[svcKey{"shop", "web"}].figures()
	if f.RPS != 50 {
		t.Errorf("rps %v, want 100 requests / 2s = 50", f.RPS)
	}
	if f.SuccessRate == nil || *f.SuccessRate != 0.98 {
		t.Errorf("success %v, want 98/100", f.SuccessRate)
	}
	// Cumulative over the proxy's buckets: le .005: 50, le .025: 90, le .5: 100.
	// p50: rank 50 ends bucket (.0025, .005]: 5ms.
	// p95: rank 95 is 5 of 10 into (.25, .5]: .25 + .25*5/10 = 375ms.
	// p99: rank 99 is 9 of 10 into (.25, .5]: .25 + .25*9/10 = 475ms.
	for _, c := range []struct {
		name      string
		got       *float64
		wantMilli float64
	}{{"p50", f.LatencyMs.P50, 5}, {"p95", f.LatencyMs.P95, 375}, {"p99", f.LatencyMs.P99, 475}} {
		if c.got == nil || math.Abs(*c.got-c.wantMilli) > 1e-6 {
			t.Errorf("%s = %v ms, want %v ms", c.name, c.got, c.wantMilli)
		}
	}
	db := byService(w)[svcKey{"shop", "db"}]
	if db == nil || db.connRate != 2 {
		t.Errorf("db connections/s = %+v, want 4 in 2s", db)
	}
}

func TestDiffCountsResetsFromZero(t *testing.T) {
	k := reqKey{pair: pair{DstNS: "shop", DstSvc: "web"}, Code: "2xx", Class: "ok"}
	hk := histKey{pair: k.pair, Code: "2xx"}
	mk := func(at int64, start, n float64, buckets ...float64) *sample {
		return &sample{At: time.Unix(at, 0), Start: start, Requests: map[reqKey]float64{k: n},
			Durations: map[histKey]*hist{hk: cumulative(proxyBounds[len(proxyBounds)-len(buckets):], buckets...)}}
	}
	px := proxy{Pod: "p"}
	run := func(prev, cur *sample) *tally {
		w, err := diff(&scrape{proxies: []proxy{px}, samples: map[string]*sample{"p": prev}}, &scrape{proxies: []proxy{px}, samples: map[string]*sample{"p": cur}})
		if err != nil {
			t.Fatal(err)
		}
		return byService(w)[svcKey{"shop", "web"}]
	}
	if got := run(mk(0, 1, 100, 100, 0), mk(10, 1, 130, 130, 0)); got.total != 30 || got.rps != 3 {
		t.Errorf("plain increase: %+v", got)
	}
	// The counter went down: the proxy restarted; it counted 7 since.
	if got := run(mk(0, 1, 100, 100, 0), mk(10, 1, 7, 7, 0)); got.total != 7 || mergeHists(got.hists).Total() != 7 {
		t.Errorf("counter reset: total %v hist %v, want 7", got.total, mergeHists(got.hists).Total())
	}
	// A new process start time: everything restarted, even if counts grew.
	if got := run(mk(0, 1, 100, 100, 0), mk(10, 2, 150, 150, 0)); got.total != 150 {
		t.Errorf("restart by start time: total %v, want 150", got.total)
	}
	// The kubelet restarted the proxy container (or the pod was replaced):
	// same, even without a start time.
	for _, moved := range []proxy{{Pod: "p", Restarts: 1}, {Pod: "p", UID: "new"}} {
		w, err := diff(&scrape{proxies: []proxy{px}, samples: map[string]*sample{"p": mk(0, 0, 100, 100, 0)}},
			&scrape{proxies: []proxy{moved}, samples: map[string]*sample{"p": mk(10, 0, 150, 150, 0)}})
		if err != nil {
			t.Fatal(err)
		}
		if got := byService(w)[svcKey{"shop", "web"}]; got.total != 150 || mergeHists(got.hists).Total() != 150 {
			t.Errorf("restart seen in the pod (%+v): total %v, want 150", moved, got.total)
		}
	}
}

func TestMergeHistsWithDifferentBuckets(t *testing.T) {
	a := cumulative([]float64{1, 2, 4, math.Inf(1)}, 1, 1, 1, 1)
	b := cumulative([]float64{2, 8, math.Inf(1)}, 2, 2, 2)
	got := mergeHists([]*hist{a, b})
	// Common bounds: 2 and +Inf. At le=2: 2 (a) + 2 (b); at +Inf: 4 + 6.
	want := &hist{Bounds: []float64{2, math.Inf(1)}, Counts: []float64{4, 10}}
	if !sameBounds(got, want) || got.Counts[0] != 4 || got.Counts[1] != 10 {
		t.Fatalf("merge = %+v, want %+v", got, want)
	}
}

func TestParseRejectsGarbage(t *testing.T) {
	for _, in := range []string{
		"trellis_proxy_http_requests_total{", // cut off
		"# TYPE trellis_proxy_http_request_duration_seconds counter\ntrellis_proxy_http_request_duration_seconds 3\n",
		"<html>503 Service Unavailable</html>",
	} {
		if _, err := parseMetrics([]byte(in)); err == nil {
			t.Errorf("%q parsed without error", in)
		}
	}
	// Other metrics, comments and empty input are fine.
	s, err := parseMetrics([]byte("# HELP x y\n# TYPE x gauge\nx 1\n"))
	if err != nil || len(s.Requests) != 0 {
		t.Fatalf("unrelated metrics: %v %+v", err, s)
	}
}

func FuzzParseMetrics(f *testing.F) {
	m := telemetry.NewMetrics()
	observe(m, frontend, webSvc, "shop/frontend", 200, "ok", 0.003, 3)
	srv := httptest.NewServer(admin.Handler(fakeState{}, m.Registry))
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		f.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	srv.Close()
	// Only the proxy's own families: the Go runtime's are large and slow the fuzzer.
	var own []string
	for _, l := range strings.SplitAfter(string(body), "\n") {
		if strings.Contains(l, "trellis_proxy_http") {
			own = append(own, l)
		}
	}
	f.Add([]byte(strings.Join(own, "")))
	f.Add([]byte("trellis_proxy_http_request_duration_seconds_bucket{le=\"+Inf\"} 1\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		s, err := parseMetrics(in)
		if err != nil {
			return
		}
		for k, h := range s.Durations {
			if len(h.Bounds) != len(h.Counts) || !math.IsInf(h.Bounds[len(h.Bounds)-1], 1) {
				t.Fatalf("%v: malformed histogram %+v", k, h)
			}
			for i := 1; i < len(h.Bounds); i++ {
				if !(h.Bounds[i] > h.Bounds[i-1]) {
					t.Fatalf("%v: bounds not increasing: %v", k, h.Bounds)
				}
			}
			for _, q := range []float64{0.5, 0.95, 0.99} {
				v := quantile(q, h)
				if !math.IsNaN(v) && (v < math.Min(0, h.Bounds[0]) || v > h.Bounds[len(h.Bounds)-1]) {
					t.Fatalf("%v: quantile(%v) = %v outside the buckets %v", k, q, v, h.Bounds)
				}
			}
		}
	})
}
