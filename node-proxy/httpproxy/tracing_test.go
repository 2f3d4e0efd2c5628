package httpproxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/trellis-mesh/trellis/node-proxy/config"
	"github.com/trellis-mesh/trellis/node-proxy/forward"
	"github.com/trellis-mesh/trellis/node-proxy/runtime"
	"github.com/trellis-mesh/trellis/node-proxy/telemetry"
	"github.com/trellis-mesh/trellis/node-proxy/telemetry/otlptest"
	"github.com/trellis-mesh/trellis/smi/match"
)

// Span export end to end: a real backend, the real proxy on a real
// listener, the SDK exporter and a real OTLP/HTTP receiver, on the fast
// path and on the net/http path.

// countingSink counts what the handler hands the tracer.
type countingSink struct {
	SpanSink
	records atomic.Int64
}

func (c *countingSink) Record(s telemetry.HTTPSpan) {
	c.records.Add(1)
	c.SpanSink.Record(s)
}

// tracePath is one way a request crosses the proxy.
type tracePath struct {
	name    string
	netHTTP bool // the server is net/http only (no fast path)
	h2c     bool // the client speaks HTTP/2 prior knowledge (net/http side of the fast server)
	version string
}

var tracePaths = []tracePath{
	{name: "fast-path-http1", version: "1.1"},
	{name: "nethttp-h2c", h2c: true, version: "2"},
	{name: "nethttp-only-http1", netHTTP: true, version: "1.1"},
}

type tracedProxy struct {
	*proxy
	tracer *telemetry.Tracer
	sink   *countingSink
	rcv    *otlptest.Receiver
}

// startTracedProxy is startProxy with a tracer exporting to rcv (or to
// endpoint when rcv is nil).
func startTracedProxy(t testing.TB, c *config.Config, path tracePath, o telemetry.TracerOptions) *tracedProxy {
	t.Helper()
	tp := &tracedProxy{}
	if o.Endpoint == "" {
		tp.rcv = otlptest.NewReceiver(t, nil)
		o.Endpoint = tp.rcv.URL
	}
	if o.BatchTimeout == 0 {
		o.BatchTimeout = 10 * time.Millisecond
	}
	m := telemetry.NewMetrics()
	o.Metrics, o.Node = m, "n1"
	tracer, err := telemetry.NewTracer(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tracer.Shutdown(ctx)
	})
	tp.tracer, tp.sink = tracer, &countingSink{SpanSink: tracer}

	c.Version = c.Hash()
	p := &proxy{holder: &runtime.Holder{}, metrics: m}
	rt, err := runtime.Build(c, nil, runtime.Hooks{})
	if err != nil {
		t.Fatal(err)
	}
	p.holder.Store(rt)
	d := forward.NewDirect(forward.Options{})
	t.Cleanup(d.CloseIdle)
	p.handler = New(p.holder, d, m, zap.NewNop(), zap.NewNop(), Options{Spans: tp.sink})
	so := ServerOptions{ReadHeaderTimeout: 2 * time.Second}
	var srv Listener = NewFastServer(p.handler, d, m, zap.NewNop(), so)
	if path.netHTTP {
		srv = NewServer(p.handler, m, zap.NewNop(), so)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = l.Addr().String()
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	tp.proxy = p
	return tp
}

// client is proxy.client, closed before the proxy shuts down (an open
// HTTP/2 connection holds a graceful shutdown for about a second).
func (tp *tracedProxy) client(t *testing.T, srcIP string, h2c bool) *http.Client {
	c := tp.proxy.client(srcIP, h2c)
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// requestsCounted is the sum of trellis_proxy_http_requests_total: the
// handler's finish has run (and recorded any span) for that many requests.
func requestsCounted(t *testing.T, m *telemetry.Metrics) float64 {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for _, mf := range mfs {
		if mf.GetName() == "trellis_proxy_http_requests_total" {
			for _, s := range mf.GetMetric() {
				n += s.GetCounter().GetValue()
			}
		}
	}
	return n
}

// waitFinished waits until the handler finished n requests.
func waitFinished(t *testing.T, m *telemetry.Metrics, n float64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for requestsCounted(t, m) < n {
		if time.Now().After(deadline) {
			t.Fatalf("handler finished %v requests, want %v", requestsCounted(t, m), n)
		}
		<-tick.C
	}
}

func counter(v *prometheus.CounterVec, label string) float64 {
	return testutil.ToFloat64(v.WithLabelValues(label))
}

// newTraceparent returns a fresh incoming traceparent with the given flags.
func newTraceparent(flags byte) telemetry.TraceContext {
	tc, _, _ := telemetry.Child("")
	tc.Flags = flags
	return tc
}

func splitConfig(be *backend) *config.Config {
	root := svc("shop", "api", "", be.ep())
	root.Split = &config.Split{Backends: []config.Backend{{Service: "api-v1", Weight: 100}}}
	c := baseConfig(root, svc("shop", "api-v1", "", be.ep()))
	c.ACL = config.ACLOn
	c.Services[0].Rules = []config.AccessRule{{Source: "TrafficTarget shop/api", Sources: []config.Identity{{ServiceAccount: "web", Namespace: "shop"}},
		HTTP: []match.HTTPSpec{{Name: "items", PathRegex: "/items.*", Methods: []string{"GET"}}}}}
	return c
}

func spanByID(spans []otlptest.Span, id string) (otlptest.Span, bool) {
	for _, s := range spans {
		if s.SpanID() == id {
			return s, true
		}
	}
	return otlptest.Span{}, false
}

func checkAttrs(t *testing.T, s otlptest.Span, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got, _ := s.Attr(k); got != v {
			t.Errorf("span attribute %s = %q, want %q (all: %v)", k, got, v, s.Attrs())
		}
	}
}

func TestSpanExportPerPath(t *testing.T) {
	for _, path := range tracePaths {
		t.Run(path.name, func(t *testing.T) {
			be := startBackend(t, "127.0.0.2", echo("api"), false)
			upstream := be.ip + ":" + itoa(be.port)

			t.Run("sampled caller: same trace, the upstream's parent is the exported span", func(t *testing.T) {
				p := startTracedProxy(t, splitConfig(be), path, telemetry.TracerOptions{})
				in := newTraceparent(telemetry.FlagSampled)
				r := do(t, p.client(t, webIP, path.h2c), "GET", "http://api.shop.mesh/items/7", map[string]string{"Traceparent": in.String()})
				if r.status != 200 {
					t.Fatalf("status %d %q", r.status, r.body)
				}
				seen, ok := telemetry.ParseTraceparent(r.header.Get("X-Seen-Traceparent"))
				if !ok || seen.TraceID != in.TraceID || !seen.Sampled() || seen.SpanID == in.SpanID {
					t.Fatalf("backend saw traceparent %q for incoming %s", r.header.Get("X-Seen-Traceparent"), in)
				}
				spans := p.rcv.WaitSpans(t, 1, 10*time.Second)
				s, ok := spanByID(spans, seen.String()[36:52])
				if !ok {
					t.Fatalf("no exported span has the span id the backend saw as parent (%s); got %d spans", seen.String()[36:52], len(spans))
				}
				if s.TraceID() != in.TraceIDString() || s.ParentID() != in.String()[36:52] {
					t.Fatalf("exported span trace %s parent %s; want trace %s parent %s", s.TraceID(), s.ParentID(), in.TraceIDString(), in.String()[36:52])
				}
				checkAttrs(t, s, map[string]string{
					"http.request.method": "GET", "url.path": "/items/7", "server.address": "api.shop.mesh",
					"http.response.status_code": "200", "network.protocol.name": "http", "network.protocol.version": path.version,
					"client.address": webIP, "trellis.source.namespace": "shop", "trellis.source.service_account": "web",
					"trellis.destination.namespace": "shop", "trellis.destination.service": "api", "trellis.backend": "shop/api-v1",
					"trellis.upstream.address": upstream, "trellis.attempts": "1",
				})
				if s.GetName() != "GET" || s.GetStatus().GetCode() != 0 || s.Resource["service.name"] != "trellis-proxy" || s.Resource["k8s.node.name"] != "n1" {
					t.Fatalf("span %q status %v resource %v", s.GetName(), s.GetStatus(), s.Resource)
				}
				if d := s.GetEndTimeUnixNano() - s.GetStartTimeUnixNano(); d == 0 || d > uint64(10*time.Second) {
					t.Fatalf("span lasted %dns", d)
				}
			})

			t.Run("unsampled caller: flag kept, nothing recorded", func(t *testing.T) {
				p := startTracedProxy(t, splitConfig(be), path, telemetry.TracerOptions{SampleRatio: 1})
				in := newTraceparent(0)
				c := p.client(t, webIP, path.h2c)
				r := do(t, c, "GET", "http://api.shop.mesh/items", map[string]string{"Traceparent": in.String()})
				seen, ok := telemetry.ParseTraceparent(r.header.Get("X-Seen-Traceparent"))
				if r.status != 200 || !ok || seen.TraceID != in.TraceID || seen.Sampled() {
					t.Fatalf("%d; backend saw %q for unsampled %s (ratio 1 must not override the caller)", r.status, r.header.Get("X-Seen-Traceparent"), in)
				}
				// A sampled request after it marks the end of the export stream.
				marker := newTraceparent(telemetry.FlagSampled)
				do(t, c, "GET", "http://api.shop.mesh/items", map[string]string{"Traceparent": marker.String()})
				waitFinished(t, p.metrics, 2)
				if n := p.sink.records.Load(); n != 1 {
					t.Fatalf("%d spans recorded, want 1 (the sampled marker only)", n)
				}
				spans := p.rcv.WaitSpans(t, 1, 10*time.Second)
				if len(spans) != 1 || spans[0].TraceID() != marker.TraceIDString() {
					t.Fatalf("exported %d spans (first trace %s); want only the marker's %s", len(spans), spans[0].TraceID(), marker.TraceIDString())
				}
			})

			t.Run("no traceparent, ratio 1: the proxy starts a sampled trace", func(t *testing.T) {
				p := startTracedProxy(t, splitConfig(be), path, telemetry.TracerOptions{SampleRatio: 1})
				r := do(t, p.client(t, webIP, path.h2c), "GET", "http://api.shop.mesh/items", nil)
				seen, ok := telemetry.ParseTraceparent(r.header.Get("X-Seen-Traceparent"))
				if r.status != 200 || !ok || !seen.Sampled() {
					t.Fatalf("%d; backend saw %q, want a sampled traceparent", r.status, r.header.Get("X-Seen-Traceparent"))
				}
				spans := p.rcv.WaitSpans(t, 1, 10*time.Second)
				s := spans[0]
				if s.TraceID() != seen.TraceIDString() || s.SpanID() != seen.String()[36:52] || s.ParentID() != "" {
					t.Fatalf("exported span %s/%s parent %q; backend saw %s", s.TraceID(), s.SpanID(), s.ParentID(), seen)
				}
			})

			t.Run("no traceparent, ratio 0: unsampled, nothing recorded", func(t *testing.T) {
				p := startTracedProxy(t, splitConfig(be), path, telemetry.TracerOptions{})
				r := do(t, p.client(t, webIP, path.h2c), "GET", "http://api.shop.mesh/items", nil)
				seen, ok := telemetry.ParseTraceparent(r.header.Get("X-Seen-Traceparent"))
				if r.status != 200 || !ok || seen.Sampled() {
					t.Fatalf("%d; backend saw %q, want an unsampled new trace", r.status, r.header.Get("X-Seen-Traceparent"))
				}
				waitFinished(t, p.metrics, 1)
				if n := p.sink.records.Load(); n != 0 {
					t.Fatalf("%d spans recorded for an unsampled request", n)
				}
			})
		})
	}
}

// TestSpanOfProxyMadeAnswers: requests the proxy answers itself, and
// backend errors, are traced with an error status.
func TestSpanOfProxyMadeAnswers(t *testing.T) {
	for _, path := range tracePaths[:2] {
		t.Run(path.name, func(t *testing.T) {
			be := startBackend(t, "127.0.0.2", func(w http.ResponseWriter, r *http.Request) {
				if strings.HasSuffix(r.URL.Path, "/boom") {
					w.WriteHeader(500)
				}
			}, false)
			p := startTracedProxy(t, splitConfig(be), path, telemetry.TracerOptions{})
			cases := []struct {
				name, host, method, path string
				status                   int
				attrs                    map[string]string
			}{
				{"denied", "api.shop.mesh", "POST", "/items", 403,
					map[string]string{"error.type": "denied", "trellis.error.class": "denied", "trellis.destination.service": "api", "http.response.status_code": "403"}},
				{"no route", "nope.shop.mesh", "GET", "/", 404, map[string]string{"error.type": "no_route", "trellis.error.class": "no_route"}},
				{"backend 500", "api.shop.mesh", "GET", "/items/boom", 500,
					map[string]string{"error.type": "500", "trellis.backend": "shop/api-v1", "http.response.status_code": "500"}},
			}
			c := p.client(t, webIP, path.h2c)
			want := map[string]int{} // trace id → case
			for i, tc := range cases {
				in := newTraceparent(telemetry.FlagSampled)
				want[in.TraceIDString()] = i
				r := do(t, c, tc.method, "http://"+tc.host+tc.path, map[string]string{"Traceparent": in.String()})
				if r.status != tc.status {
					t.Fatalf("%s: status %d, want %d", tc.name, r.status, tc.status)
				}
			}
			spans := p.rcv.WaitSpans(t, len(cases), 10*time.Second)
			for _, s := range spans {
				i, ok := want[s.TraceID()]
				if !ok {
					t.Fatalf("unexpected span of trace %s", s.TraceID())
				}
				tc := cases[i]
				if s.GetStatus().GetCode() != 2 { // STATUS_CODE_ERROR
					t.Errorf("%s: span status %v, want error", tc.name, s.GetStatus())
				}
				checkAttrs(t, s, tc.attrs)
			}
		})
	}
}

// TestDeadCollectorNeverSlowsRequests: the collector accepts connections
// and never answers. Requests are not slowed (each far below the export
// timeout the exporter is stuck in), spans beyond the queue are dropped,
// and the failed export is counted.
func TestDeadCollectorNeverSlowsRequests(t *testing.T) {
	const exportTimeout = 2 * time.Second
	for _, path := range tracePaths[:2] {
		t.Run(path.name, func(t *testing.T) {
			be := startBackend(t, "127.0.0.2", echo("api"), false)
			p := startTracedProxy(t, splitConfig(be), path, telemetry.TracerOptions{Endpoint: otlptest.BlackHole(t),
				QueueSize: 2, BatchSize: 1, BatchTimeout: time.Millisecond, ExportTimeout: exportTimeout, SampleRatio: 1})
			c := p.client(t, webIP, path.h2c)
			const n = 20
			var slowest time.Duration
			for range n {
				began := time.Now()
				if r := do(t, c, "GET", "http://api.shop.mesh/items", nil); r.status != 200 {
					t.Fatalf("status %d %q with a dead collector", r.status, r.body)
				}
				slowest = max(slowest, time.Since(began))
			}
			if slowest >= exportTimeout/2 {
				t.Fatalf("slowest request took %v with the collector hung (export timeout %v): the request path waited on the exporter", slowest, exportTimeout)
			}
			waitFinished(t, p.metrics, n)
			dropped := p.metrics.SpansDropped
			deadline := time.Now().Add(exportTimeout + 5*time.Second)
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for counter(dropped, "queue_full") < 1 || counter(dropped, "export_failed") < 1 {
				if time.Now().After(deadline) {
					t.Fatalf("dropped: queue_full %v export_failed %v; want both counted", counter(dropped, "queue_full"), counter(dropped, "export_failed"))
				}
				<-tick.C
			}
			if p.sink.records.Load() != n {
				t.Fatalf("%d spans recorded, want %d", p.sink.records.Load(), n)
			}
			// Shutdown gives up on the hung collector when its context ends.
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			began := time.Now()
			_ = p.tracer.Shutdown(ctx)
			if d := time.Since(began); d > time.Second {
				t.Fatalf("tracer shutdown took %v against a hung collector with a 100ms deadline", d)
			}
		})
	}
}

// BenchmarkSpanExport is the hot path of BenchmarkHotPath (split + ACL,
// HTTP/1.1 keep-alive on the fast path) with a tracer: present but
// sampling nothing, and sampling every request. Compare with
// BenchmarkHotPath/trellis-split-acl from the same run. The collector
// reads and discards (decoding is otlptest's job in the tests), so the
// figures are the proxy's, its export goroutine included.
func BenchmarkSpanExport(b *testing.B) {
	be := benchBackend(b)
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	}))
	b.Cleanup(collector.Close)
	for _, tc := range []struct {
		name  string
		ratio float64
	}{{"tracer-unsampled", 0}, {"tracer-sampled", 1}} {
		b.Run(tc.name, func(b *testing.B) {
			root := svc("shop", "api", "", be.ep())
			root.Split = &config.Split{Backends: []config.Backend{{Service: "api-v1", Weight: 80}, {Service: "api-v2", Weight: 20}}}
			root.Rules = []config.AccessRule{{Source: "TrafficTarget shop/api", Sources: []config.Identity{{ServiceAccount: "web", Namespace: "shop"}},
				HTTP: []match.HTTPSpec{{Name: "all", PathRegex: "/", Methods: []string{"GET"}}}}}
			c := baseConfig(root, svc("shop", "api-v1", "", be.ep()), svc("shop", "api-v2", "", be.ep()))
			c.ACL = config.ACLOn
			p := startTracedProxy(b, c, tracePath{name: "fast"}, telemetry.TracerOptions{Endpoint: collector.URL, SampleRatio: tc.ratio, BatchTimeout: 100 * time.Millisecond})
			runLoad(b, benchClient(webIP, p.addr), "http://"+p.addr+"/", "api.shop.mesh")
			b.StopTimer()
			m := p.metrics
			b.ReportMetric(testutil.ToFloat64(m.SpansDropped.WithLabelValues("queue_full"))/float64(b.N), "dropped/op")
		})
	}
}
