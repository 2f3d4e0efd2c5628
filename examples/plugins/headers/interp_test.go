package headers

import (
	"net/http"
	"testing"

	"github.com/trellis-mesh/trellis/node-proxy/config"
	"github.com/trellis-mesh/trellis/node-proxy/plugin"
)

// module is this package's import path: the module path the plugin
// object declares.
const module = "github.com/trellis-mesh/trellis/examples/plugins/headers"

// interpreted loads this directory's source through the proxy's loader,
// as the mesh does, and returns upstream behind it.
func interpreted(t testing.TB, cfg string, upstream http.Handler) http.Handler {
	t.Helper()
	files, err := plugin.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	p := config.Plugin{Name: "examples/headers", Version: "1", Module: module, Files: files, Config: []byte(cfg)}
	set := plugin.NewSet([]config.Plugin{p}, nil, nil)
	if errs := set.Errors(); len(errs) > 0 {
		t.Fatal(errs[0])
	}
	chains := set.Chains("shop/api", []string{p.Name}, 0, nil)
	if u := chains.After.Unavailable(); u != nil {
		t.Fatal(u)
	}
	return chains.Wrap(config.StageAfterAccess, upstream)
}

func TestInterpreted(t *testing.T) {
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			check(t, do(t, interpreted(t, tc.config, upstream), tc.reqIn), i)
		})
	}
}

func TestInterpretedConfigError(t *testing.T) {
	files, err := plugin.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	p := config.Plugin{Name: "examples/headers", Version: "1", Module: module, Files: files,
		Config: []byte(`{"setRequestHeaders":{"bad header":"x"}}`)}
	set := plugin.NewSet([]config.Plugin{p}, nil, nil)
	u := set.Chains("shop/api", []string{p.Name}, 0, nil).After.Unavailable()
	if u == nil || u.Phase != plugin.PhaseNew || u.Err.Error() != `setRequestHeaders: "bad header" is not a valid header name` {
		t.Fatalf("got %v", u)
	}
}

func TestInterpretedKeepsFlushing(t *testing.T) {
	h := interpreted(t, `{"setResponseHeaders":{"X-A":"1"}}`, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := w.(http.Flusher); !ok {
			http.Error(w, "not a flusher", http.StatusInternalServerError)
			return
		}
		_, _ = w.Write([]byte("hello"))
	}))
	resp := do(t, h, nil)
	if resp.status != http.StatusOK || resp.header.Get("X-A") != "1" {
		t.Fatalf("%+v", resp)
	}
}
