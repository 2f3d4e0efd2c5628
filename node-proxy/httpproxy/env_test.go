package httpproxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/trellis-mesh/trellis/node-proxy/config"
	"github.com/trellis-mesh/trellis/node-proxy/forward"
	"github.com/trellis-mesh/trellis/node-proxy/runtime"
	"github.com/trellis-mesh/trellis/node-proxy/telemetry"
)

// Source addresses of test clients: the proxy sees these as local pods.
const (
	webIP   = "127.0.0.9"  // shop/web
	adminIP = "127.0.0.10" // ops/admin
	strange = "127.0.0.11" // not a local pod
)

// backend is a real HTTP server on its own loopback address.
type backend struct {
	ip   string
	port int32
	srv  *http.Server
	hits atomic.Int64
}

func startBackend(t testing.TB, ip string, h http.HandlerFunc, h2cOnly bool, configure ...func(*http.Server)) *backend {
	t.Helper()
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{ip: ip, port: int32(l.Addr().(*net.TCPAddr).Port)}
	b.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		h(w, r)
	})}
	if h2cOnly {
		b.srv.Protocols = new(http.Protocols)
		b.srv.Protocols.SetUnencryptedHTTP2(true)
	}
	for _, f := range configure {
		f(b.srv)
	}
	go func() { _ = b.srv.Serve(l) }()
	t.Cleanup(func() { b.srv.Close() })
	return b
}

// ep returns an endpoint for b on service port "web".
func (b *backend) ep() config.Endpoint {
	return config.Endpoint{IP: b.ip, Ready: true, Ports: map[string]int32{"web": b.port}}
}

func svc(ns, name string, scheme config.Scheme, eps ...config.Endpoint) config.Service {
	return config.Service{Namespace: ns, Name: name,
		Ports:     []config.ServicePort{{Name: "web", Port: 80, TargetPort: 1, Protocol: config.ProtocolHTTP, Scheme: scheme}},
		Endpoints: eps}
}

func baseConfig(svcs ...config.Service) *config.Config {
	return &config.Config{Node: "n1", Listeners: config.Listeners{HTTP: 1}, Services: svcs,
		LocalPods: []config.LocalPod{
			{IP: webIP, Name: "web-1", Identity: config.Identity{ServiceAccount: "web", Namespace: "shop"}},
			{IP: adminIP, Name: "admin-1", Identity: config.Identity{ServiceAccount: "admin", Namespace: "ops"}},
		}}
}

// legacyOnly makes startProxy serve with net/http only (set by the tests
// that run a suite on both paths).
var legacyOnly bool

// proxy is the handler on a real listener.
type proxy struct {
	addr    string
	holder  *runtime.Holder
	metrics *telemetry.Metrics
	handler *Handler
}

func startProxy(t testing.TB, c *config.Config, fwd forward.HTTP) *proxy {
	t.Helper()
	c.Version = c.Hash()
	m := telemetry.NewMetrics()
	p := &proxy{holder: &runtime.Holder{}, metrics: m}
	rt, err := runtime.Build(c, nil, runtime.Hooks{})
	if err != nil {
		t.Fatal(err)
	}
	p.holder.Store(rt)
	if fwd == nil {
		d := forward.NewDirect(forward.Options{})
		t.Cleanup(d.CloseIdle)
		fwd = d
	}
	p.handler = New(p.holder, fwd, m, zap.NewNop(), zap.NewNop(), Options{})
	so := ServerOptions{ReadHeaderTimeout: 2 * time.Second}
	// The fast path serves whenever the forwarder can dial (it forwards
	// HTTP/1.1 over its own connections); net/http alone otherwise.
	var srv Listener
	if d, ok := fwd.(forward.Dialer); ok && !legacyOnly {
		srv = NewFastServer(p.handler, d, m, zap.NewNop(), so)
	} else {
		srv = NewServer(p.handler, m, zap.NewNop(), so)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = l.Addr().String()
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return p
}

func (p *proxy) reload(t *testing.T, c *config.Config) {
	t.Helper()
	c.Version = c.Hash()
	rt, err := runtime.Build(c, p.holder.Load(), runtime.Hooks{})
	if err != nil {
		t.Fatal(err)
	}
	p.holder.Store(rt)
}

// client returns an HTTP client whose connections come from srcIP and all
// go to the proxy, whatever the URL's host.
func (p *proxy) client(srcIP string, h2c bool) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(srcIP)}, Timeout: 2 * time.Second}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, p.addr)
		},
		DisableCompression: true,
	}
	tr.Protocols = new(http.Protocols)
	if h2c {
		tr.Protocols.SetUnencryptedHTTP2(true)
	} else {
		tr.Protocols.SetHTTP1(true)
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

type result struct {
	status int
	body   string
	header http.Header
	resp   *http.Response
}

func do(t *testing.T, c *http.Client, method, url string, hdr map[string]string) result {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("%s %s body: %v", method, url, err)
	}
	return result{status: resp.StatusCode, body: string(b), header: resp.Header, resp: resp}
}

func itoa(i int32) string { return strconv.Itoa(int(i)) }
