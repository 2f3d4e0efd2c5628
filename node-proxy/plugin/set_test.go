package plugin

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/trellis-mesh/trellis/node-proxy/config"
	"github.com/trellis-mesh/trellis/node-proxy/proxyerr"
)

// broken is a plugin that compiles but whose New always fails.
func broken(name string, policy config.PluginFailurePolicy, stage config.PluginStage) config.Plugin {
	p := plugin(map[string]string{"a.go": strings.Replace(withNew(`	"errors"`, ""), "return next, nil", `return nil, errors.New("no upstream configured")`, 1)})
	p.Name, p.FailurePolicy, p.Stage = name, policy, stage
	return p
}

func TestFailurePolicies(t *testing.T) {
	good := dirPlugin(t, "addheader")
	good.Config = json.RawMessage(`{"response":{"X-Good":"1"}}`)
	cases := []struct {
		name    string
		bad     config.Plugin
		status  int
		good    bool   // the good plugin ran
		reason  string // in the 503 body
		skipped int
	}{
		{"fail closed", broken("test/strict", "", ""), http.StatusServiceUnavailable, false, "plugin test/strict is not loaded and its failurePolicy is fail", 0},
		{"fail closed explicit", broken("test/strict", config.FailClosed, ""), http.StatusServiceUnavailable, false, "plugin test/strict is not loaded", 0},
		{"ignore", broken("test/lenient", config.FailOpen, ""), http.StatusOK, true, "", 1},
		{"compile error ignored", func() config.Plugin {
			p := plugin(map[string]string{"a.go": "package a\n\nfunc {"})
			p.Name, p.FailurePolicy = "test/lenient", config.FailOpen
			return p
		}(), http.StatusOK, true, "", 1},
		{"compile error fails closed", func() config.Plugin {
			p := plugin(map[string]string{"a.go": "package a\n\nfunc {"})
			p.Name = "test/strict"
			return p
		}(), http.StatusServiceUnavailable, false, "plugin test/strict is not loaded", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := newEnv(t)
			set, cs := chainsFor(t, env.Env, 0, good, tc.bad)
			if len(set.Errors()) != 1 {
				t.Fatalf("errors: %v", set.Errors())
			}
			res := get(t, server(t, cs, echo).URL)
			if res.status != tc.status || (res.header.Get("X-Good") == "1") != tc.good {
				t.Fatalf("got %+v; want status %d, good plugin ran: %t", res, tc.status, tc.good)
			}
			mustContain(t, "body", res.body, tc.reason)
			if len(cs.After.Skipped()) != tc.skipped {
				t.Errorf("skipped %v, want %d", cs.After.Skipped(), tc.skipped)
			}
			if tc.status == http.StatusServiceUnavailable {
				out := cs.After.Serve(nil, nil, nil)
				if st, class := proxyerr.Status(out.Err); st != 503 || class != proxyerr.NoEndpoint {
					t.Errorf("Serve: %d %s", st, class)
				}
			}
		})
	}
}

func TestStagesSplitChains(t *testing.T) {
	env := newEnv(t)
	before := dirPlugin(t, "addheader")
	before.Name, before.Stage = "test/before", config.StageBeforeAccess
	before.Config = json.RawMessage(`{"response":{"X-Before":"1"}}`)
	after := dirPlugin(t, "addheader")
	after.Name = "test/after"
	after.Config = json.RawMessage(`{"response":{"X-After":"1"}}`)
	set := NewSet([]config.Plugin{after, before}, nil, env.Env)
	cs := set.Chains("shop/api", []string{"test/after", "test/before"}, 0, nil)
	if got := cs.Before.Plugins(); len(got) != 1 || got[0] != "test/before" {
		t.Errorf("before: %v", got)
	}
	if got := cs.After.Plugins(); len(got) != 1 || got[0] != "test/after" {
		t.Errorf("after: %v", got)
	}
	h := cs.Wrap(config.StageBeforeAccess, cs.Wrap(config.StageAfterAccess, echo))
	rec := newRecorder()
	h.ServeHTTP(rec, newRequest())
	if rec.Header().Get("X-Before") != "1" || rec.Header().Get("X-After") != "1" {
		t.Errorf("headers: %v", rec.Header())
	}
	if set.Chains("shop/api", nil, 0, nil) != nil {
		t.Error("a Service without plugins has no chains")
	}
	if (*Chains)(nil).Wrap(config.StageAfterAccess, echo) == nil {
		t.Error("nil chains must pass through")
	}
}

func TestCompileOncePerSource(t *testing.T) {
	env := newEnv(t)
	p := dirPlugin(t, "addheader")
	compiles := func() float64 { return value(t, env.Metrics, "compiles", p.Name) }

	s1 := NewSet([]config.Plugin{p}, nil, env.Env)
	c1 := s1.Chains("shop/api", []string{p.Name}, 0, nil)
	srv := server(t, &Chains{After: c1.After}, echo)
	if res := get(t, srv.URL); res.header.Get("X-Instance") != "1/1" {
		t.Fatalf("first: %+v", res)
	}
	if compiles() != 1 {
		t.Fatalf("compiles = %v, want 1", compiles())
	}

	// Same source and config, new version string: nothing is compiled or
	// instantiated again; the instance (and its state) carries on.
	p.Version = "v2"
	s2 := NewSet([]config.Plugin{p}, s1, env.Env)
	c2 := s2.Chains("shop/api", []string{p.Name}, 0, s1)
	if compiles() != 1 {
		t.Errorf("compiles = %v after a rebuild, want 1", compiles())
	}
	if c2.After != c1.After {
		t.Error("the chain was rebuilt although nothing it depends on changed")
	}
	srv2 := server(t, c2, echo)
	if res := get(t, srv2.URL); res.header.Get("X-Instance") != "1/2" {
		t.Errorf("instance state lost: %v", res.header.Get("X-Instance"))
	}

	// A new config: same program, new instance.
	p.Config = json.RawMessage(`{"response":{"X-New":"1"}}`)
	s3 := NewSet([]config.Plugin{p}, s2, env.Env)
	c3 := s3.Chains("shop/api", []string{p.Name}, 0, s2)
	if compiles() != 1 || c3.After == c2.After {
		t.Errorf("config change: compiles %v, chain reused %t", compiles(), c3.After == c2.After)
	}
	if res := get(t, server(t, c3, echo).URL); res.header.Get("X-New") != "1" || res.header.Get("X-Instance") != "2/1" {
		t.Errorf("config change not applied: %v", res.header)
	}

	// New source: compiled again.
	p.Files = map[string]string{"addheader.go": p.Files["addheader.go"] + "\nvar changed = true\n"}
	s4 := NewSet([]config.Plugin{p}, s3, env.Env)
	if compiles() != 2 {
		t.Errorf("compiles = %v after a source change, want 2", compiles())
	}

	// A plugin that fails to compile is not compiled again either.
	bad := plugin(map[string]string{"a.go": "package a\n\nfunc {"})
	s5 := NewSet([]config.Plugin{p, bad}, s4, env.Env)
	s6 := NewSet([]config.Plugin{p, bad}, s5, env.Env)
	if n := value(t, env.Metrics, "compiles", bad.Name); n != 1 || len(s6.Errors()) != 1 {
		t.Errorf("failed compile: compiles %v, errors %v", n, s6.Errors())
	}

	// Dropped plugins leave the metrics.
	NewSet([]config.Plugin{p}, s6, env.Env)
	if n := testutil.CollectAndCount(env.Metrics.Loaded); n != 1 {
		t.Errorf("loaded series = %d, want 1 (the dropped plugin's series removed)", n)
	}
}

func TestSharedSourceCompiledOnce(t *testing.T) {
	env := newEnv(t)
	a, b := dirPlugin(t, "addheader"), dirPlugin(t, "addheader")
	a.Name, b.Name = "team-a/headers", "team-b/headers"
	s := NewSet([]config.Plugin{a, b}, nil, env.Env)
	if n := value(t, env.Metrics, "compiles", a.Name) + value(t, env.Metrics, "compiles", b.Name); n != 1 {
		t.Errorf("compiles = %v, want 1 for two plugins with the same source", n)
	}
	if len(s.programs) != 1 {
		t.Errorf("programs = %d", len(s.programs))
	}
}
