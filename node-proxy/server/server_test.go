package server

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/trellis-mesh/trellis/node-proxy/admin"
	"github.com/trellis-mesh/trellis/node-proxy/config"
	"github.com/trellis-mesh/trellis/node-proxy/telemetry"
)

const clientIP = "127.0.0.9"

func freePort(t *testing.T) int32 {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return int32(l.Addr().(*net.TCPAddr).Port)
}

// httpBackend answers with its name; requests to /slow wait for release.
type httpBackend struct {
	name    string
	port    int32
	release chan struct{}
	started chan struct{}
}

func startHTTP(t *testing.T, ip, name string) *httpBackend {
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	b := &httpBackend{name: name, port: int32(l.Addr().(*net.TCPAddr).Port), release: make(chan struct{}), started: make(chan struct{}, 10)}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			b.started <- struct{}{}
			<-b.release
		}
		_, _ = io.WriteString(w, name)
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	return b
}

func startTCPEcho(t *testing.T, ip, name string) int32 {
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					if _, err := io.WriteString(c, name+":"+sc.Text()+"\n"); err != nil {
						return // the client went away
					}
				}
			}()
		}
	}()
	return int32(l.Addr().(*net.TCPAddr).Port)
}

type fixture struct {
	httpPort, tcpPort int32
}

func (f fixture) config(httpBE *httpBackend, tcpBE int32) *config.Config {
	c := &config.Config{Node: "n1", Listeners: config.Listeners{HTTP: f.httpPort},
		Services: []config.Service{
			{Namespace: "shop", Name: "web", Ports: []config.ServicePort{{Port: 80, TargetPort: httpBE.port, Protocol: "http"}},
				Endpoints: []config.Endpoint{{IP: "127.0.0.2", Ready: true}}},
			{Namespace: "shop", Name: "db", Ports: []config.ServicePort{{Port: 5432, TargetPort: tcpBE, Protocol: "tcp", ListenPort: f.tcpPort}},
				Endpoints: []config.Endpoint{{IP: "127.0.0.2", Ready: true}}},
		},
		LocalPods: []config.LocalPod{{IP: clientIP, Identity: config.Identity{ServiceAccount: "c", Namespace: "shop"}}}}
	c.Version = c.Hash()
	return c
}

func newProxy(t *testing.T) *Proxy {
	p := New(Options{BindIP: "127.0.0.1", NodeName: "n1", ShutdownGrace: 2 * time.Second, ListenerGrace: 2 * time.Second})
	t.Cleanup(func() { p.Shutdown(context.Background(), 0) })
	return p
}

func get(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
	req.Host = "web.shop.mesh"
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func tcpLine(t *testing.T, c net.Conn, msg string) string {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, msg+"\n"); err != nil {
		t.Fatalf("tcp %q: write: %v", msg, err)
	}
	s, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("tcp %q: %v", msg, err)
	}
	return strings.TrimSpace(s)
}

func TestHotReload(t *testing.T) {
	a, b := startHTTP(t, "127.0.0.2", "A"), startHTTP(t, "127.0.0.2", "B")
	ta, tb := startTCPEcho(t, "127.0.0.2", "A"), startTCPEcho(t, "127.0.0.2", "B")
	f := fixture{httpPort: freePort(t), tcpPort: freePort(t)}
	p := newProxy(t)
	ctx := context.Background()
	cfgA := f.config(a, ta)
	if err := p.Apply(ctx, cfgA); err != nil {
		t.Fatal(err)
	}
	addr := p.HTTPAddr().String()
	tcpAddr := "127.0.0.1:" + strconv.Itoa(int(f.tcpPort))
	if code, body := get(t, addr, "/"); code != 200 || body != "A" {
		t.Fatalf("before reload: %d %q", code, body)
	}

	// In flight: one HTTP request and one TCP connection on config A.
	var wg sync.WaitGroup
	var slowBody string
	wg.Add(1)
	go func() { defer wg.Done(); _, slowBody = get(t, addr, "/slow") }()
	<-a.started
	oldConn, err := net.Dial("tcp", tcpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer oldConn.Close()
	if got := tcpLine(t, oldConn, "x"); got != "A:x" {
		t.Fatalf("tcp before reload: %q", got)
	}

	cfgB := f.config(b, tb)
	if err := p.Apply(ctx, cfgB); err != nil {
		t.Fatal(err)
	}
	if code, body := get(t, addr, "/"); code != 200 || body != "B" {
		t.Fatalf("after reload: %d %q", code, body)
	}
	newConn, err := net.Dial("tcp", tcpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer newConn.Close()
	if got := tcpLine(t, newConn, "y"); got != "B:y" {
		t.Fatalf("new tcp connection after reload: %q", got)
	}
	if got := tcpLine(t, oldConn, "z"); got != "A:z" {
		t.Fatalf("open tcp connection must stay on its old config, got %q", got)
	}
	close(a.release)
	wg.Wait()
	if slowBody != "A" {
		t.Fatalf("in-flight request finished with %q, want A", slowBody)
	}

	// Unchanged version: no-op.
	if err := p.Apply(ctx, f.config(b, tb)); err != nil {
		t.Fatal(err)
	}
	if n := testutil.ToFloat64(p.metrics.ConfigReloads.WithLabelValues("unchanged")); n != 1 {
		t.Fatalf("unchanged reloads %v, want 1", n)
	}

	// A config that fails to build is rejected whole; B keeps serving.
	bad := f.config(a, ta)
	bad.Services[0].Split = &config.Split{Backends: []config.Backend{{Service: "ghost", Weight: 1}}}
	bad.Version = bad.Hash()
	if err := p.Apply(ctx, bad); err == nil || !strings.Contains(err.Error(), "services[0].split.backends[0].service") {
		t.Fatalf("bad config: %v", err)
	}
	// A config whose new listener cannot bind is rejected whole too.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	clash := f.config(a, ta)
	clash.Services[1].Ports[0].ListenPort = int32(busy.Addr().(*net.TCPAddr).Port)
	clash.Version = clash.Hash()
	if err := p.Apply(ctx, clash); err == nil || !strings.Contains(err.Error(), "bind") {
		t.Fatalf("unbindable listener: %v", err)
	}
	if code, body := get(t, addr, "/"); code != 200 || body != "B" {
		t.Fatalf("after rejected configs: %d %q, want B still served", code, body)
	}
	if got := tcpLine(t, newConn, "w"); got != "B:w" {
		t.Fatalf("tcp after rejected configs: %q", got)
	}
	if p.Runtime().Version != cfgB.Version {
		t.Fatal("live version changed by a rejected config")
	}
	if n := testutil.ToFloat64(p.metrics.ConfigReloads.WithLabelValues("rejected")); n != 2 {
		t.Fatalf("rejected reloads %v, want 2", n)
	}
	if why, _ := p.LastRejection(); !strings.Contains(why, "bind") {
		t.Fatalf("last rejection not recorded: %q", why)
	}
	// Wrong node.
	other := f.config(a, ta)
	other.Node = "n2"
	other.Version = other.Hash()
	if err := p.Apply(ctx, other); err == nil || !strings.Contains(err.Error(), `config is for node "n2"`) {
		t.Fatalf("config for another node: %v", err)
	}
}

func TestRemovedListenerLetsConnectionsFinish(t *testing.T) {
	h := startHTTP(t, "127.0.0.2", "A")
	te := startTCPEcho(t, "127.0.0.2", "A")
	f := fixture{httpPort: freePort(t), tcpPort: freePort(t)}
	p := newProxy(t)
	if err := p.Apply(context.Background(), f.config(h, te)); err != nil {
		t.Fatal(err)
	}
	tcpAddr := "127.0.0.1:" + strconv.Itoa(int(f.tcpPort))
	conn, err := net.Dial("tcp", tcpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tcpLine(t, conn, "1")
	c := f.config(h, te)
	c.Services = c.Services[:1]
	c.Version = c.Hash()
	if err := p.Apply(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		c2, err := net.DialTimeout("tcp", tcpAddr, time.Second)
		if err != nil {
			break
		}
		c2.Close()
		if time.Now().After(deadline) {
			t.Fatal("removed listener still accepts")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := tcpLine(t, conn, "2"); got != "A:2" {
		t.Fatalf("connection on a removed listener was cut: %q", got)
	}
}

type staticSource struct{ c *config.Config }

func (s staticSource) Run(ctx context.Context, apply func(context.Context, *config.Config) error) error {
	if err := apply(ctx, s.c); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}

func TestAdminAndDrain(t *testing.T) {
	h := startHTTP(t, "127.0.0.2", "A")
	te := startTCPEcho(t, "127.0.0.2", "A")
	f := fixture{httpPort: freePort(t), tcpPort: freePort(t)}
	adminAddr := "127.0.0.1:" + strconv.Itoa(int(freePort(t)))
	p := New(Options{BindIP: "127.0.0.1", AdminAddr: adminAddr, DrainPeriod: 500 * time.Millisecond, ShutdownGrace: 5 * time.Second,
		Metrics: telemetry.NewMetrics()})
	ctx, stop := context.WithCancel(context.Background())
	cfg := f.config(h, te)
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, staticSource{cfg}) }()

	adminGet := func(path string) (int, string) {
		resp, err := http.Get("http://" + adminAddr + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if code, _ := adminGet("/ready"); code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("never ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if code, _ := adminGet("/live"); code != 200 {
		t.Fatal("/live")
	}
	_, metrics := adminGet("/metrics")
	if !strings.Contains(metrics, `trellis_proxy_config_info{version="`+cfg.Version+`"} 1`) {
		t.Fatal("/metrics lacks the config version")
	}
	_, dbg := adminGet("/debug/config")
	var d admin.Debug
	if err := json.Unmarshal([]byte(dbg), &d); err != nil || d.Version != cfg.Version || d.Config == nil || len(d.Config.Services) != 2 {
		t.Fatalf("/debug/config: %v %s", err, dbg)
	}

	addr := p.HTTPAddr().String()
	var wg sync.WaitGroup
	var inflight string
	wg.Add(1)
	go func() { defer wg.Done(); _, inflight = get(t, addr, "/slow") }()
	<-h.started

	stop() // SIGTERM
	deadline = time.Now().Add(2 * time.Second)
	for {
		if code, body := adminGet("/ready"); code == 503 && strings.Contains(body, "draining") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("readiness did not fail at once on shutdown")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Still serving during the drain period.
	if code, body := get(t, addr, "/"); code != 200 || body != "A" {
		t.Fatalf("request during drain: %d %q", code, body)
	}
	// After the drain period the listener closes while the slow request
	// is still in flight; it must complete.
	deadline = time.Now().Add(3 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("HTTP listener still open after the drain period")
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case err := <-done:
		t.Fatalf("shutdown finished while a request was in flight (Run returned %v)", err)
	default:
	}
	close(h.release)
	wg.Wait()
	if inflight != "A" {
		t.Fatalf("in-flight request lost during shutdown: %q", inflight)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
