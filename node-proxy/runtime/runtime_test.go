package runtime

import (
	"net/http"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/node-proxy/balance"
	"github.com/trellis-mesh/trellis/node-proxy/config"
)

func load(t testing.TB) *config.Config {
	t.Helper()
	c, err := config.LoadFile(filepath.Join("..", "config", "testdata", "valid.json"))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func build(t testing.TB, c *config.Config, prev *Runtime) *Runtime {
	t.Helper()
	rt, err := Build(c, prev, Hooks{})
	if err != nil {
		t.Fatal(err)
	}
	return rt
}

func TestHTTPRouteLookup(t *testing.T) {
	rt := build(t, load(t), nil)
	cases := []struct {
		host string
		svc  string
		port int32
	}{
		{"api.shop.mesh:80", "shop/api", 80},
		{"api.shop.mesh", "shop/api", 80},
		{"api.shop.mesh:9090", "shop/api", 9090},
		{"API.Shop.Mesh:9090", "shop/api", 9090},
		{"api.shop.mesh.:80", "shop/api", 80},
		{"api.shop.mesh.", "shop/api", 80},
		{"api-v1.shop.mesh", "shop/api-v1", 80},
		{"api.shop.mesh:81", "", 0},
		{"api.shop.svc:80", "", 0},
		{"db.shop.mesh:5432", "", 0}, // tcp ports are not HTTP routes
		{"", "", 0},
	}
	for _, tc := range cases {
		r := rt.HTTPRoute(tc.host)
		if tc.svc == "" {
			if r != nil {
				t.Errorf("%q: want no route, got %s", tc.host, r.Service.Key)
			}
			continue
		}
		if r == nil || r.Service.Key != tc.svc || r.Port.Port != tc.port {
			t.Errorf("%q: got %+v", tc.host, r)
		}
	}
	if rt.TCP[20001] == nil || rt.UDP[20001] == nil || rt.TCP[20001].Port.Port != 5432 {
		t.Fatal("tcp/udp listen ports not routed")
	}
}

func TestSplitWithMatches(t *testing.T) {
	rt := build(t, load(t), nil)
	r := rt.HTTPRoute("api.shop.mesh")
	plain := http.Header{}
	beta := http.Header{"X-Beta": {"yes"}}
	counts := map[string]int{}
	for i := 0; i < 2000; i++ {
		if got := r.Choose("GET", "/", plain); got != r.Own {
			t.Fatalf("non-matching request split to %s", got.Service.Key)
		}
		counts[r.Choose("GET", "/", beta).Service.Key]++
	}
	if v1 := counts["shop/api-v1"]; v1 < 1500 || v1 > 1700 || counts["shop/api-v2"] == 0 {
		t.Fatalf("80/20 split off: %v", counts)
	}
}

func TestACL(t *testing.T) {
	rt := build(t, load(t), nil)
	web := rt.Source(netip.MustParseAddr("10.0.1.9"))
	api := rt.Source(netip.MustParseAddr("10.0.1.5"))
	stranger := rt.Source(netip.MustParseAddr("10.9.9.9"))
	if !web.Known || web.Identity.ServiceAccount != "web" || api.Service != "shop/api" {
		t.Fatalf("sources not resolved: %+v %+v", web, api)
	}
	mapped := rt.Source(netip.MustParseAddr("::ffff:10.0.1.9"))
	if mapped.Identity != web.Identity {
		t.Fatal("IPv4-mapped source address not unmapped")
	}
	httpRoute := rt.HTTPRoute("api.shop.mesh:80")
	grpcRoute := rt.HTTPRoute("api.shop.mesh:9090")
	cases := []struct {
		name   string
		r      *Route
		src    Source
		method string
		path   string
		ok     bool
		reason string
	}{
		{"allowed", httpRoute, web, "GET", "/metrics/x", true, ""},
		{"wrong method", httpRoute, web, "POST", "/metrics", false,
			"no access rule allows shop/web to POST /metrics on shop/api:80; the request matches no route or port of: TrafficTarget shop/api-access rule HTTPRouteGroup shop/api match metrics"},
		{"wrong port", grpcRoute, web, "GET", "/metrics", false, "on shop/api:9090"},
		{"identity not listed", httpRoute, api, "GET", "/metrics", false, "no TrafficTarget for this destination lists that ServiceAccount"},
		{"unknown source", httpRoute, stranger, "GET", "/metrics", false, "source is not a pod on this node"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ok, reason := tc.r.AllowHTTP(tc.src, tc.method, tc.path, http.Header{})
			if ok != tc.ok || !strings.Contains(reason, tc.reason) {
				t.Fatalf("got %v %q, want %v %q", ok, reason, tc.ok, tc.reason)
			}
		})
	}
	db := rt.TCP[20001]
	if ok, _ := db.AllowL4(api); !ok {
		t.Fatal("api should reach db:5432")
	}
	if ok, reason := db.AllowL4(web); ok || !strings.Contains(reason, "shop/web to tcp on shop/db:5432") {
		t.Fatalf("web must not reach db: %q", reason)
	}
	if ok, _ := rt.UDP[20001].AllowL4(api); ok {
		t.Fatal("the db rule lists port 5432 only; udp 53 must be denied")
	}
	c := load(t)
	c.ACL = config.ACLOff
	if ok, _ := build(t, c, nil).HTTPRoute("api.shop.mesh").AllowHTTP(stranger, "DELETE", "/", nil); !ok {
		t.Fatal("ACL off must allow")
	}
}

func TestReloadKeepsLiveState(t *testing.T) {
	c1 := load(t)
	rt1 := build(t, c1, nil)
	own1 := rt1.HTTPRoute("api.shop.mesh").Own
	e1 := own1.Pool.Endpoints()[0]
	balance.Start(e1)
	c2 := load(t)
	c2.Services[0].Endpoints[1].Ready = false // a change elsewhere
	c2.Services[3].Resilience.RateLimit = &config.RateLimit{RPS: 1}
	rt2 := build(t, c2, rt1)
	own2 := rt2.HTTPRoute("api.shop.mesh").Own
	e2 := own2.Pool.Endpoints()[0]
	if e1.State != e2.State || e2.Inflight() != 1 {
		t.Fatal("endpoint health/outstanding count lost across reload")
	}
	if own1.Breaker != own2.Breaker || own1.Service.Limiter != own2.Service.Limiter || own1.Service.Retry != own2.Service.Retry {
		t.Fatal("unchanged breaker/limiter/retry state not carried over")
	}
	if rt2.TCP[20001].Service.Limiter == nil {
		t.Fatal("changed rate limit not applied")
	}
	// The old runtime is untouched: in-flight work still sees its config.
	if rt1.HTTPRoute("api.shop.mesh").Own.Pool.Endpoints()[1].Ready != true {
		t.Fatal("old runtime mutated by the new build")
	}
}

func TestBuildRejects(t *testing.T) {
	c := load(t)
	c.Plugins = []config.Plugin{{Name: "waf", Version: "1", Module: "example.com/waf", Files: map[string]string{"waf.go": "package waf"}}}
	c.Services[0].Plugins = []string{"waf"}
	// A plugin that does not load disables itself, not the config.
	rt, err := Build(c, nil, Hooks{})
	if err != nil {
		t.Fatalf("a broken plugin must not fail the build: %v", err)
	}
	if errs := rt.PluginErrors(); len(errs) != 1 || !strings.Contains(errs[0].Error(), "plugin waf (version 1): contract: package waf has no function CreateConfig") {
		t.Fatalf("plugin errors: %v", errs)
	}
	c = load(t)
	c.Services[0].Ports[0].TargetPort = 0
	if _, err := Build(c, nil, Hooks{}); err == nil || !strings.Contains(err.Error(), "services[0].ports[0].targetPort") {
		t.Fatalf("invalid config must be refused by Build, got %v", err)
	}
}

func TestEjectHook(t *testing.T) {
	var got []string
	c := load(t)
	rt, err := Build(c, nil, Hooks{OnEject: func(tg *Target, e *balance.Endpoint, d time.Duration) {
		got = append(got, tg.Service.Key+" "+e.HostPort)
	}})
	if err != nil {
		t.Fatal(err)
	}
	own := rt.HTTPRoute("api.shop.mesh").Own
	e := own.Pool.Endpoints()[0]
	for i := 0; i < 3; i++ {
		own.Pool.Report(e, false, time.Now().UnixNano())
	}
	if len(got) != 1 || got[0] != "shop/api 10.0.1.5:8080" {
		t.Fatalf("eject hook calls: %v", got)
	}
}

// decide is the whole per-request routing decision of the HTTP path.
func decide(rt *Runtime, host string, src netip.Addr, h http.Header) *balance.Endpoint {
	r := rt.HTTPRoute(host)
	s := rt.Source(src)
	if ok, _ := r.AllowHTTP(s, "GET", "/metrics", h); !ok {
		return nil
	}
	return r.Choose("GET", "/metrics", h).Pool.Pick(1, nil)
}

func TestRoutingDecisionDoesNotAllocate(t *testing.T) {
	rt := build(t, load(t), nil)
	src := netip.MustParseAddr("10.0.1.9")
	h := http.Header{"X-Beta": {"yes"}, "Accept": {"*/*"}}
	if decide(rt, "api.shop.mesh:80", src, h) == nil {
		t.Fatal("decision failed")
	}
	if a := testing.AllocsPerRun(1000, func() { decide(rt, "api.shop.mesh:80", src, h) }); a != 0 {
		t.Fatalf("routing decision allocates %.1f times per request", a)
	}
}

func BenchmarkRoutingDecision(b *testing.B) {
	c := load(b)
	// 1,000 services, as in the memory target.
	for i := 0; i < 1000; i++ {
		c.Services = append(c.Services, config.Service{Namespace: "bulk", Name: "svc-" + strconv.Itoa(i),
			Ports:     []config.ServicePort{{Port: 80, TargetPort: 8080, Protocol: "http"}},
			Endpoints: []config.Endpoint{{IP: "10.1.0.1", Ready: true}, {IP: "10.1.0.2", Ready: true}}})
	}
	c.Version = c.Hash()
	rt := build(b, c, nil)
	src := netip.MustParseAddr("10.0.1.9")
	h := http.Header{"X-Beta": {"yes"}, "Accept": {"*/*"}}
	b.ReportAllocs()
	for b.Loop() {
		if decide(rt, "api.shop.mesh:80", src, h) == nil {
			b.Fatal("no endpoint")
		}
	}
}
