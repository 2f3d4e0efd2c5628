package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/node-proxy/config"
	"github.com/trellis-mesh/trellis/node-proxy/telemetry"
	"github.com/trellis-mesh/trellis/node-proxy/telemetry/otlptest"
)

// TestBinaryLinksNoOTelSDKOrGRPC keeps the proxy within its memory budget
// (see node-proxy/telemetry/otlp.go): every linked byte of code costs RSS,
// tracing on or off. otlptracehttp (through the OTLP collector package)
// would link gRPC and grpc-gateway, about +4 MB; the OpenTelemetry SDK and
// API about +1 MB. The proxy encodes OTLP itself.
func TestBinaryLinksNoOTelSDKOrGRPC(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go tool is needed to list the proxy's dependencies: %v", err)
	}
	out, err := exec.Command(goTool, "list", "-deps", "github.com/trellis-mesh/trellis/cmd/trellis-proxy").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if !slices.Contains(deps, "github.com/trellis-mesh/trellis/node-proxy/telemetry") {
		t.Fatalf("the dependency list does not hold node-proxy/telemetry; is it the proxy's? %d packages", len(deps))
	}
	for _, d := range deps {
		for _, banned := range []string{"google.golang.org/grpc", "github.com/grpc-ecosystem/", "go.opentelemetry.io/"} {
			if strings.HasPrefix(d, banned) {
				t.Errorf("trellis-proxy links %s", d)
			}
		}
	}
}

func TestTracingFlagErrors(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "c.json")
	if err := os.WriteFile(cfg, []byte(`{"node":"n"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args []string
		env  string // OTEL_EXPORTER_OTLP_HEADERS
		want string
	}{
		{[]string{"--otlp-endpoint", "otel-collector:4318"}, "", `--otlp-endpoint: "otel-collector:4318": scheme must be http or https`},
		{[]string{"--otlp-endpoint", "grpc://otel:4317"}, "", "--otlp-endpoint: \"grpc://otel:4317\": scheme must be http or https (OTLP/HTTP, port 4318 by default; OTLP/gRPC is not supported)"},
		{[]string{"--otlp-endpoint", "http://"}, "", "--otlp-endpoint: \"http://\": no host"},
		{[]string{"--otlp-endpoint", "http://otel:4318?x=1"}, "", "--otlp-endpoint: \"http://otel:4318?x=1\": a query or fragment is not allowed"},
		{[]string{"--otlp-endpoint", "http://otel:4318", "--trace-sample-ratio", "1.5"}, "", "--trace-sample-ratio: sample ratio must be between 0 and 1, got 1.5"},
		{[]string{"--otlp-endpoint", "http://otel:4318", "--trace-sample-ratio", "-0.1"}, "", "--trace-sample-ratio: sample ratio must be between 0 and 1, got -0.1"},
		{[]string{"--otlp-endpoint", "http://otel:4318", "--trace-sample-ratio", "NaN"}, "", "--trace-sample-ratio: sample ratio must be between 0 and 1, got NaN"},
		{[]string{"--trace-sample-ratio", "0.5"}, "", "--trace-sample-ratio: needs --otlp-endpoint"},
		{[]string{"--trace-sample-ratio", "lots"}, "", `invalid value "lots" for flag -trace-sample-ratio`},
		{[]string{"--otlp-endpoint", "http://otel:4318"}, "api-key", `--otlp-endpoint: OTEL_EXPORTER_OTLP_HEADERS: "api-key" is not key=value`},
	}
	for _, tc := range cases {
		t.Setenv("OTEL_EXPORTER_OTLP_HEADERS", tc.env)
		var stderr bytes.Buffer
		code := run(context.Background(), append([]string{"--config", cfg, "--admin-addr", ""}, tc.args...), nil, &stderr)
		lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
		if code != 2 || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tc.args, code, stderr.String(), tc.want)
		} else if !strings.HasPrefix(tc.want, "invalid value") && len(lines) != 1 {
			t.Errorf("%v: %d lines of error, want one: %q", tc.args, len(lines), stderr.String())
		}
	}
}

// TestExportsSpansEndToEnd runs main with --otlp-endpoint: a request with a
// sampled traceparent crosses the proxy, and its span reaches the
// collector by the time the proxy has exited (flushed on shutdown).
func TestExportsSpansEndToEnd(t *testing.T) {
	var seen atomic.Value // the traceparent the backend got
	l, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	be := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Store(r.Header.Get("Traceparent"))
		_, _ = io.WriteString(w, "ok")
	})}
	go func() { _ = be.Serve(l) }()
	t.Cleanup(func() { be.Close() })
	httpPort := freePort(t)
	c := &config.Config{Node: "n1", Listeners: config.Listeners{HTTP: int32(httpPort)},
		Services: []config.Service{{Namespace: "ns", Name: "svc",
			Ports:     []config.ServicePort{{Port: 80, TargetPort: int32(l.Addr().(*net.TCPAddr).Port), Protocol: "http"}},
			Endpoints: []config.Endpoint{{IP: "127.0.0.2", Ready: true}}}}}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "proxy.json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	rcv := otlptest.NewReceiver(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"--config", path, "--node", "n1", "--bind", "127.0.0.1", "--admin-addr", "",
			"--drain-period", "0s", "--access-log=false", "--log-level", "error", "--otlp-endpoint", rcv.URL}, nil, io.Discard)
	}()
	const in = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	get := func() (int, error) {
		req, _ := http.NewRequest("GET", "http://127.0.0.1:"+strconv.Itoa(httpPort)+"/x", nil)
		req.Host = "svc.ns.mesh"
		req.Header.Set("Traceparent", in)
		resp, err := (&http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for code, err := get(); code != 200; code, err = get() {
		if time.Now().After(deadline) {
			t.Fatalf("proxy never served: %d %v", code, err)
		}
		<-tick.C
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit code %d", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("proxy did not exit after cancellation")
	}
	// The proxy has exited: the span must already be at the collector.
	spans := rcv.Spans()
	got, _ := seen.Load().(string)
	up, ok := telemetry.ParseTraceparent(got)
	if !ok || len(spans) != 1 {
		t.Fatalf("backend saw %q; collector has %d spans, want 1", got, len(spans))
	}
	s := spans[0]
	if s.TraceID() != in[3:35] || s.ParentID() != in[36:52] || s.SpanID() != up.String()[36:52] {
		t.Fatalf("span %s/%s parent %s; want trace %s, parent %s, span id the backend's parent %s",
			s.TraceID(), s.SpanID(), s.ParentID(), in[3:35], in[36:52], up.String()[36:52])
	}
	if s.Resource["service.name"] != "trellis-proxy" || s.Resource["k8s.node.name"] != "n1" {
		t.Fatalf("resource %v", s.Resource)
	}
}
