package telemetry

import (
	"context"
	"encoding/hex"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/trellis-mesh/trellis/node-proxy/telemetry/otlptest"
)

func newTestTracer(t *testing.T, o TracerOptions) (*Tracer, *Metrics) {
	t.Helper()
	if o.Metrics == nil {
		o.Metrics = NewMetrics()
	}
	if o.BatchTimeout == 0 {
		o.BatchTimeout = 10 * time.Millisecond
	}
	tr, err := NewTracer(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tr.Shutdown(ctx)
	})
	return tr, o.Metrics
}

// waitCount polls counter c until it reaches want, failing at the deadline.
func waitCount(t *testing.T, what string, c prometheus.Collector, want float64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for testutil.ToFloat64(c) < want {
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v after %v, want >= %v", what, testutil.ToFloat64(c), timeout, want)
		}
		<-tick.C
	}
}

func mustTC(t *testing.T, s string) TraceContext {
	t.Helper()
	tc, ok := ParseTraceparent(s)
	if !ok {
		t.Fatalf("bad traceparent %q", s)
	}
	return tc
}

func TestTracerExportsServerSpans(t *testing.T) {
	rcv := otlptest.NewReceiver(t, nil)
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "k8s.cluster.name=prod%201,service.name=not-the-proxy")
	tr, m := newTestTracer(t, TracerOptions{Endpoint: rcv.URL, Node: "node-a"})
	start := time.Unix(1700000000, 123456789)
	child := mustTC(t, "00-4bf92f3577b34da6a3ce929d0e0e4736-a1a2a3a4a5a6a7a8-01")
	root := mustTC(t, "00-0af7651916cd43dd8448eb211c80319c-b1b2b3b4b5b6b7b8-01")
	odd := mustTC(t, "00-1af7651916cd43dd8448eb211c80319c-c1c2c3c4c5c6c7c8-01")
	denied := mustTC(t, "00-2af7651916cd43dd8448eb211c80319c-d1d2d3d4d5d6d7d8-01")
	gone := mustTC(t, "00-3af7651916cd43dd8448eb211c80319c-e1e2e3e4e5e6e7e8-01")
	cases := []struct {
		name   string
		span   HTTPSpan
		want   string // span name
		parent string
		status tracepb.Status_StatusCode
		attrs  map[string]string // "" value: must be absent
	}{
		{
			name: "continued trace through a split",
			span: HTTPSpan{Trace: child, Parent: [8]byte{0, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
				Start: start, End: start.Add(1500 * time.Microsecond), Proto: "HTTP/1.1", Method: "GET",
				Host: "api.shop.mesh", Path: "/v1/items", Status: 200, BytesOut: 42, ClientIP: netip.MustParseAddr("10.1.2.3"),
				SourceNamespace: "shop", SourceServiceAccount: "web", SourcePod: "web-1", SourceService: "shop/web",
				DestNamespace: "shop", DestService: "api", Backend: "shop/api-v2", Upstream: "10.1.9.9:8080", Attempts: 2},
			want: "GET", parent: "00f067aa0ba902b7", status: tracepb.Status_STATUS_CODE_UNSET,
			attrs: map[string]string{
				"http.request.method": "GET", "url.path": "/v1/items", "url.scheme": "http",
				"server.address": "api.shop.mesh", "server.port": "80", "client.address": "10.1.2.3",
				"http.response.status_code": "200", "http.response.body.size": "42",
				"network.protocol.name": "http", "network.protocol.version": "1.1",
				"trellis.source.namespace": "shop", "trellis.source.service_account": "web", "trellis.source.pod": "web-1",
				"trellis.source.service": "shop/web", "trellis.destination.namespace": "shop", "trellis.destination.service": "api",
				"trellis.backend": "shop/api-v2", "trellis.upstream.address": "10.1.9.9:8080", "trellis.attempts": "2",
				"error.type": "", "trellis.error.class": "",
			},
		},
		{
			name: "root started by the proxy, backend 503 over h2",
			span: HTTPSpan{Trace: root, Start: start, End: start.Add(time.Millisecond), Proto: "HTTP/2.0", Method: "POST",
				Host: "rpc.shop.mesh:8080", Path: "/pkg.Svc/Call", Status: 503, Attempts: 1},
			want: "POST", status: tracepb.Status_STATUS_CODE_ERROR,
			attrs: map[string]string{"network.protocol.version": "2", "server.address": "rpc.shop.mesh", "server.port": "8080",
				"error.type": "503", "trellis.source.namespace": ""},
		},
		{
			name: "unknown method",
			span: HTTPSpan{Trace: odd, Start: start, End: start, Proto: "HTTP/1.1", Method: "PURGE", Host: "[fd00::1]:81", Path: "/", Status: 204},
			want: "HTTP", status: tracepb.Status_STATUS_CODE_UNSET,
			attrs: map[string]string{"http.request.method": "_OTHER", "http.request.method_original": "PURGE",
				"server.address": "fd00::1", "server.port": "81"},
		},
		{
			name: "denied by the proxy",
			span: HTTPSpan{Trace: denied, Start: start, End: start, Proto: "HTTP/1.1", Method: "DELETE", Host: "api.shop.mesh", Path: "/admin",
				Status: 403, ErrorClass: "denied", Reason: "no TrafficTarget allows shop/web", ProxyFailure: true},
			want: "DELETE", status: tracepb.Status_STATUS_CODE_ERROR,
			attrs: map[string]string{"error.type": "denied", "trellis.error.class": "denied",
				"trellis.error.reason": "no TrafficTarget allows shop/web", "http.response.status_code": "403"},
		},
		{
			name: "client went away: no status, not an error",
			span: HTTPSpan{Trace: gone, Start: start, End: start, Proto: "HTTP/1.1", Method: "GET", Host: "api.shop.mesh", Path: "/slow",
				ErrorClass: "client_gone", Reason: "client closed the connection"},
			want: "GET", status: tracepb.Status_STATUS_CODE_UNSET,
			attrs: map[string]string{"http.response.status_code": "", "error.type": "client_gone"},
		},
	}
	for _, tc := range cases {
		tr.Record(tc.span)
	}
	spans := rcv.WaitSpans(t, len(cases), 10*time.Second)
	byID := map[string]otlptest.Span{}
	for _, s := range spans {
		byID[s.SpanID()] = s
	}
	for _, tc := range cases {
		s, ok := byID[hex.EncodeToString(tc.span.Trace.SpanID[:])]
		if !ok {
			t.Errorf("%s: span %x not exported", tc.name, tc.span.Trace.SpanID)
			continue
		}
		if s.TraceID() != tc.span.Trace.TraceIDString() || s.ParentID() != tc.parent {
			t.Errorf("%s: trace %s parent %q; want %s and %q", tc.name, s.TraceID(), s.ParentID(), tc.span.Trace.TraceIDString(), tc.parent)
		}
		if s.GetName() != tc.want || s.GetKind() != tracepb.Span_SPAN_KIND_SERVER {
			t.Errorf("%s: name %q kind %v; want %q SERVER", tc.name, s.GetName(), s.GetKind(), tc.want)
		}
		if s.GetStartTimeUnixNano() != uint64(tc.span.Start.UnixNano()) || s.GetEndTimeUnixNano() != uint64(tc.span.End.UnixNano()) {
			t.Errorf("%s: times %d..%d; want the recorded ones", tc.name, s.GetStartTimeUnixNano(), s.GetEndTimeUnixNano())
		}
		wantFlags := uint32(0x101) // sampled, parent's remoteness known
		if tc.parent != "" {
			wantFlags |= 0x200 // and remote
		}
		if s.GetFlags() != wantFlags {
			t.Errorf("%s: span flags %#x, want %#x", tc.name, s.GetFlags(), wantFlags)
		}
		if s.GetStatus().GetCode() != tc.status {
			t.Errorf("%s: status %v, want %v", tc.name, s.GetStatus().GetCode(), tc.status)
		}
		for k, want := range tc.attrs {
			got, ok := s.Attr(k)
			if want == "" && ok {
				t.Errorf("%s: attribute %s=%q should be absent", tc.name, k, got)
			} else if want != "" && got != want {
				t.Errorf("%s: attribute %s=%q, want %q", tc.name, k, got, want)
			}
		}
		if s.Resource["service.name"] != "trellis-proxy" || s.Resource["k8s.node.name"] != "node-a" ||
			s.Resource["k8s.cluster.name"] != "prod 1" || s.Scope != InstrumentationScope {
			t.Errorf("%s: resource %v scope %q", tc.name, s.Resource, s.Scope)
		}
	}
	waitCount(t, "exported", m.SpansExported, float64(len(cases)), 5*time.Second)
	if _, paths := rcv.Requests(); paths[0] != "/v1/traces" {
		t.Errorf("exported to %q, want /v1/traces", paths[0])
	}
	if h := rcv.LastHeader(); h.Get("Content-Encoding") != "gzip" {
		t.Errorf("export not gzipped: %v", h)
	}
}

func TestSampleNew(t *testing.T) {
	const n = 20000
	cases := []struct {
		ratio    float64
		min, max int
	}{{0, 0, 0}, {1, n, n}, {0.25, n * 22 / 100, n * 28 / 100}}
	rcv := otlptest.NewReceiver(t, nil)
	for _, tc := range cases {
		tr, _ := newTestTracer(t, TracerOptions{Endpoint: rcv.URL, SampleRatio: tc.ratio})
		got := 0
		for range n {
			if tr.SampleNew() {
				got++
			}
		}
		if got < tc.min || got > tc.max {
			t.Errorf("ratio %v: sampled %d of %d, want %d..%d", tc.ratio, got, n, tc.min, tc.max)
		}
	}
}

func sampledSpan(i int) HTTPSpan {
	tc, _, _ := Child("")
	tc.Flags = FlagSampled
	now := time.Now()
	return HTTPSpan{Trace: tc, Start: now, End: now, Proto: "HTTP/1.1", Method: "GET", Host: "a.b.mesh", Path: "/" + strings.Repeat("x", i%3), Status: 200}
}

func TestTracerExportOutcomes(t *testing.T) {
	cases := []struct {
		name     string
		endpoint func(t *testing.T) (string, *otlptest.Receiver)
		exported float64
		dropped  map[string]float64
	}{
		{"collector refuses connections", func(t *testing.T) (string, *otlptest.Receiver) { return otlptest.Refused(t), nil },
			0, map[string]float64{"export_failed": 2}},
		{"collector answers 400", func(t *testing.T) (string, *otlptest.Receiver) {
			r := otlptest.NewReceiver(t, func(int) otlptest.Answer { return otlptest.Answer{Status: 400} })
			return r.URL, r
		}, 0, map[string]float64{"export_failed": 2}},
		{"collector busy once, then takes them (retry)", func(t *testing.T) (string, *otlptest.Receiver) {
			r := otlptest.NewReceiver(t, func(n int) otlptest.Answer {
				if n == 1 {
					return otlptest.Answer{Status: 503, Header: http.Header{"Retry-After": {"0"}}}
				}
				return otlptest.Answer{Status: 200}
			})
			return r.URL, r
		}, 2, map[string]float64{"export_failed": 0}},
		{"collector rejects one", func(t *testing.T) (string, *otlptest.Receiver) {
			r := otlptest.NewReceiver(t, func(int) otlptest.Answer {
				return otlptest.Answer{Status: 200, Body: otlptest.PartialSuccess(1, "span too large")}
			})
			return r.URL, r
		}, 1, map[string]float64{"rejected": 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			url, rcv := tc.endpoint(t)
			// One batch of two spans, sent when the batch is full.
			tr, m := newTestTracer(t, TracerOptions{Endpoint: url, BatchSize: 2, BatchTimeout: time.Hour, ExportTimeout: time.Second})
			tr.Record(sampledSpan(1))
			tr.Record(sampledSpan(2))
			settled := func() float64 {
				s := testutil.ToFloat64(m.SpansExported)
				for _, r := range []string{"export_failed", "rejected"} {
					s += testutil.ToFloat64(m.SpansDropped.WithLabelValues(r))
				}
				return s
			}
			deadline := time.Now().Add(10 * time.Second)
			tick := time.NewTicker(5 * time.Millisecond)
			defer tick.Stop()
			for settled() < 2 {
				if time.Now().After(deadline) {
					t.Fatalf("export outcome not counted: settled %v", settled())
				}
				<-tick.C
			}
			if got := testutil.ToFloat64(m.SpansExported); got != tc.exported {
				t.Errorf("exported %v, want %v", got, tc.exported)
			}
			for reason, want := range tc.dropped {
				if got := testutil.ToFloat64(m.SpansDropped.WithLabelValues(reason)); got != want {
					t.Errorf("dropped{%s} = %v, want %v", reason, got, want)
				}
			}
			if rcv != nil && tc.exported == 2 {
				if n, _ := rcv.Requests(); n != 2 {
					t.Errorf("%d export requests, want 2 (one retry)", n)
				}
				if got := len(rcv.Spans()); got != 2 {
					t.Errorf("collector kept %d spans, want 2", got)
				}
			}
		})
	}
}

// TestTracerNeverBlocks: a collector that accepts connections and never
// answers holds the exporter; recording stays immediate, the excess is
// dropped and counted, the hung export is cut at its timeout and counted,
// and shutdown is bounded by its context.
func TestTracerNeverBlocks(t *testing.T) {
	tr, m := newTestTracer(t, TracerOptions{Endpoint: otlptest.BlackHole(t), QueueSize: 4, BatchSize: 1,
		BatchTimeout: time.Millisecond, ExportTimeout: 500 * time.Millisecond})
	const n = 200
	began := time.Now()
	for i := range n {
		tr.Record(sampledSpan(i))
	}
	if d := time.Since(began); d > time.Second {
		t.Fatalf("recording %d spans against a hung collector took %v", n, d)
	}
	// The queue holds 4, the export goroutine 1 more (the hung batch).
	waitCount(t, "dropped{queue_full}", m.SpansDropped.WithLabelValues("queue_full"), n-5, 5*time.Second)
	waitCount(t, "dropped{export_failed}", m.SpansDropped.WithLabelValues("export_failed"), 1, 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	began = time.Now()
	_ = tr.Shutdown(ctx)
	if d := time.Since(began); d > 2*time.Second {
		t.Fatalf("shutdown against a hung collector took %v", d)
	}
	total := testutil.ToFloat64(m.SpansExported)
	for _, r := range []string{"queue_full", "export_failed", "shutdown"} {
		total += testutil.ToFloat64(m.SpansDropped.WithLabelValues(r))
	}
	if total < n {
		t.Fatalf("%v of %d spans accounted for (exported or dropped)", total, n)
	}
	if got := testutil.ToFloat64(m.SpansExported); got != 0 {
		t.Fatalf("%v spans counted as exported to a collector that never answered", got)
	}
}

func TestTracerFlushesOnShutdown(t *testing.T) {
	rcv := otlptest.NewReceiver(t, nil)
	tr, m := newTestTracer(t, TracerOptions{Endpoint: rcv.URL, BatchTimeout: time.Hour})
	for i := range 3 {
		tr.Record(sampledSpan(i))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := tr.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if got := len(rcv.Spans()); got != 3 {
		t.Fatalf("collector has %d spans after shutdown, want 3 (flushed)", got)
	}
	tr.Record(sampledSpan(4))
	if got := testutil.ToFloat64(m.SpansDropped.WithLabelValues("shutdown")); got != 1 {
		t.Fatalf("span recorded after shutdown: dropped{shutdown} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.SpansExported); got != 3 {
		t.Fatalf("exported %v, want 3", got)
	}
}

func TestParseOTLPEndpoint(t *testing.T) {
	cases := []struct{ in, want, err string }{
		{"http://otel-collector.observability:4318", "http://otel-collector.observability:4318/v1/traces", ""},
		{"http://otel-collector.observability:4318/", "http://otel-collector.observability:4318/v1/traces", ""},
		{"https://ingest.example.com/otlp/v1/traces", "https://ingest.example.com/otlp/v1/traces", ""},
		{"http://[fd00::1]:4318", "http://[fd00::1]:4318/v1/traces", ""},
		{"", "", "empty URL"},
		{"otel-collector:4318", "", "scheme must be http or https"},
		{"grpc://otel:4317", "", "scheme must be http or https"},
		{"http://", "", "no host"},
		{"http://:4318", "", "no host"},
		{"http://otel:99999", "", "port must be 1-65535"},
		{"http://otel:4318/v1/traces?x=1", "", "query or fragment"},
		{"http://otel:4318/#frag", "", "query or fragment"},
		{"http://otel\x7f:4318", "", "is not a URL"},
	}
	for _, tc := range cases {
		u, err := ParseOTLPEndpoint(tc.in)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%q: error %v, want one containing %q", tc.in, err, tc.err)
		case tc.err == "" && err != nil:
			t.Errorf("%q: %v", tc.in, err)
		case tc.err == "" && u.String() != tc.want:
			t.Errorf("%q: %s, want %s", tc.in, u, tc.want)
		}
	}
	if _, err := NewTracer(TracerOptions{Endpoint: "http://otel:4318", SampleRatio: 1.5, Metrics: NewMetrics()}); err == nil {
		t.Error("sample ratio 1.5 accepted")
	}
}

func TestOTLPHeadersFromEnv(t *testing.T) {
	cases := []struct {
		all, traces string
		want        map[string]string
		err         string
	}{
		{"", "", map[string]string{}, ""},
		{"api-key=secret, x-team = mesh%20ops", "", map[string]string{"api-key": "secret", "x-team": "mesh ops"}, ""},
		{"api-key=a", "api-key=b", map[string]string{"api-key": "b"}, ""},
		{"novalue", "", nil, "OTEL_EXPORTER_OTLP_HEADERS: \"novalue\" is not key=value"},
		{"", "bad key=v", nil, "OTEL_EXPORTER_OTLP_TRACES_HEADERS: \"bad key\" is not a valid header"},
		{"k=%zz", "", nil, "value of \"k\""},
	}
	for _, tc := range cases {
		t.Setenv("OTEL_EXPORTER_OTLP_HEADERS", tc.all)
		t.Setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", tc.traces)
		got, err := OTLPHeadersFromEnv()
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q/%q: error %v, want %q", tc.all, tc.traces, err, tc.err)
			}
			continue
		}
		if err != nil || len(got) != len(tc.want) {
			t.Errorf("%q/%q: %v %v, want %v", tc.all, tc.traces, got, err, tc.want)
			continue
		}
		for k, v := range tc.want {
			if got[k] != v {
				t.Errorf("%q/%q: %s=%q, want %q", tc.all, tc.traces, k, got[k], v)
			}
		}
	}
	// And they are sent.
	rcv := otlptest.NewReceiver(t, nil)
	tr, _ := newTestTracer(t, TracerOptions{Endpoint: rcv.URL, Headers: map[string]string{"api-key": "secret"}})
	tr.Record(sampledSpan(0))
	rcv.WaitSpans(t, 1, 10*time.Second)
	if got := rcv.LastHeader().Get("Api-Key"); got != "secret" {
		t.Fatalf("collector saw api-key %q", got)
	}
}
