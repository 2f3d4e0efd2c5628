package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestModes: one whoami answers HTTP/1.1 and h2c (prior knowledge) on one
// port, TCP and UDP, each time naming itself and the source it saw.
func TestModes(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: withGRPC(newGRPCServer("pod-a"), handler("pod-a")), ReadHeaderTimeout: time.Second, Protocols: new(http.Protocols)}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	url := "http://" + l.Addr().String() + "/hello?x=1"

	h1, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(h1.Body)
	_ = h1.Body.Close()
	if !strings.Contains(string(body), "Hostname: pod-a\n") || !strings.Contains(string(body), "GET /hello?x=1 HTTP/1.1\n") || !strings.Contains(string(body), "RemoteAddr: 127.0.0.1:") {
		t.Errorf("HTTP/1.1 report:\n%s", body)
	}

	h2t := &http.Transport{Protocols: new(http.Protocols)}
	h2t.Protocols.SetUnencryptedHTTP2(true) // prior knowledge, as gRPC clients do
	h2c := &http.Client{Transport: h2t}
	r2, err := h2c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(r2.Body)
	_ = r2.Body.Close()
	if r2.ProtoMajor != 2 || !strings.Contains(string(body), "GET /hello?x=1 HTTP/2.0\n") {
		t.Errorf("h2c: proto %s, report:\n%s", r2.Proto, body)
	}

	var report strings.Builder
	if err := checkGRPC(l.Addr().String(), "web.shop.mesh", &report); err != nil {
		t.Fatalf("gRPC: %v", err)
	}
	if got := report.String(); !strings.Contains(got, "Hostname: pod-a\n") || !strings.Contains(got, "RemoteAddr: 127.0.0.1:") || !strings.Contains(got, "Status: SERVING") {
		t.Errorf("gRPC report:\n%s", got)
	}

	bad, err := http.Get("http://" + l.Addr().String() + "/?status=abc")
	if err != nil {
		t.Fatal(err)
	}
	_ = bad.Body.Close()
	if bad.StatusCode != http.StatusBadRequest {
		t.Errorf("?status=abc: got %d, want 400", bad.StatusCode)
	}

	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tl.Close() })
	go serveTCP(tl, "pod-a")
	c, err := net.Dial("tcp", tl.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "Hostname: pod-a RemoteAddr: 127.0.0.1:") {
		t.Fatalf("TCP greeting %q, %v", line, err)
	}
	if _, err := io.WriteString(c, "ping\n"); err != nil {
		t.Fatal(err)
	}
	if echo, err := br.ReadString('\n'); err != nil || echo != "ping\n" {
		t.Fatalf("TCP echo %q, %v", echo, err)
	}

	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	go serveUDP(pc, "pod-a")
	u, err := net.Dial("udp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = u.Close() }()
	_ = u.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := u.Write([]byte("dgram")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 512)
	n, err := u.Read(buf)
	if err != nil || !strings.HasPrefix(string(buf[:n]), "Hostname: pod-a RemoteAddr: 127.0.0.1:") || !strings.HasSuffix(string(buf[:n]), "\ndgram") {
		t.Fatalf("UDP reply %q, %v", buf[:n], err)
	}
}
