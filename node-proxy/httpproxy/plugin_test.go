package httpproxy

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trellis-mesh/trellis/node-proxy/config"
	"github.com/trellis-mesh/trellis/smi/match"
)

// headersPlugin is the example headers plugin, from its source files.
func headersPlugin(t *testing.T, name string, cfg any, stage config.PluginStage) config.Plugin {
	t.Helper()
	dir := filepath.Join("..", "..", "examples", "plugins", "headers")
	paths, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	for _, p := range paths {
		if strings.HasSuffix(p, "_test.go") {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		files[filepath.Base(p)] = string(b)
	}
	raw, _ := json.Marshal(cfg)
	return config.Plugin{Name: name, Version: "v-" + name, Module: "example.com/headers", Files: files, Config: raw, Stage: stage}
}

// TestPluginsOnTheDataPath: plugins attached to a Service change what its
// backend and its clients see, on HTTP/1.1 (handed from the fast path to
// net/http) and h2c; a beforeAccess plugin sees requests that access
// control then denies, an afterAccess one does not; a plugin that cannot
// load answers 503 naming it (fail) or is skipped (ignore).
func TestPluginsOnTheDataPath(t *testing.T) {
	be := startBackend(t, "127.0.0.2", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Backend-Saw", r.Header.Get("X-Plugin"))
		_, _ = w.Write([]byte("ok\n"))
	}, false)
	api := svc("shop", "api", "", be.ep())
	api.Plugins = []string{"shop/before", "shop/after"}
	api.Rules = []config.AccessRule{{Source: "TrafficTarget shop/api", Sources: []config.Identity{{ServiceAccount: "web", Namespace: "shop"}},
		HTTP: []match.HTTPSpec{{Name: "all", PathRegex: "/"}}}}
	broken := svc("shop", "broken", "", be.ep())
	broken.Plugins = []string{"shop/bad"}
	lenient := svc("shop", "lenient", "", be.ep())
	lenient.Plugins = []string{"shop/bad-ignored"}
	c := baseConfig(api, broken, lenient)
	c.ACL = config.ACLOn
	c.Services[1].Rules = api.Rules
	c.Services[2].Rules = api.Rules
	bad := config.Plugin{Name: "shop/bad", Version: "1", Module: "example.com/bad", Files: map[string]string{"bad.go": "package bad\n\nimport \"os/exec\"\n\nvar _ = exec.Command\n"}}
	ignored := bad
	ignored.Name, ignored.FailurePolicy = "shop/bad-ignored", config.FailOpen
	c.Plugins = []config.Plugin{
		headersPlugin(t, "shop/after", map[string]any{"setRequestHeaders": map[string]string{"X-Plugin": "after"}, "setResponseHeaders": map[string]string{"X-After": "1"}}, config.StageAfterAccess),
		headersPlugin(t, "shop/before", map[string]any{"setResponseHeaders": map[string]string{"X-Before": "1"}}, config.StageBeforeAccess),
		bad, ignored,
	}
	p := startProxy(t, c, nil)
	for _, h2c := range []bool{false, true} {
		allowed := do(t, p.client(webIP, h2c), "GET", "http://api.shop.mesh/", nil)
		if allowed.status != 200 || allowed.header.Get("X-Backend-Saw") != "after" || allowed.header.Get("X-After") != "1" || allowed.header.Get("X-Before") != "1" {
			t.Errorf("h2c=%v allowed: %d %v", h2c, allowed.status, allowed.header)
		}
		denied := do(t, p.client(adminIP, h2c), "GET", "http://api.shop.mesh/", nil)
		if denied.status != 403 || denied.header.Get("X-Before") != "1" || denied.header.Get("X-After") != "" {
			t.Errorf("h2c=%v denied: %d %v (the beforeAccess plugin sees it, the afterAccess one does not)", h2c, denied.status, denied.header)
		}
		closed := do(t, p.client(webIP, h2c), "GET", "http://broken.shop.mesh/", nil)
		if closed.status != 503 || !strings.Contains(closed.body, "shop/bad") {
			t.Errorf("h2c=%v fail-closed plugin: %d %q", h2c, closed.status, closed.body)
		}
		open := do(t, p.client(webIP, h2c), "GET", "http://lenient.shop.mesh/", nil)
		if open.status != 200 {
			t.Errorf("h2c=%v ignored plugin: %d %q", h2c, open.status, open.body)
		}
	}
}
