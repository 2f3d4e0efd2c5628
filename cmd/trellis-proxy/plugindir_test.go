package main

import (
	"context"
	"encoding/json"
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

// TestPluginFromDevelopmentDirectory: --plugin-dir serves a plugin from
// its source directory; editing the source and sending SIGHUP (the reload
// channel) serves the new code; a bad --plugin-dir is refused, named.
func TestPluginFromDevelopmentDirectory(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	be := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "saw "+r.Header.Get("X-Dev"))
	})}
	go func() { _ = be.Serve(l) }()
	t.Cleanup(func() { be.Close() })
	port := int32(l.Addr().(*net.TCPAddr).Port)

	// A plugin under development, in Traefik's shape.
	dir := t.TempDir()
	plugin := func(value string) {
		src := `package dev

import (
	"context"
	"net/http"
)

type Config struct{}

func CreateConfig() *Config { return &Config{} }

func New(_ context.Context, next http.Handler, _ *Config, _ string) (http.Handler, error) {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Set("X-Dev", "` + value + `")
		next.ServeHTTP(w, r)
	}), nil
}
`
		if err := os.WriteFile(filepath.Join(dir, "dev.go"), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	plugin("v1")
	httpPort := freePort(t)
	c := &config.Config{Node: "n1", Listeners: config.Listeners{HTTP: int32(httpPort)},
		Services: []config.Service{{Namespace: "ns", Name: "svc", Plugins: []string{"ns/dev"},
			Ports:     []config.ServicePort{{Port: 80, TargetPort: port, Protocol: "http"}},
			Endpoints: []config.Endpoint{{IP: "127.0.0.2", Ready: true}}}},
		// No files here: they come from --plugin-dir.
		Plugins: []config.Plugin{{Name: "ns/dev", Module: "example.com/dev"}}}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "proxy.json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	reload := make(chan struct{}, 1)
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"--config", path, "--plugin-dir", "ns/dev=" + dir, "--node", "n1", "--bind", "127.0.0.1",
			"--admin-addr", "127.0.0.1:" + strconv.Itoa(freePort(t)), "--drain-period", "0s", "--access-log=false", "--log-level", "error"}, reload, io.Discard)
	}()
	waitAnswer(t, httpPort, "saw v1", 10*time.Second)
	// Edit the plugin's source; a SIGHUP re-reads the directory.
	plugin("v2")
	reload <- struct{}{}
	waitAnswer(t, httpPort, "saw v2", 10*time.Second)
	cancel()
	waitExit(t, done)

	for _, tc := range []struct{ args []string }{
		{[]string{"--config", path, "--plugin-dir", "nodir"}},
		{[]string{"--config", path, "--plugin-dir", "ns/dev=/no/such/dir"}},
		{[]string{"--controller", "http://x:9000", "--plugin-dir", "ns/dev=" + dir}},
	} {
		var errb strings.Builder
		code := run(context.Background(), append(tc.args, "--node", "n1"), nil, &errb)
		lines := strings.Split(strings.TrimSpace(errb.String()), "\n")
		if last := lines[len(lines)-1]; code != 2 || !strings.HasPrefix(last, "trellis-proxy: ") || !strings.Contains(last, "plugin-dir") {
			t.Errorf("%v: exit %d, last line %q (want exit 2 and a line naming --plugin-dir)", tc.args, code, last)
		}
	}
}
