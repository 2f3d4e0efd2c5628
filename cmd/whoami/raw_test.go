package main

import (
	"bytes"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// TestRawReportsAnswerAndClose: the raw client prints the server's answer
// and that the server closed the connection.
func TestRawReportsAnswerAndClose(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: handler("pod-a"), ReadHeaderTimeout: time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })

	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdin
	os.Stdin = r
	t.Cleanup(func() { os.Stdin = old })
	_, _ = w.WriteString("GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
	w.Close()
	var out bytes.Buffer
	if err := runRaw(l.Addr().String(), 3*time.Second, false, &out); err != nil {
		t.Fatal(err)
	}
	if s := out.String(); !strings.HasPrefix(s, "HTTP/1.1 200 OK") || !strings.Contains(s, "Hostname: pod-a") || !strings.Contains(s, "CLOSED after") {
		t.Fatalf("raw output:\n%s", s)
	}
}
