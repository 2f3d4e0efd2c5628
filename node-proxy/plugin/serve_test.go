package plugin

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/node-proxy/config"
	"github.com/trellis-mesh/trellis/node-proxy/proxyerr"
)

func TestServeThroughPlugin(t *testing.T) {
	env := newEnv(t)
	p := dirPlugin(t, "addheader")
	p.Config = json.RawMessage(`{"request":{"X-Added":"req"},"response":{"X-Resp":"resp"},"nested":{"enabled":true}}`)
	set, cs := chainsFor(t, env.Env, 0, p)
	if errs := set.Errors(); len(errs) > 0 {
		t.Fatal(errs)
	}
	srv := server(t, cs, echo)
	for i := 1; i <= 3; i++ {
		res := get(t, srv.URL+"/x")
		if res.err != nil || res.status != http.StatusOK || res.body != "ok" {
			t.Fatalf("got %+v", res)
		}
		for k, want := range map[string]string{"Echo-X-Added": "req", "X-Resp": "resp", "X-Default": "yes",
			"X-Nested": "on", "X-Plugin-Name": "test/addheader", "X-Instance": fmt.Sprintf("1/%d", i)} {
			if got := res.header.Get(k); got != want {
				t.Errorf("request %d: %s = %q, want %q", i, k, got, want)
			}
		}
	}
}

func TestConfigDefaultsKept(t *testing.T) {
	env := newEnv(t)
	p := dirPlugin(t, "addheader")
	p.Config = json.RawMessage(`{"limit":3}`)
	_, cs := chainsFor(t, env.Env, 0, p)
	res := get(t, server(t, cs, echo).URL)
	if res.header.Get("X-Default") != "yes" || res.header.Get("X-Nested") != "" {
		t.Fatalf("defaults from CreateConfig lost: %v", res.header)
	}
}

// misbehaving serves the misbehave plugin with timeout on a real socket.
func misbehaving(t *testing.T, timeout time.Duration, upstream http.Handler) (testEnv, *httptest.Server) {
	t.Helper()
	env := newEnv(t)
	set, cs := chainsFor(t, env.Env, timeout, dirPlugin(t, "misbehave"))
	if errs := set.Errors(); len(errs) > 0 {
		t.Fatal(errs)
	}
	return env, server(t, cs, upstream)
}

func TestPanicBecomes500(t *testing.T) {
	env, srv := misbehaving(t, 0, echo)
	res := get(t, srv.URL+"/panic")
	if res.err != nil || res.status != http.StatusInternalServerError {
		t.Fatalf("got %+v, want 500", res)
	}
	mustContain(t, "body", res.body, "plugin test/misbehave panicked", "assignment to entry in nil map")
	if n := value(t, env.Metrics, "panics", "test/misbehave"); n != 1 {
		t.Errorf("panics = %v, want 1", n)
	}
	if env.logs.FilterMessage("plugin panicked; request answered 500").Len() != 1 {
		t.Errorf("panic not logged: %v", env.logs.All())
	}
	// The proxy is fine and the plugin keeps serving.
	if res := get(t, srv.URL+"/fine"); res.status != http.StatusOK || res.body != "ok" {
		t.Fatalf("after a panic: %+v", res)
	}
}

func TestPanicAfterWriteCutsResponse(t *testing.T) {
	env, srv := misbehaving(t, 0, echo)
	res := get(t, srv.URL+"/panic-after-write")
	if res.err == nil {
		t.Fatalf("a response cut by a panic must not look complete: %+v", res)
	}
	if n := value(t, env.Metrics, "panics", "test/misbehave"); n != 1 {
		t.Errorf("panics = %v, want 1", n)
	}
	if res := get(t, srv.URL+"/fine"); res.status != http.StatusOK {
		t.Fatalf("after a panic: %+v", res)
	}
}

func TestAbortIsNotCountedAsPanic(t *testing.T) {
	env, srv := misbehaving(t, 0, echo)
	if res := get(t, srv.URL+"/abort"); res.err == nil {
		t.Fatalf("http.ErrAbortHandler must abort the response: %+v", res)
	}
	if n := value(t, env.Metrics, "panics", "test/misbehave"); n != 0 {
		t.Errorf("panics = %v, want 0", n)
	}
}

func TestBlockingPluginTimesOut(t *testing.T) {
	for _, path := range []string{"/block?ms=1500", "/spin"} {
		t.Run(path, func(t *testing.T) {
			env, srv := misbehaving(t, 200*time.Millisecond, echo)
			res := get(t, srv.URL+path)
			if res.err != nil || res.status != http.StatusGatewayTimeout {
				t.Fatalf("got %+v, want 504", res)
			}
			if res.took > time.Second {
				t.Errorf("answered after %s; the timeout is 200ms", res.took)
			}
			mustContain(t, "body", res.body, "plugin test/misbehave did not finish within 200ms")
			if res.header.Get("X-Late") != "" || strings.Contains(res.body, "late") {
				t.Errorf("a write after the timeout reached the client: %+v", res)
			}
			if n := value(t, env.Metrics, "timeouts", "test/misbehave"); n != 1 {
				t.Errorf("timeouts = %v, want 1", n)
			}
			if n := value(t, env.Metrics, "abandoned", "test/misbehave"); n != 1 {
				t.Errorf("abandoned = %v, want 1", n)
			}
			if res := get(t, srv.URL+"/fine"); res.status != http.StatusOK {
				t.Fatalf("after a timeout: %+v", res)
			}
			if path == "/spin" {
				return // spins forever: stays abandoned
			}
			eventually(t, "the abandoned goroutine to return", func() bool {
				return value(t, env.Metrics, "abandoned", "test/misbehave") == 0
			})
		})
	}
}

func TestTimeoutExcludesNext(t *testing.T) {
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(400 * time.Millisecond)
		_, _ = io.WriteString(w, "slow")
	})
	env, srv := misbehaving(t, 200*time.Millisecond, slow)
	if res := get(t, srv.URL+"/fine"); res.status != http.StatusOK || res.body != "slow" {
		t.Fatalf("time in next counted against the plugin: %+v", res)
	}
	// Plugin time after next is counted: 100ms of next, 300ms of plugin.
	res := get(t, srv.URL+"/after-next?ms=300")
	if res.err == nil && res.status == http.StatusOK && res.body == "slow" {
		t.Fatalf("plugin time after next was not bounded: %+v", res)
	}
	// (The client may retry the aborted request: at least one timeout.)
	if n := value(t, env.Metrics, "timeouts", "test/misbehave"); n < 1 {
		t.Errorf("timeouts = %v, want at least 1", n)
	}
}

func TestRequestDeadlineBoundsPlugin(t *testing.T) {
	env := newEnv(t)
	_, cs := chainsFor(t, env.Env, 10*time.Second, dirPlugin(t, "misbehave"))
	h := cs.Wrap(config.StageAfterAccess, echo)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 150*time.Millisecond)
		defer cancel()
		h.ServeHTTP(w, r.WithContext(ctx))
	}))
	defer srv.Close()
	res := get(t, srv.URL+"/block?ms=1000")
	if res.status != http.StatusGatewayTimeout || res.took > 900*time.Millisecond {
		t.Fatalf("got %+v, want 504 at the 150ms deadline", res)
	}
	mustContain(t, "body", res.body, "before the request deadline")
}

func TestStreamsWhenPluginDoesNotBlock(t *testing.T) {
	for _, path := range []string{"/fine", "/wrap-flush"} {
		t.Run(path, func(t *testing.T) { testStreams(t, path) })
	}
}

func testStreams(t *testing.T, path string) {
	release := make(chan struct{})
	streaming := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Sum")
		_, _ = io.WriteString(w, "first\n")
		f, ok := w.(http.Flusher)
		if !ok {
			t.Errorf("%T passed to next is not an http.Flusher", w)
			close(release)
			return
		}
		f.Flush()
		<-release
		_, _ = io.WriteString(w, "second\n")
		w.Header().Set("X-Sum", "2 lines")
		w.Header().Set(http.TrailerPrefix+"X-Late-Trailer", "yes")
	})
	_, srv := misbehaving(t, time.Second, streaming)
	resp, err := http.Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != "first\n" {
		t.Fatalf("first chunk: %q %v", line, err)
	}
	close(release) // only now is the rest written: the first chunk was not buffered
	rest, err := io.ReadAll(br)
	if err != nil || string(rest) != "second\n" {
		t.Fatalf("rest: %q %v", rest, err)
	}
	if resp.Trailer.Get("X-Sum") != "2 lines" || resp.Trailer.Get("X-Late-Trailer") != "yes" {
		t.Errorf("trailers lost: %v", resp.Trailer)
	}
}

func TestGoroutinePanicsAreRecovered(t *testing.T) {
	for _, path := range []string{"/go-panic", "/afterfunc"} {
		t.Run(path, func(t *testing.T) {
			env, srv := misbehaving(t, 0, echo)
			if res := get(t, srv.URL+path); res.status != http.StatusOK {
				t.Fatalf("got %+v", res)
			}
			eventually(t, "the goroutine's panic to be counted", func() bool {
				return value(t, env.Metrics, "panics", "test/misbehave") == 1
			})
			if res := get(t, srv.URL+"/fine"); res.status != http.StatusOK {
				t.Fatalf("after a goroutine panic: %+v", res)
			}
		})
	}
}

func TestPluginBodyPanicIsAnError(t *testing.T) {
	var readErr atomic.Value
	reading := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Like the forwarder's transport: read the body on another goroutine.
		done := make(chan error)
		go func() { _, err := io.ReadAll(r.Body); done <- err }()
		err := <-done
		readErr.Store(fmt.Sprint(err))
		w.WriteHeader(http.StatusBadGateway)
	})
	env, srv := misbehaving(t, 0, reading)
	if res := get(t, srv.URL+"/body-panic"); res.status != http.StatusBadGateway {
		t.Fatalf("got %+v", res)
	}
	mustContain(t, "read error", fmt.Sprint(readErr.Load()), "request body panicked", "reader exploded")
	if n := value(t, env.Metrics, "panics", "test/misbehave"); n != 1 {
		t.Errorf("panics = %v, want 1", n)
	}
}

func TestContractMisuse(t *testing.T) {
	var calls atomic.Int32
	counting := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		echo(w, r)
	})
	env, srv := misbehaving(t, 0, counting)
	res := get(t, srv.URL+"/next-twice")
	if calls.Load() != 1 {
		t.Errorf("next ran %d times, want once", calls.Load())
	}
	if res.status != http.StatusOK || res.body != "ok" {
		t.Errorf("the first call's response should stand: %+v", res)
	}
	if env.logs.FilterFieldKey("error").Len() != 1 {
		t.Errorf("calling next twice was not logged: %v", env.logs.All())
	}
	res = get(t, srv.URL+"/drop-context")
	if res.status != http.StatusInternalServerError {
		t.Fatalf("got %+v, want 500", res)
	}
	mustContain(t, "body", res.body, "plugin test/misbehave passed next a request whose context does not derive")
	if calls.Load() != 1 {
		t.Errorf("next ran for a request without the proxy's context")
	}
}

func TestPackageVariablesArePrivate(t *testing.T) {
	eof, abort, canceled := io.EOF, http.ErrAbortHandler, context.Canceled
	env := newEnv(t)
	set, cs := chainsFor(t, env.Env, 0, dirPlugin(t, "globals"))
	if errs := set.Errors(); len(errs) > 0 {
		t.Fatal(errs)
	}
	if cs.After.Unavailable() != nil {
		t.Fatal(cs.After.Unavailable())
	}
	if !errors.Is(io.EOF, eof) || !errors.Is(http.ErrAbortHandler, abort) || !errors.Is(context.Canceled, canceled) ||
		http.DefaultTransport == nil || http.DefaultClient.Timeout != 0 {
		t.Fatal("a plugin changed the proxy's package variables")
	}
}

func TestChainContextEndsWhenChainIsCollected(t *testing.T) {
	var reported atomic.Bool
	report := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reported.Store(true) }))
	defer report.Close()
	env := newEnv(t)
	p := dirPlugin(t, "lifecycle")
	p.Config = json.RawMessage(fmt.Sprintf(`{"report":%q}`, report.URL))
	func() {
		set, cs := chainsFor(t, env.Env, 0, p)
		if cs.After == nil || len(set.Errors()) > 0 {
			t.Fatal(set.Errors())
		}
	}()
	eventually(t, "the plugin's context to end once its chain is unreachable", func() bool {
		runtime.GC()
		return reported.Load()
	})
}

func TestServeOutcome(t *testing.T) {
	env := newEnv(t)
	_, cs := chainsFor(t, env.Env, 100*time.Millisecond, dirPlugin(t, "misbehave"))
	c := cs.After
	cases := []struct {
		path   string
		status int
		class  proxyerr.Class
		kind   Kind
	}{
		{"/fine", 200, proxyerr.OK, 0},
		{"/panic", 0, proxyerr.Internal, Panicked},
		{"/block?ms=400", 0, proxyerr.Timeout, TimedOut},
	}
	for _, tc := range cases {
		rec := httptest.NewRecorder()
		out := c.Serve(rec, httptest.NewRequest("GET", tc.path, nil), echo)
		if out.Status != tc.status || proxyerr.Classify(out.Err) != tc.class {
			t.Errorf("%s: outcome %+v, want status %d class %s", tc.path, out, tc.status, tc.class)
		}
		var pe *Error
		if tc.kind != 0 && (!errors.As(out.Err, &pe) || pe.Kind != tc.kind || pe.Plugin != "test/misbehave" || pe.Service != "shop/api") {
			t.Errorf("%s: error %v, want a *plugin.Error of kind %d", tc.path, out.Err, tc.kind)
		}
		if tc.status == 200 && (rec.Code != 200 || rec.Body.String() != "ok" || out.Bytes != 2) {
			t.Errorf("%s: recorded %d %q, outcome %+v", tc.path, rec.Code, rec.Body, out)
		}
		if tc.kind != 0 && rec.Body.Len() != 0 {
			t.Errorf("%s: Serve wrote %q; errors are the caller's to write", tc.path, rec.Body)
		}
	}
}

func TestFailuresAreBlamedOnTheRightPlugin(t *testing.T) {
	for _, order := range [][]string{{"test/addheader", "test/misbehave"}, {"test/misbehave", "test/addheader"}} {
		t.Run(strings.Join(order, ","), func(t *testing.T) {
			env := newEnv(t)
			set := NewSet([]config.Plugin{dirPlugin(t, "addheader"), dirPlugin(t, "misbehave")}, nil, env.Env)
			cs := set.Chains("shop/api", order, 200*time.Millisecond, nil)
			srv := server(t, cs, echo)
			if res := get(t, srv.URL+"/panic"); res.status != http.StatusInternalServerError {
				t.Fatalf("got %+v", res)
			}
			if res := get(t, srv.URL+"/block?ms=600"); res.status != http.StatusGatewayTimeout {
				t.Fatalf("got %+v", res)
			}
			for _, m := range []string{"panics", "timeouts"} {
				if got := value(t, env.Metrics, m, "test/misbehave"); got != 1 {
					t.Errorf("%s of test/misbehave = %v, want 1", m, got)
				}
				if got := value(t, env.Metrics, m, "test/addheader"); got != 0 {
					t.Errorf("%s of test/addheader = %v, want 0", m, got)
				}
			}
		})
	}
}

func TestNextPanicIsTheCallers(t *testing.T) {
	env := newEnv(t)
	_, cs := chainsFor(t, env.Env, 0, dirPlugin(t, "addheader"))
	boom := http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("proxy bug") })
	defer func() {
		if v := recover(); v != "proxy bug" {
			t.Fatalf("recovered %v, want the handler's own panic", v)
		}
		if n := value(t, env.Metrics, "panics", "test/addheader"); n != 0 {
			t.Errorf("a panic behind the plugin was counted against it")
		}
	}()
	cs.After.Serve(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil), boom)
	t.Fatal("Serve returned")
}

func TestPluginsDoNotReachTheServer(t *testing.T) {
	env := newEnv(t)
	_, cs := chainsFor(t, env.Env, 0, dirPlugin(t, "addheader"))
	srv := server(t, cs, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Context().Value(http.ServerContextKey) != nil {
			t.Error("the request behind the plugins carries the *http.Server")
		}
		if r.Context().Value(http.LocalAddrContextKey) == nil {
			t.Error("other context values are lost")
		}
	}))
	if res := get(t, srv.URL); res.status != http.StatusOK {
		t.Fatalf("got %+v", res)
	}
}
