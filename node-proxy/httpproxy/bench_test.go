package httpproxy

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/node-proxy/config"
	"github.com/trellis-mesh/trellis/smi/match"
)

// Benchmarks of the HTTP hot path on loopback, in one process: small
// HTTP/1.1 keep-alive GETs, closed loop, GOMAXPROCS client goroutines.
// Compare ns/op (and req/s) of direct, httputil.ReverseProxy and Trellis
// (split + ACL on) from the same run; absolute numbers mean little on a
// shared machine.

func benchBackend(b *testing.B) *backend {
	be := startBackend(b, "127.0.0.2", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "hello from the backend\n")
	}, false)
	return be
}

func benchClient(srcIP, target string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(srcIP)}}
	tr := &http.Transport{
		DialContext:         func(ctx context.Context, n, _ string) (net.Conn, error) { return d.DialContext(ctx, n, target) },
		MaxIdleConnsPerHost: 1024, DisableCompression: true,
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func runLoad(b *testing.B, c *http.Client, url, host string) {
	b.ReportAllocs()
	b.SetParallelism(8)
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		req, _ := http.NewRequest("GET", url, nil)
		req.Host = host
		for pb.Next() {
			resp, err := c.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body) // drain so the connection is reused
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
}

func BenchmarkHotPath(b *testing.B) {
	be := benchBackend(b)
	beAddr := be.ip + ":" + itoa(be.port)

	b.Run("direct", func(b *testing.B) {
		runLoad(b, benchClient(webIP, beAddr), "http://"+beAddr+"/", "api.shop.mesh")
	})

	b.Run("reverseproxy", func(b *testing.B) {
		u, _ := url.Parse("http://" + beAddr)
		rp := httputil.NewSingleHostReverseProxy(u)
		rp.Transport = &http.Transport{MaxIdleConnsPerHost: 1024, DisableCompression: true}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		srv := &http.Server{Handler: rp}
		go func() { _ = srv.Serve(l) }()
		defer srv.Close()
		runLoad(b, benchClient(webIP, l.Addr().String()), "http://"+l.Addr().String()+"/", "api.shop.mesh")
	})

	for _, legacy := range []bool{false, true} {
		name := "trellis-split-acl"
		if legacy {
			name += "-nethttp" // the fast path off: net/http server and transport
		}
		b.Run(name, func(b *testing.B) {
			root := svc("shop", "api", "", be.ep())
			root.Split = &config.Split{Backends: []config.Backend{{Service: "api-v1", Weight: 80}, {Service: "api-v2", Weight: 20}}}
			root.Rules = []config.AccessRule{{Source: "TrafficTarget shop/api", Sources: []config.Identity{{ServiceAccount: "web", Namespace: "shop"}},
				HTTP: []match.HTTPSpec{{Name: "all", PathRegex: "/", Methods: []string{"GET"}}}}}
			c := baseConfig(root, svc("shop", "api-v1", "", be.ep()), svc("shop", "api-v2", "", be.ep()))
			c.ACL = config.ACLOn
			legacyOnly = legacy
			p := startProxy(b, c, nil)
			legacyOnly = false
			runLoad(b, benchClient(webIP, p.addr), "http://"+p.addr+"/", "api.shop.mesh")
		})
	}
}
