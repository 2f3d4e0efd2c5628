package headers

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/node-proxy/config"
	"github.com/trellis-mesh/trellis/node-proxy/plugin"
)

// The benchmarks measure what the headers plugin adds per request, side
// by side in one run: nothing (the upstream handler alone); the proxy's
// plugin chain around an interpreted plugin that runs no code per request
// (New returns next: the cost of the chain's guard alone); and the plugin
// compiled natively and interpreted in the chain as the mesh runs it,
// editing request headers only, then request and response headers (which
// takes a ResponseWriter wrapper the proxy calls back into). Compare the
// sub-benchmarks' cpu-ns/op (steadier than ns/op on a shared machine);
// run with -count to get medians.

const benchConfig = `{"setRequestHeaders":{"X-Mesh-Client":"legacy"},"removeRequestHeaders":["X-Debug"],` +
	`"setResponseHeaders":{"Cache-Control":"no-store"},"removeResponseHeaders":["Server"]}`

var benchBody = []byte("hello")

var terminal = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h["Server"] = []string{"upstream/1.0"}
	h["Content-Type"] = []string{"text/plain"}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(benchBody)
})

const passthrough = `package passthrough

import (
	"context"
	"net/http"
)

type Config struct{}

func CreateConfig() *Config { return &Config{} }

func New(ctx context.Context, next http.Handler, config *Config, name string) (http.Handler, error) {
	return next, nil
}
`

// requestOnly edits request headers only: no response writer wrapper.
const requestOnly = `{"setRequestHeaders":{"X-Mesh-Client":"legacy"},"removeRequestHeaders":["X-Debug"]}`

type variant struct {
	name string
	h    http.Handler
}

func benchHandlers(b *testing.B) []variant {
	native := func(cfg string) http.Handler {
		var c Config
		if err := json.Unmarshal([]byte(cfg), &c); err != nil {
			b.Fatal(err)
		}
		h, err := New(context.Background(), terminal, &c, "headers")
		if err != nil {
			b.Fatal(err)
		}
		return h
	}
	pt := config.Plugin{Name: "bench/passthrough", Version: "1", Module: "example.com/passthrough", Files: map[string]string{"p.go": passthrough}}
	set := plugin.NewSet([]config.Plugin{pt}, nil, nil)
	guardOnly := set.Chains("shop/api", []string{pt.Name}, 0, nil).Wrap(config.StageAfterAccess, terminal)
	return []variant{
		{"none", terminal},
		{"chain-guard-only", guardOnly},
		{"native-request", native(requestOnly)},
		{"interpreted-request", interpreted(b, requestOnly, terminal)},
		{"native-both", native(benchConfig)},
		{"interpreted-both", interpreted(b, benchConfig, terminal)},
	}
}

// cpuTime is the CPU time the process used so far (all threads, GC
// included). The machines the benchmarks run on are shared: CPU time per
// request is steadier than wall time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU adds a cpu-ns/op metric to b.
func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
}

// discard is a minimal ResponseWriter, so the benchmark measures handlers.
type discard struct {
	h    http.Header
	code int
}

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) WriteHeader(code int)        { d.code = code }
func (d *discard) Write(b []byte) (int, error) { return len(b), nil }
func (d *discard) Flush()                      {}

// BenchmarkHandler runs requests through each handler in process.
func BenchmarkHandler(b *testing.B) {
	for _, v := range benchHandlers(b) {
		b.Run(v.name, func(b *testing.B) {
			req := httptest.NewRequest(http.MethodGet, "http://api.shop.mesh/", nil)
			w := &discard{h: http.Header{}}
			b.ReportAllocs()
			start := cpuTime()
			for b.Loop() {
				req.Header = http.Header{"X-Debug": {"1"}, "Accept": {"*/*"}}
				clear(w.h)
				v.h.ServeHTTP(w, req)
				if w.code != http.StatusOK {
					b.Fatalf("status %d", w.code)
				}
			}
			reportCPU(b, start)
		})
	}
}

// BenchmarkSocket runs requests through each handler over a real
// keep-alive HTTP/1.1 connection.
func BenchmarkSocket(b *testing.B) {
	for _, v := range benchHandlers(b) {
		b.Run(v.name, func(b *testing.B) {
			srv := httptest.NewServer(v.h)
			defer srv.Close()
			client := srv.Client()
			req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
			req.Header.Set("X-Debug", "1")
			b.ReportAllocs()
			start := cpuTime()
			for b.Loop() {
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
			reportCPU(b, start)
		})
	}
}
