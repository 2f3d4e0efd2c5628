package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"
)

func tokenDir(tb testing.TB) func(string) string {
	dir := tb.TempDir()
	return func(node string) string {
		p := filepath.Join(dir, node)
		if _, err := os.Stat(p); err != nil {
			if err := os.WriteFile(p, []byte("token-"+node), 0o600); err != nil {
				tb.Fatal(err)
			}
		}
		return p
	}
}

// TestConvergenceSmall checks the harness itself on a small mesh: every
// stream converges on every change, and versions really change.
func TestConvergenceSmall(t *testing.T) {
	c := NewController(Shape{Services: 60, Nodes: 5, PodsPerService: 2})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	url, err := c.Listen(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cl := StartClients(url, c.Nodes(), 10, tokenDir(t))
	defer cl.Stop()
	if _, err := cl.Wait(c.Versions(), time.Now(), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	before := c.Versions()
	for w := int64(10); w <= 30; w += 10 {
		c.Mesh.SetSplit(0, w)
		start := time.Now()
		c.Rebuild()
		after := c.Versions()
		for n, v := range after {
			if v == before[n] {
				t.Fatalf("node %s kept version %s after a split change", n, v)
			}
		}
		if _, err := cl.Wait(after, start, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		before = after
	}
}

// BenchmarkConvergence: 1,000 meshed Services, 100 nodes, 100 streams; one
// iteration is a TrafficSplit change from rebuild to every stream holding
// its new version. Reports p50/p99 of the all-streams time and of single
// streams.
func BenchmarkConvergence(b *testing.B) {
	for _, n := range []int{1000} {
		b.Run(fmt.Sprintf("services=%d/streams=100", n), func(b *testing.B) {
			c := NewController(Shape{Services: n, Nodes: 100, PodsPerService: 3})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			url, err := c.Listen(ctx)
			if err != nil {
				b.Fatal(err)
			}
			cl := StartClients(url, c.Nodes(), 100, tokenDir(b))
			defer cl.Stop()
			if _, err := cl.Wait(c.Versions(), time.Now(), time.Minute); err != nil {
				b.Fatal(err)
			}
			var all, each []time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				c.Mesh.SetSplit(i*37, int64(1+i%98))
				start := time.Now()
				c.Rebuild()
				lat, err := cl.Wait(c.Versions(), start, time.Minute)
				if err != nil {
					b.Fatal(err)
				}
				all = append(all, lat[len(lat)-1])
				each = append(each, lat...)
			}
			b.StopTimer()
			sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
			sort.Slice(each, func(i, j int) bool { return each[i] < each[j] })
			b.ReportMetric(float64(Percentile(all, 50).Microseconds())/1000, "p50-all-ms")
			b.ReportMetric(float64(Percentile(all, 99).Microseconds())/1000, "p99-all-ms")
			b.ReportMetric(float64(Percentile(each, 50).Microseconds())/1000, "p50-stream-ms")
			b.ReportMetric(float64(Percentile(each, 99).Microseconds())/1000, "p99-stream-ms")
		})
	}
}

// BenchmarkRebuild: one controller pass (topology, shadow plan, compile,
// publish) for 1,000 Services on 100 nodes after a TrafficSplit change.
func BenchmarkRebuild(b *testing.B) {
	c := NewController(Shape{Services: 1000, Nodes: 100, PodsPerService: 3})
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c.Mesh.SetSplit(i*37, int64(1+i%98))
		c.Rebuild()
	}
}

// TestOneNamespaceOfFiveThousand: a namespace holding 5,000 meshed Services
// (the scale case) compiles into configs that carry every one of
// them, whose version is the hash of their content, and that the proxy's
// own validation accepts.
func TestOneNamespaceOfFiveThousand(t *testing.T) {
	if testing.Short() {
		t.Skip("large mesh: skipped with -short")
	}
	c := NewController(Shape{Services: 5000, Nodes: 3, PodsPerService: 1, PerNamespace: 5000})
	took := c.Rebuild()
	res, _, _ := c.Hub.Current()
	for _, n := range res.Nodes() {
		cfg := res.Node(n).Config()
		if len(cfg.Services) != 5000 {
			t.Fatalf("node %s: %d services, want 5000", n, len(cfg.Services))
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("node %s: config does not validate: %v", n, err)
		}
		if got := cfg.Hash(); got != res.Node(n).Version {
			t.Fatalf("node %s: version %s, content hash %s", n, res.Node(n).Version, got)
		}
	}
	t.Logf("5,000 Services in one namespace, 3 nodes: rebuild %s", took)
}
