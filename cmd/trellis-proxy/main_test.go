package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/node-proxy/config"
)

func TestFlagAndConfigErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"node":"n","services":[{"namespace":"a","name":"b","ports":[{"port":80,"targetPort":0,"protocol":"http"}]}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "--config or --controller: pass exactly one"},
		{[]string{"--config", bad, "--controller", "http://c:9000"}, 2, "--config or --controller: pass exactly one"},
		{[]string{"--controller", "c:9000", "--admin-addr", ""}, 1, "must start with http:// or https://"},
		{[]string{"--config", bad, "--http-port", "70000"}, 2, "--http-port: must be 0-65535"},
		{[]string{"--config", bad, "extra"}, 2, `unexpected argument "extra"`},
		{[]string{"--config", bad, "--log-level", "loud"}, 2, "--log-level"},
		{[]string{"--config", filepath.Join(dir, "missing.json"), "--admin-addr", ""}, 1, "missing.json"},
		{[]string{"--config", bad, "--admin-addr", ""}, 1, "services[0].ports[0].targetPort: must be 1-65535, got 0"},
	}
	for _, tc := range cases {
		var stderr bytes.Buffer
		code := run(context.Background(), tc.args, nil, &stderr)
		if code != tc.code || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tc.args, code, stderr.String(), tc.code, tc.want)
		}
	}
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestServesStaticFileAndReloadsOnSignal runs the real main path: a config
// file, a backend, a request through the proxy, a file change picked up by
// the reload signal, and a clean exit on cancellation.
func TestServesStaticFileAndReloadsOnSignal(t *testing.T) {
	mk := func(name string) int32 {
		l, err := net.Listen("tcp", "127.0.0.2:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, name) })}
		go func() { _ = srv.Serve(l) }()
		t.Cleanup(func() { srv.Close() })
		return int32(l.Addr().(*net.TCPAddr).Port)
	}
	one, two := mk("one"), mk("two")
	httpPort := freePort(t)
	write := func(path string, port int32) {
		c := &config.Config{Node: "n1", Listeners: config.Listeners{HTTP: int32(httpPort)},
			Services: []config.Service{{Namespace: "ns", Name: "svc",
				Ports:     []config.ServicePort{{Port: 80, TargetPort: port, Protocol: "http"}},
				Endpoints: []config.Endpoint{{IP: "127.0.0.2", Ready: true}}}}}
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := c.Encode(f); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "proxy.json")
	write(path, one)
	ctx, cancel := context.WithCancel(context.Background())
	reload := make(chan struct{}, 1)
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"--config", path, "--node", "n1", "--bind", "127.0.0.1", "--admin-addr", "127.0.0.1:" + strconv.Itoa(freePort(t)),
			"--drain-period", "0s", "--access-log=false", "--log-level", "error"}, reload, io.Discard)
	}()
	waitAnswer(t, httpPort, "one", 5*time.Second)
	write(path, two)
	reload <- struct{}{}
	waitAnswer(t, httpPort, "two", 5*time.Second)
	cancel()
	waitExit(t, done)
}

// getSvc asks the proxy on httpPort for svc.ns.mesh and returns the body
// (or the error's text).
func getSvc(httpPort int) string {
	req, _ := http.NewRequest("GET", "http://127.0.0.1:"+strconv.Itoa(httpPort)+"/", nil)
	req.Host = "svc.ns.mesh"
	resp, err := (&http.Client{Timeout: time.Second}).Do(req)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// waitAnswer polls getSvc until it returns want, failing after timeout.
func waitAnswer(t *testing.T, httpPort int, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for got := getSvc(httpPort); got != want; got = getSvc(httpPort) {
		if time.Now().After(deadline) {
			t.Fatalf("proxy answered %q, want %q", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitExit waits for run, cancelled, to return 0.
func waitExit(t *testing.T, done <-chan int) {
	t.Helper()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit code %d", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("proxy did not exit after cancellation")
	}
}
