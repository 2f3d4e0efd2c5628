package serve_test

// These tests run the real stream client (node-proxy/source.Stream, the
// code the proxy runs) against the real server over HTTP/2 on a loopback
// socket. Authentication here is a table (the TokenReview path is proven
// against a real apiserver in controller/app).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"

	"github.com/trellis-mesh/trellis/controller/compile"
	"github.com/trellis-mesh/trellis/controller/serve"
	"github.com/trellis-mesh/trellis/controller/topology"
	"github.com/trellis-mesh/trellis/node-proxy/config"
	"github.com/trellis-mesh/trellis/node-proxy/source"
	"github.com/trellis-mesh/trellis/smi/annotations"
)

type tableAuth map[string]*serve.Caller

func (t tableAuth) Authenticate(_ context.Context, tok string) (*serve.Caller, error) {
	if c, ok := t[tok]; ok {
		return c, nil
	}
	return nil, fmt.Errorf("%w: unknown token", serve.ErrUnauthenticated)
}

type tablePods map[string]*corev1.Pod

func (t tablePods) GetPod(_ context.Context, ns, name string) (*corev1.Pod, error) {
	if p, ok := t[ns+"/"+name]; ok {
		return p, nil
	}
	return nil, apierrors.NewNotFound(corev1.Resource("pods"), name)
}

type allowUser string

func (a allowUser) AllowedDebug(_ context.Context, c *serve.Caller) (bool, string, error) {
	return c.User == string(a), "", nil
}

const proxyUser = "system:serviceaccount:trellis-system:trellis-proxy"

func caller(user, pod, uid, node string) *serve.Caller {
	c := &serve.Caller{User: user, Extra: map[string][]string{}}
	if pod != "" {
		c.Extra[serve.ExtraPodName] = []string{pod}
		c.Extra[serve.ExtraPodUID] = []string{uid}
	}
	if node != "" {
		c.Extra[serve.ExtraNodeName] = []string{node}
	}
	return c
}

func pod(name, uid, node string) *corev1.Pod {
	p := &corev1.Pod{}
	p.Namespace, p.Name, p.UID, p.Spec.NodeName = "trellis-system", name, types.UID(uid), node
	return p
}

type env struct {
	t    *testing.T
	hub  *serve.Hub
	srv  *serve.Server
	addr string
	stop func()
	top  *topology.Topology
	a    compile.Assignments
	last *compile.Result
}

func loadTop(t *testing.T) *topology.Topology {
	f, err := os.Open("../topology/testdata/mesh.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	snap, err := topology.SnapshotFromYAML(f)
	if err != nil {
		t.Fatal(err)
	}
	return topology.Build(snap, topology.Options{MeshNamespace: "trellis-system", DefaultTrafficType: annotations.HTTP})
}

func newEnv(t *testing.T) *env {
	e := &env{t: t, hub: serve.NewHub(), top: loadTop(t), a: compile.Assignments{}}
	for i, s := range e.top.Services {
		for _, k := range s.ListenKeys() {
			e.a[k] = int32(20000 + i)
		}
	}
	e.srv = serve.New(serve.Options{
		Hub: e.hub,
		Auth: tableAuth{
			"tok-a":        caller(proxyUser, "proxy-a", "uid-a", "node-a"),
			"tok-b":        caller(proxyUser, "proxy-b", "uid-b", ""),
			"tok-stale":    caller(proxyUser, "proxy-a", "uid-old", "node-a"),
			"tok-unbound":  caller(proxyUser, "", "", ""),
			"tok-liar":     caller(proxyUser, "proxy-a", "uid-a", "node-b"),
			"tok-app":      caller("system:serviceaccount:shop:web", "web-1", "uid-w", "node-a"),
			"tok-operator": caller("alice", "", "", ""),
		},
		Authz:               allowUser("alice"),
		Pods:                tablePods{"trellis-system/proxy-a": pod("proxy-a", "uid-a", "node-a"), "trellis-system/proxy-b": pod("proxy-b", "uid-b", "node-b")},
		ProxyNamespace:      "trellis-system",
		ProxyServiceAccount: "trellis-proxy",
		Ping:                200 * time.Millisecond,
	})
	e.publish(0)
	e.start("127.0.0.1:0")
	return e
}

// publish compiles the test mesh with web split at w:100-w.
func (e *env) publish(w int32) {
	for _, s := range e.top.Services {
		if s.Key() == "shop/web" && w > 0 {
			sp := *s.Split
			sp.Backends = []config.Backend{{Service: "web-v1", Weight: w}, {Service: "web-v2", Weight: 100 - w}}
			s.Split = &sp
		}
	}
	e.last = compile.Compile(e.top, e.a, compile.Options{MeshDomain: "mesh", ACL: true, HTTPPort: 10000}, e.last)
	e.hub.Publish(e.last)
}

func (e *env) start(addr string) {
	var l net.Listener
	var err error
	deadline := time.Now().Add(5 * time.Second)
	for {
		l, err = net.Listen("tcp", addr)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond) // the old listener's port is being released
	}
	if err != nil {
		e.t.Fatal(err)
	}
	e.addr = l.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := serve.Serve(ctx, e.srv.HTTPServer(), l, time.Second); err != nil {
			e.t.Errorf("serve: %v", err)
		}
	}()
	e.stop = func() { cancel(); <-done }
	e.t.Cleanup(func() { e.stop() })
}

type recorder struct {
	mu      sync.Mutex
	configs []*config.Config
	events  []source.StreamEvent
	ch      chan *config.Config
}

func newRecorder() *recorder { return &recorder{ch: make(chan *config.Config, 100)} }

func (r *recorder) apply(_ context.Context, c *config.Config) error {
	r.mu.Lock()
	r.configs = append(r.configs, c)
	r.mu.Unlock()
	r.ch <- c
	return nil
}

func (r *recorder) event(e source.StreamEvent) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

func (r *recorder) frames(kind string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, e := range r.events {
		if e.Kind == "frame" && e.Frame == kind {
			n++
		}
	}
	return n
}

func (r *recorder) wait(t *testing.T, version string) *config.Config {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case c := <-r.ch:
			if c.Version == version {
				return c
			}
		case <-deadline:
			t.Fatalf("version %s never arrived", version)
		}
	}
}

func tokenFile(t *testing.T, tok string) string {
	p := t.TempDir() + "/token"
	if err := os.WriteFile(p, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func runClient(t *testing.T, e *env, tok string, rec *recorder) (*source.Stream, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	s := &source.Stream{URL: "http://" + e.addr, TokenFile: tokenFile(t, tok), MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		IdleTimeout: 2 * time.Second, OnEvent: rec.event}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, rec.apply) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("stream Run: %v", err)
		}
	})
	return s, cancel
}

// TestStreamSnapshotDeltaAndReconnect: snapshot on connect, a delta on a
// split change, and after a controller restart only a "current" frame.
func TestStreamSnapshotDeltaAndReconnect(t *testing.T) {
	e := newEnv(t)
	rec := newRecorder()
	runClient(t, e, "tok-a", rec)

	want := e.last.Node("node-a")
	got := rec.wait(t, want.Version)
	if b, _ := json.Marshal(got); !bytes.Equal(b, want.JSON()) {
		t.Fatalf("received config differs from the compiled one")
	}
	if got.Node != "node-a" {
		t.Fatalf("got node %s's config", got.Node)
	}

	e.publish(50)
	next := e.last.Node("node-a")
	c := rec.wait(t, next.Version)
	if c.Hash() != next.Version || rec.frames("delta") != 1 {
		t.Fatalf("delta: hash %s want %s; delta frames %d", c.Hash(), next.Version, rec.frames("delta"))
	}

	// Controller restart: the client reconnects holding the version; the
	// proxy is not handed the same config again.
	addr := e.addr
	e.stop()
	applied := len(rec.configs)
	e.start(addr)
	deadline := time.Now().Add(10 * time.Second)
	for rec.frames("current") == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no reconnect with a current frame; events %+v", rec.events)
		}
		time.Sleep(10 * time.Millisecond)
	}
	rec.mu.Lock()
	if len(rec.configs) != applied {
		t.Errorf("reconnect re-applied the config")
	}
	rec.mu.Unlock()
	e.publish(10)
	rec.wait(t, e.last.Node("node-a").Version)
}

// TestStreamOwnNodeOnly: the node comes from the token's bound pod.
func TestStreamOwnNodeOnly(t *testing.T) {
	e := newEnv(t)
	rec := newRecorder()
	runClient(t, e, "tok-b", rec)
	got := rec.wait(t, e.last.Node("node-b").Version)
	if got.Node != "node-b" {
		t.Fatalf("proxy on node-b got %s", got.Node)
	}
}

// TestStreamRefusals: each bad caller gets a clear refusal.
func TestStreamRefusals(t *testing.T) {
	e := newEnv(t)
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	hc := &http.Client{Transport: &http.Transport{Protocols: &p}, Timeout: 5 * time.Second}
	cases := []struct {
		tok  string
		code int
		want string
	}{
		{"", 401, "missing `Authorization: Bearer"},
		{"garbage", 401, "unknown token"},
		{"tok-app", 403, "system:serviceaccount:shop:web may not receive proxy configs"},
		{"tok-unbound", 403, "not bound to a pod"},
		{"tok-stale", 403, "was replaced"},
		{"tok-liar", 403, "token names node node-b but pod proxy-a runs on node-a"},
	}
	for _, tc := range cases {
		req, _ := http.NewRequest("GET", "http://"+e.addr+serve.StreamPath, nil)
		if tc.tok != "" {
			req.Header.Set("Authorization", "Bearer "+tc.tok)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code || !strings.Contains(string(body), tc.want) {
			t.Errorf("token %q: %d %s, want %d with %q", tc.tok, resp.StatusCode, body, tc.code, tc.want)
		}
	}
	// The debug API: proxies and apps are refused, an operator with RBAC is not.
	for tok, code := range map[string]int{"tok-a": 403, "tok-app": 403, "": 401, "tok-operator": 200} {
		req, _ := http.NewRequest("GET", "http://"+e.addr+"/debug/config?node=node-a", nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != code {
			t.Errorf("debug with %q: %d %s, want %d", tok, resp.StatusCode, body, code)
		}
		if code == 200 {
			if c, err := config.DecodeBytes(body); err != nil || c.Version != e.last.Node("node-a").Version {
				t.Errorf("debug config: %v", err)
			}
		}
	}
}

// TestDebugAuthHeader: the debug API takes the token from
// X-Trellis-Authorization (what the kubectl plugin sends through the
// apiserver's pods/proxy, which drops Authorization) with the same checks as
// Authorization; streams and acks never take it.
func TestDebugAuthHeader(t *testing.T) {
	e := newEnv(t)
	hc := &http.Client{Timeout: 5 * time.Second}
	cases := []struct {
		name   string
		method string
		path   string
		header map[string]string
		code   int
		want   string
	}{
		{"operator token in the plugin header", "GET", "/debug/streams", map[string]string{serve.DebugAuthHeader: "Bearer tok-operator"}, 200, `"streams"`},
		{"a proxy may not read debug through it", "GET", "/debug/streams", map[string]string{serve.DebugAuthHeader: "Bearer tok-a"}, 403, "may not read the debug API"},
		{"an app may not read debug through it", "GET", "/debug/streams", map[string]string{serve.DebugAuthHeader: "Bearer tok-app"}, 403, "may not read the debug API"},
		{"unknown token", "GET", "/debug/streams", map[string]string{serve.DebugAuthHeader: "Bearer garbage"}, 401, "unknown token"},
		{"not a bearer value", "GET", "/debug/streams", map[string]string{serve.DebugAuthHeader: "tok-operator"}, 401, serve.DebugAuthHeader},
		{"Authorization wins over the plugin header", "GET", "/debug/streams", map[string]string{"Authorization": "Bearer tok-app", serve.DebugAuthHeader: "Bearer tok-operator"}, 403, "system:serviceaccount:shop:web may not read"},
		{"stream ignores the plugin header", "GET", serve.StreamPath, map[string]string{serve.DebugAuthHeader: "Bearer tok-a"}, 401, "missing `Authorization: Bearer"},
		{"ack ignores the plugin header", "POST", serve.AckPath, map[string]string{serve.DebugAuthHeader: "Bearer tok-a"}, 401, "missing `Authorization: Bearer"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, "http://"+e.addr+tc.path, strings.NewReader(`{"version":"x","applied":true}`))
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.code || !strings.Contains(string(body), tc.want) {
				t.Errorf("%d %s, want %d with %q", resp.StatusCode, body, tc.code, tc.want)
			}
		})
	}
}

// TestStreamRecoversFromDisconnects: the controller goes away while the
// config changes; each time the client comes back with backoff and ends on
// the newest version.
func TestStreamRecoversFromDisconnects(t *testing.T) {
	e := newEnv(t)
	rec := newRecorder()
	runClient(t, e, "tok-a", rec)
	rec.wait(t, e.last.Node("node-a").Version)
	// Cut the server several times while publishing: the client always
	// ends on the newest version.
	for i := int32(1); i <= 3; i++ {
		addr := e.addr
		e.stop()
		e.publish(10 * i)
		e.start(addr)
		rec.wait(t, e.last.Node("node-a").Version)
	}
	if n := rec.frames("snapshot"); n < 1 {
		t.Errorf("snapshots %d", n)
	}
	var disconnects int
	rec.mu.Lock()
	for _, ev := range rec.events {
		if ev.Kind == "disconnected" {
			disconnects++
			if ev.Wait <= 0 {
				t.Errorf("reconnect without backoff")
			}
		}
	}
	rec.mu.Unlock()
	if disconnects < 3 {
		t.Errorf("%d disconnects seen, want 3", disconnects)
	}
}

var _ = errors.New
