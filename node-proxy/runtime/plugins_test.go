package runtime

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/trellis-mesh/trellis/node-proxy/config"
	"github.com/trellis-mesh/trellis/node-proxy/plugin"
)

const stampSource = `package stamp

import (
	"context"
	"net/http"
)

type Config struct {
	Value string
}

func CreateConfig() *Config { return &Config{Value: "default"} }

func New(ctx context.Context, next http.Handler, cfg *Config, name string) (http.Handler, error) {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Stamp", cfg.Value)
		next.ServeHTTP(w, r)
	}), nil
}
`

func stamp(name, value string) config.Plugin {
	return config.Plugin{Name: name, Version: "1", Module: "example.com/stamp",
		Files: map[string]string{"stamp.go": stampSource}, Config: json.RawMessage(`{"Value":"` + value + `"}`)}
}

func TestBuildPlugins(t *testing.T) {
	env := &plugin.Env{Metrics: plugin.NewMetrics()}
	hooks := Hooks{Plugins: env}
	c := load(t)
	broken := stamp("shop/broken", "x")
	broken.Files = map[string]string{"stamp.go": "package stamp\n\nfunc {"}
	c.Plugins = []config.Plugin{stamp("shop/stamp", "api"), broken}
	c.Services[0].Plugins = []string{"shop/stamp"}  // shop/api, timeout 10s
	c.Services[1].Plugins = []string{"shop/broken"} // shop/api-v1, fail closed
	rt, err := Build(c, nil, hooks)
	if err != nil {
		t.Fatal(err)
	}
	if errs := rt.PluginErrors(); len(errs) != 1 || errs[0].Plugin != "shop/broken" || errs[0].Phase != plugin.PhaseSource {
		t.Fatalf("plugin errors: %v", errs)
	}

	r80, r9090 := rt.HTTPRoute("api.shop.mesh:80"), rt.HTTPRoute("api.shop.mesh:9090")
	if !r80.HasPlugins() || r80.Plugins != r9090.Plugins {
		t.Fatal("every HTTP route of a Service shares its chains")
	}
	if got := r80.Plugins.After.Timeout(); got != 10*time.Second {
		t.Errorf("chain timeout %s, want the Service's 10s", got)
	}
	if rt.HTTPRoute("api-v2.shop.mesh").HasPlugins() || rt.TCP[20001].HasPlugins() {
		t.Error("routes of Services without plugins, and tcp routes, have no chains")
	}
	if u := rt.HTTPRoute("api-v1.shop.mesh").Plugins.After.Unavailable(); u == nil || u.Plugin != "shop/broken" {
		t.Errorf("a Service using a plugin that failed closed refuses requests: %v", u)
	}
	rec := httptest.NewRecorder()
	r80.Plugins.Wrap(config.StageAfterAccess, http.NotFoundHandler()).ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Header().Get("X-Stamp") != "api" {
		t.Fatalf("plugin did not run: %v", rec.Header())
	}

	// An unrelated change: nothing is compiled or instantiated again.
	c2 := load(t)
	c2.Plugins, c2.Services[0].Plugins, c2.Services[1].Plugins = c.Plugins, c.Services[0].Plugins, c.Services[1].Plugins
	c2.Services[0].Endpoints[0].Ready = false
	rt2, err := Build(c2, rt, Hooks{})
	if err != nil {
		t.Fatal(err)
	}
	if rt2.HTTPRoute("api.shop.mesh").Plugins.After != r80.Plugins.After {
		t.Error("an unchanged chain was rebuilt")
	}
	if n := testutil.ToFloat64(env.Metrics.Compiles.WithLabelValues("shop/stamp", "ok")); n != 1 {
		t.Errorf("compiles = %v, want 1", n)
	}

	// Plugins gone: routes have none and the metrics forget them.
	c3 := load(t)
	rt3, err := Build(c3, rt2, Hooks{})
	if err != nil {
		t.Fatal(err)
	}
	if rt3.HTTPRoute("api.shop.mesh").HasPlugins() || len(rt3.PluginErrors()) != 0 {
		t.Error("plugins outlived their config")
	}
	if n := testutil.CollectAndCount(env.Metrics.Loaded); n != 0 {
		t.Errorf("loaded series = %d, want 0", n)
	}
	if rt4 := build(t, load(t), rt3); rt4.Plugins != nil {
		t.Error("a runtime without plugins carries none")
	}
}
