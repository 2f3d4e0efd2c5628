package httpproxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/trellis-mesh/trellis/node-proxy/forward"
)

// rawResult is one response read off a raw connection.
type rawResult struct {
	StatusCode int
	Header     http.Header
	Close      bool // the response said Connection: close
}

// rawExchange sends raw bytes on a new connection from webIP and reads one
// response; closed reports whether the proxy closed the connection after.
func rawExchange(t *testing.T, addr, raw string) (res rawResult, body string, closed bool) {
	t.Helper()
	conn, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(webIP)}}).Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	for {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("no response to %q: %v", raw, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusContinue {
			continue
		}
		_, err = br.ReadByte()
		return rawResult{StatusCode: resp.StatusCode, Header: resp.Header, Close: resp.Close}, string(b), errors.Is(err, io.EOF)
	}
}

// TestFastPathStrictFraming: every ambiguous or malformed message framing
// is refused with the status RFC 9112 asks for, and the connection is
// closed, because nothing after such a message can be trusted to start a
// request.
func TestFastPathStrictFraming(t *testing.T) {
	be := startBackend(t, "127.0.0.2", echo("a"), false)
	p := startProxy(t, baseConfig(svc("shop", "a", "", be.ep())), nil)
	const host = "Host: a.shop.mesh\r\n"
	cases := []struct {
		name, raw string
		status    int
		reason    string
	}{
		{"CL and TE", "POST / HTTP/1.1\r\n" + host + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "both Content-Length and Transfer-Encoding"},
		{"TE and CL", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400, "both Content-Length and Transfer-Encoding"},
		{"duplicate CL, same value", "POST / HTTP/1.1\r\n" + host + "Content-Length: 1\r\nContent-Length: 1\r\n\r\nx", 400, "more than one Content-Length"},
		{"CL list", "POST / HTTP/1.1\r\n" + host + "Content-Length: 1, 1\r\n\r\nx", 400, "malformed Content-Length"},
		{"CL sign", "POST / HTTP/1.1\r\n" + host + "Content-Length: +1\r\n\r\nx", 400, "malformed Content-Length"},
		{"CL hex", "POST / HTTP/1.1\r\n" + host + "Content-Length: 0x1\r\n\r\nx", 400, "malformed Content-Length"},
		{"obs-fold", "GET / HTTP/1.1\r\n" + host + "X-A: 1\r\n 2\r\n\r\n", 400, "obsolete line folding"},
		{"space before colon", "GET / HTTP/1.1\r\nHost : a.shop.mesh\r\n\r\n", 400, "malformed header field name"},
		{"bare LF", "GET / HTTP/1.1\nHost: a.shop.mesh\n\n\r\n\r\n", 400, "CRLF"},
		{"bare CR in value", "GET / HTTP/1.1\r\n" + host + "X-A: 1\r2\r\n\r\n", 400, ""},
		{"control char in value", "GET / HTTP/1.1\r\n" + host + "X-A: 1\x002\r\n\r\n", 400, "control character"},
		{"two TE fields", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "more than one Transfer-Encoding"},
		{"TE gzip", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: gzip\r\n\r\n", 501, "transfer coding gzip is not supported"},
		{"TE list", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: gzip, chunked\r\n\r\n", 501, "not supported"},
		{"TE in HTTP/1.0", "POST / HTTP/1.0\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "HTTP/1.0"},
		{"two Host fields", "GET / HTTP/1.1\r\n" + host + host + "\r\n", 400, "more than one Host"},
		{"no Host", "GET / HTTP/1.1\r\nX-A: 1\r\n\r\n", 400, "missing Host"},
		{"bad Host", "GET / HTTP/1.1\r\nHost: a.shop.mesh/x\r\n\r\n", 400, "malformed Host"},
		{"HTTP/1.2", "GET / HTTP/1.2\r\n" + host + "\r\n", 505, "not supported"},
		{"garbage version", "GET / HTTX/1.1\r\n" + host + "\r\n", 400, "malformed HTTP version"},
		{"space in target", "GET /a b HTTP/1.1\r\n" + host + "\r\n", 400, ""},
		{"bad chunk size", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400, "malformed chunked request body"},
		{"chunk size overflow", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n10000000000000000\r\nx\r\n0\r\n\r\n", 400, "malformed chunked"},
		{"chunk without CRLF", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n", 400, "malformed chunked"},
		{"negative chunk size", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n", 400, "malformed chunked"},
		{"too many fields", "GET / HTTP/1.1\r\n" + host + strings.Repeat("X-A: 1\r\n", 101) + "\r\n", 431, "header fields"},
		{"head too large", "GET / HTTP/1.1\r\n" + host + "X-A: " + strings.Repeat("a", 33<<10) + "\r\n\r\n", 431, "request head larger than"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body, closed := rawExchange(t, p.addr, tc.raw)
			if resp.StatusCode != tc.status || resp.Header.Get(HeaderError) != "bad_request" || !strings.Contains(body, tc.reason) {
				t.Fatalf("got %d %s %q; want %d bad_request containing %q", resp.StatusCode, resp.Header.Get(HeaderError), body, tc.status, tc.reason)
			}
			if !closed || !resp.Close {
				t.Fatalf("connection left open (closed=%v, Connection: close=%v)", closed, resp.Close)
			}
		})
	}
	if n := be.hits.Load(); n > 4 {
		// Only the four bad chunked bodies reach the pod: their heads are
		// valid and the body is streamed; the pod then sees the cut body.
		t.Fatalf("backend saw %d requests; malformed heads must not reach it", n)
	}
}

// TestFastPathBodiesAndFraming: request and response bodies of every
// framing are relayed intact over keep-alive connections.
func TestFastPathBodiesAndFraming(t *testing.T) {
	be := startBackend(t, "127.0.0.2", func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		switch r.URL.Path {
		case "/chunked":
			w.Header().Set("Trailer", "X-Sum")
			w.WriteHeader(200)
			for i := 0; i < 3; i++ {
				fmt.Fprintf(w, "part%d;", i)
				w.(http.Flusher).Flush()
			}
			w.Header().Set("X-Sum", fmt.Sprint(len(b)))
		case "/nocontent":
			w.WriteHeader(204)
		default:
			w.Header().Set("X-Len", fmt.Sprint(len(b)))
			w.Header().Set("X-TE", strings.Join(r.TransferEncoding, ","))
			_, _ = w.Write(b)
		}
	}, false)
	p := startProxy(t, baseConfig(svc("shop", "a", "", be.ep())), nil)
	c := p.client(webIP, false)
	big := strings.Repeat("0123456789abcdef", 20000) // 320 KB, more than any buffer
	cases := []struct {
		name, method, path string
		body               io.Reader
		chunked            bool
		wantBody           string
	}{
		{"small CL body", "POST", "/", strings.NewReader("hello"), false, "hello"},
		{"large CL body", "PUT", "/", strings.NewReader(big), false, big},
		{"chunked request", "POST", "/", io.MultiReader(strings.NewReader("ab"), strings.NewReader("cd")), true, "abcd"},
		{"large chunked request", "POST", "/", struct{ io.Reader }{strings.NewReader(big)}, true, big},
		{"chunked response with trailer", "POST", "/chunked", strings.NewReader("xyz"), false, "part0;part1;part2;"},
		{"no content", "GET", "/nocontent", nil, false, ""},
		{"HEAD", "HEAD", "/", nil, false, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, "http://a.shop.mesh"+tc.path, tc.body)
			if tc.chunked {
				req.ContentLength = -1
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tc.wantBody {
				t.Fatalf("body %d bytes, want %d", len(b), len(tc.wantBody))
			}
			if tc.chunked && resp.Header.Get("X-TE") != "chunked" {
				t.Fatalf("upstream saw Transfer-Encoding %q, want chunked", resp.Header.Get("X-TE"))
			}
			if tc.path == "/chunked" && resp.Trailer.Get("X-Sum") != "3" {
				t.Fatalf("trailer lost: %v", resp.Trailer)
			}
		})
	}
}

// TestFastPathKeepAliveAndPooling: requests pipelined on one client
// connection are answered in order, and upstream connections are reused.
func TestFastPathKeepAliveAndPooling(t *testing.T) {
	var conns atomic.Int64
	be := startBackend(t, "127.0.0.2", echo("a"), false, func(s *http.Server) {
		s.ConnState = func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				conns.Add(1)
			}
		}
	})
	p := startProxy(t, baseConfig(svc("shop", "a", "", be.ep())), nil)
	conn, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(webIP)}}).Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	var raw bytes.Buffer
	for i := 0; i < 50; i++ {
		fmt.Fprintf(&raw, "GET /%d HTTP/1.1\r\nHost: a.shop.mesh\r\n\r\n", i)
	}
	if _, err := conn.Write(raw.Bytes()); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	for i := 0; i < 50; i++ {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := fmt.Sprintf("a GET /%d ", i); string(b) != want {
			t.Fatalf("response %d: %q, want %q", i, b, want)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("50 sequential requests opened %d upstream connections, want 1", n)
	}
	// Connection: close is honoured.
	resp, _, closed := rawExchange(t, p.addr, "GET / HTTP/1.1\r\nHost: a.shop.mesh\r\nConnection: close\r\n\r\n")
	if resp.StatusCode != 200 || !closed || !resp.Close {
		t.Fatalf("Connection: close: %d closed=%v", resp.StatusCode, closed)
	}
}

// TestFastPathStaleUpstream: a pooled connection the pod closed while idle
// is replaced without the client noticing.
func TestFastPathStaleUpstream(t *testing.T) {
	be := startBackend(t, "127.0.0.2", echo("a"), false, func(s *http.Server) { s.IdleTimeout = 50 * time.Millisecond })
	p := startProxy(t, baseConfig(svc("shop", "a", "", be.ep())), nil)
	c := p.client(webIP, false)
	for i := 0; i < 3; i++ {
		if r := do(t, c, "GET", "http://a.shop.mesh/", nil); r.status != 200 {
			t.Fatalf("request %d: %d %s", i, r.status, r.body)
		}
		// Let the pod close the pooled connection.
		time.Sleep(150 * time.Millisecond)
	}
}

// TestFastPathHandoff: what the fast path does not serve reaches net/http
// with every byte intact.
func TestFastPathHandoff(t *testing.T) {
	be := startBackend(t, "127.0.0.2", echo("a"), false)
	p := startProxy(t, baseConfig(svc("shop", "a", "", be.ep())), nil)
	cases := []struct{ name, raw, want string }{
		{"HTTP/1.0", "GET /ten HTTP/1.0\r\nHost: a.shop.mesh\r\n\r\n", "a GET /ten "},
		{"Expect 100-continue", "POST /e HTTP/1.1\r\nHost: a.shop.mesh\r\nConnection: close\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok", "a POST /e ok"},
		{"absolute form", "GET http://a.shop.mesh/abs HTTP/1.1\r\nHost: a.shop.mesh\r\nConnection: close\r\n\r\n", "a GET /abs "},
		{"after a fast request", "GET /1 HTTP/1.1\r\nHost: a.shop.mesh\r\n\r\nGET /2 HTTP/1.0\r\nHost: a.shop.mesh\r\n\r\n", "a GET /1 "},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body, _ := rawExchange(t, p.addr, tc.raw)
			if resp.StatusCode != 200 || body != tc.want {
				t.Fatalf("got %d %q, want 200 %q", resp.StatusCode, body, tc.want)
			}
		})
	}
}

// panicDialer is a forwarder whose dialer has a bug.
type panicDialer struct{ panicky }

func (panicDialer) DialContext(context.Context, string, *forward.Destination) (net.Conn, error) {
	panic("bug in dialer")
}

func TestFastPathPanicRecovered(t *testing.T) {
	be := startBackend(t, "127.0.0.2", echo("a"), false)
	p := startProxy(t, baseConfig(svc("shop", "a", "", be.ep())), panicDialer{})
	for i := 0; i < 2; i++ {
		resp, _, closed := rawExchange(t, p.addr, "GET / HTTP/1.1\r\nHost: a.shop.mesh\r\n\r\n")
		if resp.StatusCode != 500 || resp.Header.Get(HeaderError) != "internal" || !closed {
			t.Fatalf("panic: %d %q closed=%v", resp.StatusCode, resp.Header.Get(HeaderError), closed)
		}
	}
	if n := testutil.ToFloat64(p.metrics.Panics); n != 2 {
		t.Fatalf("panics counted %v, want 2", n)
	}
}

// TestFastPathLegacyParity runs the main routing and policy tests on the
// net/http-only server too, so both paths keep one behaviour.
func TestFastPathLegacyParity(t *testing.T) {
	legacyOnly = true
	defer func() { legacyOnly = false }()
	for name, f := range map[string]func(*testing.T){
		"routing":  TestRoutingByHostOnSharedListener,
		"schemes":  TestUpstreamSchemes,
		"acl":      TestAccessControl,
		"hopbyhop": TestHopByHopAndTraceparent,
		"split":    TestSplitWeightsAndMatches,
		"retries":  TestRetries,
		"errors":   TestErrorClassStatuses,
		"headers":  TestHeaderLimits,
	} {
		t.Run(name, f)
	}
}

// TestFastPathErrorKeepsFraming: after a proxy-made error for a request
// with a body, the next pipelined request is read where it starts (the
// body is skipped, not parsed as a request), or the connection is closed.
func TestFastPathErrorKeepsFraming(t *testing.T) {
	be := startBackend(t, "127.0.0.2", echo("api"), false)
	p := startProxy(t, aclConfig(be), nil)
	smuggled := "GET /admin HTTP/1.1\r\nHost: api.shop.mesh\r\n\r\n"
	raw := "POST /metrics HTTP/1.1\r\nHost: api.shop.mesh\r\nContent-Length: " + fmt.Sprint(len(smuggled)) + "\r\n\r\n" + smuggled +
		"GET /metrics HTTP/1.1\r\nHost: api.shop.mesh\r\n\r\n"
	conn, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(webIP)}}).Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	var got []string
	for {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			break
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got = append(got, fmt.Sprintf("%d %s", resp.StatusCode, b))
	}
	// POST /metrics is denied (the rule allows GET only); its body is a
	// body, so the next answer is the real GET /metrics's.
	if len(got) != 2 || !strings.HasPrefix(got[0], "403 ") || got[1] != "200 api GET /metrics " {
		t.Fatalf("answers %q; want a 403 for the POST, then the GET /metrics", got)
	}
	if be.hits.Load() != 1 {
		t.Fatalf("backend saw %d requests, want 1", be.hits.Load())
	}
}
