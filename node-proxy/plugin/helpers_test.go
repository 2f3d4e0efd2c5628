package plugin

import (
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/trellis-mesh/trellis/node-proxy/config"
)

// dirPlugin is the plugin in testdata/plugins/name, module example.com/name.
func dirPlugin(t testing.TB, name string) config.Plugin {
	t.Helper()
	files, err := ReadDir(filepath.Join("testdata", "plugins", name))
	if err != nil {
		t.Fatal(err)
	}
	return config.Plugin{Name: "test/" + name, Version: "v1", Module: "example.com/" + name, Files: files}
}

type testEnv struct {
	*Env
	logs *observer.ObservedLogs
}

func newEnv(t testing.TB) testEnv {
	core, logs := observer.New(zap.DebugLevel)
	return testEnv{Env: &Env{Log: zap.New(core), Metrics: NewMetrics(), DefaultTimeout: 2 * time.Second, LoadTimeout: 2 * time.Second}, logs: logs}
}

// echo is the upstream: it answers 200 "ok", with the request headers it
// saw as Echo-* response headers.
var echo = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	for k, v := range r.Header {
		w.Header()["Echo-"+k] = v
	}
	if r.Body != nil {
		_, _ = io.Copy(io.Discard, r.Body)
	}
	w.Header().Set("Content-Type", "text/plain")
	_, _ = io.WriteString(w, "ok")
})

// chainsFor builds a Set with plugins and the chains of service "shop/api"
// using all of them in order.
func chainsFor(t testing.TB, env *Env, timeout time.Duration, plugins ...config.Plugin) (*Set, *Chains) {
	t.Helper()
	s := NewSet(plugins, nil, env)
	var names []string
	for _, p := range plugins {
		names = append(names, p.Name)
	}
	return s, s.Chains("shop/api", names, timeout, nil)
}

// server serves upstream behind the after-access chain on a real socket.
func server(t testing.TB, cs *Chains, upstream http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(cs.Wrap(config.StageAfterAccess, upstream))
	t.Cleanup(srv.Close)
	return srv
}

type result struct {
	status int
	header http.Header
	body   string
	err    error
	took   time.Duration
}

func get(t testing.TB, url string) result {
	t.Helper()
	start := time.Now()
	resp, err := http.Get(url)
	if err != nil {
		return result{err: err, took: time.Since(start)}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return result{status: resp.StatusCode, header: resp.Header, body: string(b), err: err, took: time.Since(start)}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func value(t testing.TB, m *Metrics, metric, plugin string) float64 {
	t.Helper()
	switch metric {
	case "panics":
		return testutil.ToFloat64(m.Panics.WithLabelValues(plugin))
	case "timeouts":
		return testutil.ToFloat64(m.Timeouts.WithLabelValues(plugin))
	case "abandoned":
		return testutil.ToFloat64(m.Abandoned.WithLabelValues(plugin))
	case "loaded":
		return testutil.ToFloat64(m.Loaded.WithLabelValues(plugin))
	case "compiles":
		return testutil.ToFloat64(m.Compiles.WithLabelValues(plugin, "ok")) + testutil.ToFloat64(m.Compiles.WithLabelValues(plugin, "error"))
	}
	t.Fatalf("unknown metric %s", metric)
	return 0
}

func mustContain(t testing.TB, what, got string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(got, w) {
			t.Errorf("%s = %q; want it to contain %q", what, got, w)
		}
	}
}

func newRecorder() *httptest.ResponseRecorder { return httptest.NewRecorder() }

func newRequest() *http.Request { return httptest.NewRequest(http.MethodGet, "/", nil) }
