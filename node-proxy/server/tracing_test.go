package server

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/trellis-mesh/trellis/node-proxy/httpproxy"
	"github.com/trellis-mesh/trellis/node-proxy/telemetry"
	"github.com/trellis-mesh/trellis/node-proxy/telemetry/otlptest"
)

// TestTracerWiredAndFlushedOnShutdown: the Options' tracer gets the spans
// of sampled requests, and the spans still waiting for their batch are
// exported when the proxy shuts down.
func TestTracerWiredAndFlushedOnShutdown(t *testing.T) {
	for _, fast := range []bool{true, false} {
		name := "fast-path"
		if !fast {
			name = "nethttp"
		}
		t.Run(name, func(t *testing.T) {
			rcv := otlptest.NewReceiver(t, nil)
			m := telemetry.NewMetrics()
			// A batch that never fills in time: only the shutdown flush sends it.
			tracer, err := telemetry.NewTracer(telemetry.TracerOptions{Endpoint: rcv.URL, Node: "n1", Metrics: m, BatchTimeout: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			p := New(Options{BindIP: "127.0.0.1", NodeName: "n1", ShutdownGrace: 2 * time.Second, Metrics: m, Tracer: tracer,
				HTTP: httpproxy.ServerOptions{DisableFastPath: !fast}})
			f := fixture{httpPort: freePort(t), tcpPort: freePort(t)}
			if err := p.Apply(context.Background(), f.config(startHTTP(t, "127.0.0.2", "web"), startTCPEcho(t, "127.0.0.2", "db"))); err != nil {
				t.Fatal(err)
			}
			in := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
			req, _ := http.NewRequest("GET", "http://"+p.HTTPAddr().String()+"/", nil)
			req.Host = "web.shop.mesh"
			req.Header.Set("Traceparent", in)
			resp, err := (&http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if n, _ := rcv.Requests(); n != 0 {
				t.Fatalf("%d exports before shutdown; the batch should still be waiting", n)
			}
			p.Shutdown(context.Background(), 0)
			spans := rcv.Spans()
			if len(spans) != 1 || spans[0].TraceID() != in[3:35] || spans[0].ParentID() != in[36:52] {
				t.Fatalf("after shutdown the collector has %d spans (%v); want the request's", len(spans), spans)
			}
			if v, _ := spans[0].Attr("trellis.destination.service"); v != "web" {
				t.Fatalf("span destination %q", v)
			}
			if got := testutil.ToFloat64(m.SpansExported); got != 1 {
				t.Fatalf("trellis_proxy_trace_spans_exported_total = %v, want 1", got)
			}
		})
	}
}
