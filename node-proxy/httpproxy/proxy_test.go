package httpproxy

import (
	"bufio"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/trellis-mesh/trellis/node-proxy/config"
	"github.com/trellis-mesh/trellis/node-proxy/forward"
	"github.com/trellis-mesh/trellis/node-proxy/telemetry"
	"github.com/trellis-mesh/trellis/smi/match"
)

func echo(name string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Backend", name)
		w.Header().Set("X-Seen-Proto", r.Proto)
		w.Header().Set("X-Seen-Host", r.Host)
		w.Header().Set("X-Seen-Traceparent", r.Header.Get("Traceparent"))
		w.Header().Set("X-Seen-Te", r.Header.Get("Te"))
		w.Header().Set("X-Seen-Secret", r.Header.Get("X-Secret"))
		w.Header().Set("X-Seen-Keepalive", r.Header.Get("Keep-Alive"))
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s %s", name, r.Method, r.URL.RequestURI(), body)
	}
}

func TestRoutingByHostOnSharedListener(t *testing.T) {
	a := startBackend(t, "127.0.0.2", echo("a"), false)
	b := startBackend(t, "127.0.0.3", echo("b"), false)
	p := startProxy(t, baseConfig(svc("shop", "a", "", a.ep()), svc("shop", "b", "", b.ep())), nil)
	for _, h2c := range []bool{false, true} {
		c := p.client(webIP, h2c)
		cases := []struct {
			url, want string
			status    int
		}{
			{"http://a.shop.mesh/x?q=1", "a GET /x?q=1 ", 200},
			{"http://b.shop.mesh:80/y", "b GET /y ", 200},
			{"http://B.SHOP.MESH/z", "b GET /z ", 200},
			{"http://c.shop.mesh/", "no_route: no meshed service port for host c.shop.mesh", 404},
			{"http://a.shop.mesh:8080/", "no_route", 404},
		}
		for _, tc := range cases {
			r := do(t, c, "GET", tc.url, nil)
			if r.status != tc.status || !strings.HasPrefix(r.body, tc.want) {
				t.Errorf("h2c=%v %s: %d %q, want %d %q", h2c, tc.url, r.status, r.body, tc.status, tc.want)
			}
			if tc.status == 404 && r.header.Get(HeaderError) != "no_route" {
				t.Errorf("404 without %s header", HeaderError)
			}
		}
		if r := do(t, c, "GET", "http://a.shop.mesh/", nil); (h2c && r.resp.Proto != "HTTP/2.0") || (!h2c && r.resp.Proto != "HTTP/1.1") {
			t.Errorf("client spoke %s", r.resp.Proto)
		}
	}
}

func TestUpstreamSchemes(t *testing.T) {
	h1 := startBackend(t, "127.0.0.2", echo("h1"), false)
	h2 := startBackend(t, "127.0.0.3", echo("h2c"), true)
	tlsSrv := httptest.NewUnstartedServer(echo("tls"))
	tlsSrv.EnableHTTP2 = true
	tlsSrv.StartTLS()
	t.Cleanup(tlsSrv.Close)
	tlsPort := int32(tlsSrv.Listener.Addr().(*net.TCPAddr).Port)
	caPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tlsSrv.Certificate().Raw}))

	sTLS := svc("shop", "secure", config.SchemeHTTPS, config.Endpoint{IP: "127.0.0.1", Ready: true, Ports: map[string]int32{"web": tlsPort}})
	sTLS.Ports[0].TLS = &config.UpstreamTLS{ServerName: "example.com", CAPEM: caPEM}
	p := startProxy(t, baseConfig(svc("shop", "plain", "", h1.ep()), svc("shop", "grpcish", config.SchemeH2C, h2.ep()), sTLS), nil)
	c := p.client(webIP, false)
	cases := []struct{ host, backend, proto string }{
		{"plain.shop.mesh", "h1", "HTTP/1.1"},
		{"grpcish.shop.mesh", "h2c", "HTTP/2.0"},
		{"secure.shop.mesh", "tls", "HTTP/2.0"},
	}
	for _, tc := range cases {
		r := do(t, c, "GET", "http://"+tc.host+"/", nil)
		if r.status != 200 || r.header.Get("X-Backend") != tc.backend || r.header.Get("X-Seen-Proto") != tc.proto {
			t.Errorf("%s: %d backend=%q proto=%q body=%q", tc.host, r.status, r.header.Get("X-Backend"), r.header.Get("X-Seen-Proto"), r.body)
		}
		if r.header.Get("X-Seen-Host") != tc.host {
			t.Errorf("%s: upstream saw Host %q; the original authority must be kept", tc.host, r.header.Get("X-Seen-Host"))
		}
	}
	// A wrong CA must fail closed with 502, not fall back to plaintext.
	bad := baseConfig(sTLS)
	bad.Services[0].Ports[0].TLS = &config.UpstreamTLS{ServerName: "other.example"}
	p2 := startProxy(t, bad, nil)
	if r := do(t, p2.client(webIP, false), "GET", "http://secure.shop.mesh/", nil); r.status != 502 {
		t.Fatalf("unverifiable upstream certificate: got %d, want 502", r.status)
	}
}

func TestTrailersAndStreaming(t *testing.T) {
	be := startBackend(t, "127.0.0.2", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Announced")
		w.Header().Set("Content-Type", "application/grpc")
		w.WriteHeader(200)
		_, _ = io.WriteString(w, "part1")
		w.(http.Flusher).Flush()
		_, _ = io.WriteString(w, "part2")
		w.Header().Set("X-Announced", "a")
		w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
	}, true)
	p := startProxy(t, baseConfig(svc("shop", "rpc", config.SchemeH2C, be.ep())), nil)
	r := do(t, p.client(webIP, true), "POST", "http://rpc.shop.mesh/pkg.Svc/Method", map[string]string{"Te": "trailers"})
	if r.status != 200 || r.body != "part1part2" {
		t.Fatalf("got %d %q", r.status, r.body)
	}
	if r.resp.Trailer.Get("X-Announced") != "a" || r.resp.Trailer.Get("Grpc-Status") != "0" {
		t.Fatalf("trailers lost: %v", r.resp.Trailer)
	}
}

func TestHopByHopAndTraceparent(t *testing.T) {
	be := startBackend(t, "127.0.0.2", echo("a"), false)
	p := startProxy(t, baseConfig(svc("shop", "a", "", be.ep())), nil)
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	r := do(t, p.client(webIP, false), "GET", "http://a.shop.mesh/", map[string]string{
		"Connection": "X-Secret", "X-Secret": "s", "Keep-Alive": "timeout=5", "Te": "trailers, deflate", "Traceparent": tp,
	})
	if r.status != 200 {
		t.Fatal(r.status, r.body)
	}
	if r.header.Get("X-Seen-Secret") != "" || r.header.Get("X-Seen-Keepalive") != "" {
		t.Fatal("hop-by-hop headers (listed in Connection, Keep-Alive) reached the upstream")
	}
	if r.header.Get("X-Seen-Te") != "trailers" {
		t.Fatalf("TE: trailers must be kept for gRPC, upstream saw %q", r.header.Get("X-Seen-Te"))
	}
	got, ok := telemetry.ParseTraceparent(r.header.Get("X-Seen-Traceparent"))
	if !ok || got.TraceIDString() != "4bf92f3577b34da6a3ce929d0e0e4736" || got.String() == tp {
		t.Fatalf("traceparent not continued with a new span: %q", r.header.Get("X-Seen-Traceparent"))
	}
	r = do(t, p.client(webIP, false), "GET", "http://a.shop.mesh/", nil)
	if _, ok := telemetry.ParseTraceparent(r.header.Get("X-Seen-Traceparent")); !ok {
		t.Fatal("no traceparent started for a request without one")
	}
	r = do(t, p.client(webIP, false), "GET", "http://a.shop.mesh/", map[string]string{"Connection": "Upgrade", "Upgrade": "websocket"})
	if r.status != 400 || !strings.Contains(r.header.Get(HeaderReason), "upgrade to websocket is not supported") {
		t.Fatalf("websocket upgrade: %d %q", r.status, r.header.Get(HeaderReason))
	}
}

func aclConfig(be *backend) *config.Config {
	c := baseConfig(svc("shop", "api", "", be.ep()))
	c.ACL = config.ACLOn
	c.Services[0].Rules = []config.AccessRule{{
		Source:  "TrafficTarget shop/api-access rule HTTPRouteGroup shop/api match metrics",
		Sources: []config.Identity{{ServiceAccount: "web", Namespace: "shop"}},
		HTTP:    []match.HTTPSpec{{Name: "metrics", PathRegex: "/metrics", Methods: []string{"GET"}}},
	}}
	return c
}

func TestAccessControl(t *testing.T) {
	be := startBackend(t, "127.0.0.2", echo("api"), false)
	p := startProxy(t, aclConfig(be), nil)
	cases := []struct {
		name, src, method, path string
		hdr                     map[string]string
		status                  int
		reason                  string
	}{
		{"allowed", webIP, "GET", "/metrics", nil, 200, ""},
		{"route not allowed", webIP, "POST", "/metrics", nil, 403,
			"no access rule allows shop/web to POST /metrics on shop/api:80; the request matches no route or port of: TrafficTarget shop/api-access rule HTTPRouteGroup shop/api match metrics"},
		{"identity not allowed", adminIP, "GET", "/metrics", nil, 403, "no access rule allows ops/admin"},
		{"unknown source", strange, "GET", "/metrics", nil, 403, "source is not a pod on this node"},
		{"X-Forwarded-For grants nothing", strange, "GET", "/metrics",
			map[string]string{"X-Forwarded-For": webIP, "X-Real-Ip": webIP, "Forwarded": "for=" + webIP}, 403, "source is not a pod on this node"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := be.hits.Load()
			for _, h2c := range []bool{false, true} {
				r := do(t, p.client(tc.src, h2c), tc.method, "http://api.shop.mesh"+tc.path, tc.hdr)
				if r.status != tc.status {
					t.Fatalf("h2c=%v: status %d, want %d (%s)", h2c, r.status, tc.status, r.body)
				}
				if tc.status == 403 {
					if r.header.Get(HeaderError) != "denied" || !strings.Contains(r.header.Get(HeaderReason), tc.reason) || !strings.Contains(r.body, tc.reason) {
						t.Fatalf("403 does not explain itself: header %q body %q", r.header.Get(HeaderReason), r.body)
					}
				}
			}
			if tc.status == 403 && be.hits.Load() != before {
				t.Fatal("a denied request reached the backend")
			}
		})
	}
	// Dot-segments would let "/metrics/../admin" pass a /metrics rule and
	// reach /admin after the backend normalises the path; encoded too.
	for _, path := range []string{"/metrics/../admin", "/metrics/%2e%2e/admin", "/metrics/./x"} {
		conn, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(webIP)}}).Dial("tcp", p.addr)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(conn, "GET "+path+" HTTP/1.1\r\nHost: api.shop.mesh\r\n\r\n"); err != nil {
			t.Fatalf("%s: write request: %v", path, err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err == nil {
			resp.Body.Close()
		}
		conn.Close()
		if err != nil || resp.StatusCode != 400 {
			t.Fatalf("%s: %v %v, want 400", path, resp, err)
		}
	}
	if n := testutil.ToFloat64(p.metrics.HTTPRequests.WithLabelValues("shop", "web", "", "shop", "api", "4xx", "denied")); n != 2 {
		t.Fatalf("denied requests metric = %v, want 2", n)
	}
}

// A request with both Content-Length and Transfer-Encoding is ambiguous:
// a peer that frames it by the other field would see a "smuggled" request
// behind it. The fast path refuses it with 400 and closes the connection,
// so nothing behind it is read as a request and the upstream sees nothing.
func TestSmuggledRequestIsRejected(t *testing.T) {
	var mu sync.Mutex
	var paths []string
	be := startBackend(t, "127.0.0.2", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths = append(paths, r.Method+" "+r.URL.Path)
		mu.Unlock()
		_, _ = io.Copy(io.Discard, r.Body)
	}, false)
	p := startProxy(t, aclConfig(be), nil)
	conn, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(webIP)}}).Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	smuggled := "GET /admin HTTP/1.1\r\nHost: api.shop.mesh\r\n\r\n"
	req := "GET /metrics HTTP/1.1\r\nHost: api.shop.mesh\r\nContent-Length: " + fmt.Sprint(5+len(smuggled)) +
		"\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 400 || resp.Header.Get(HeaderError) != "bad_request" || !resp.Close ||
		!strings.Contains(string(b), "both Content-Length and Transfer-Encoding") {
		t.Fatalf("got %d close=%v %q; want 400 naming the conflict, and Connection: close", resp.StatusCode, resp.Close, b)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("connection still open after the 400 (read: %v)", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(paths) != 0 {
		t.Fatalf("upstream saw %q; want nothing", paths)
	}
}

func TestHeaderLimits(t *testing.T) {
	be := startBackend(t, "127.0.0.2", echo("a"), false)
	p := startProxy(t, baseConfig(svc("shop", "a", "", be.ep())), nil)
	c := p.client(webIP, false)
	many := map[string]string{}
	for i := 0; i < 120; i++ {
		many[fmt.Sprintf("X-H%d", i)] = "v"
	}
	if r := do(t, c, "GET", "http://a.shop.mesh/", many); r.status != 431 || r.header.Get(HeaderError) != "bad_request" {
		t.Fatalf("120 headers: %d %s", r.status, r.body)
	}
	if r := do(t, c, "GET", "http://a.shop.mesh/", map[string]string{"X-Big": strings.Repeat("a", 64<<10)}); r.status != 431 {
		t.Fatalf("64KiB header: %d", r.status)
	}
	// Malformed request line: 400 and the connection is closed.
	conn, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: a.shop.mesh\r\nBad Header\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("malformed header: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("malformed header: %v", resp)
	}
}

func TestSlowlorisIsCutOff(t *testing.T) {
	be := startBackend(t, "127.0.0.2", echo("a"), false)
	p := startProxy(t, baseConfig(svc("shop", "a", "", be.ep())), nil) // ReadHeaderTimeout 2s
	conn, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: a.shop.mesh\r\n"); err != nil { // never finishes the head
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	_, err = io.ReadAll(conn)
	if err != nil {
		t.Fatalf("connection not closed by the proxy: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("closed after %v; ReadHeaderTimeout is 2s", d)
	}
}

// panicky is a forwarder with a bug.
type panicky struct{}

func (panicky) RoundTrip(*http.Request, *forward.Destination) (*http.Response, error) {
	panic("bug in forwarder")
}

func TestPanicRecovered(t *testing.T) {
	be := startBackend(t, "127.0.0.2", echo("a"), false)
	p := startProxy(t, baseConfig(svc("shop", "a", "", be.ep())), panicky{})
	c := p.client(webIP, false)
	for i := 0; i < 2; i++ {
		if r := do(t, c, "GET", "http://a.shop.mesh/", nil); r.status != 500 || r.header.Get(HeaderError) != "internal" {
			t.Fatalf("panic: %d %q", r.status, r.body)
		}
	}
	if n := testutil.ToFloat64(p.metrics.Panics); n != 2 {
		t.Fatalf("panics counted %v, want 2", n)
	}
}
