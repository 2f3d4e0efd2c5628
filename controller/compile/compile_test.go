package compile

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trellis-mesh/trellis/controller/topology"
	"github.com/trellis-mesh/trellis/node-proxy/config"
	"github.com/trellis-mesh/trellis/smi/annotations"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func loadTopology(t *testing.T, path string) *topology.Topology {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	snap, err := topology.SnapshotFromYAML(f)
	if err != nil {
		t.Fatal(err)
	}
	return topology.Build(snap, topology.Options{MeshNamespace: "trellis-system", DefaultTrafficType: annotations.HTTP})
}

// assignAll gives every TCP/UDP port a proxy port in order, except skip.
func assignAll(top *topology.Topology, skip map[string]bool) Assignments {
	a := Assignments{}
	next := int32(20000)
	for _, s := range top.Services {
		for _, k := range s.ListenKeys() {
			if skip[k.String()] {
				continue
			}
			a[k] = next
			next++
		}
	}
	return a
}

var opts = Options{MeshDomain: "mesh", ACL: true, HTTPPort: 10000}

// TestGolden writes each node's config for every topology input, with ACL
// on and every proxy port assigned.
func TestGolden(t *testing.T) {
	inputs, _ := filepath.Glob("../topology/testdata/*.yaml")
	if len(inputs) == 0 {
		t.Fatal("no inputs")
	}
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".yaml")
		top := loadTopology(t, in)
		res := Compile(top, assignAll(top, nil), opts, nil)
		if len(res.Nodes()) == 0 {
			t.Fatalf("%s: no node configs", name)
		}
		for _, node := range res.Nodes() {
			t.Run(name+"/"+node, func(t *testing.T) {
				var got bytes.Buffer
				if err := res.Node(node).Config().Encode(&got); err != nil {
					t.Fatal(err)
				}
				golden := filepath.Join("testdata", name+"."+node+".json")
				if *update {
					if err := os.WriteFile(golden, got.Bytes(), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				want, err := os.ReadFile(golden)
				if err != nil {
					t.Fatalf("%v (run go test ./controller/compile -update)", err)
				}
				if !bytes.Equal(got.Bytes(), want) {
					t.Errorf("%s differs; run go test ./controller/compile -update and review the diff:\n%s", golden, got.String())
				}
			})
		}
	}
}

// TestEncodingIsTheContract: the streamed bytes decode with the proxy's
// strict decoder, validate, and carry Version == Config.Hash().
func TestEncodingIsTheContract(t *testing.T) {
	top := loadTopology(t, "../topology/testdata/mesh.yaml")
	for _, o := range []Options{opts, {MeshDomain: "corp.mesh", ACL: false, HTTPPort: 8080}} {
		res := Compile(top, assignAll(top, nil), o, nil)
		for _, node := range res.Nodes() {
			n := res.Node(node)
			cfg, err := config.DecodeBytes(n.JSON())
			if err != nil {
				t.Fatalf("%s: proxy rejects the config: %v\n%s", node, err, n.JSON())
			}
			if cfg.Version != n.Version || cfg.Hash() != n.Version || n.Config().Hash() != n.Version {
				t.Fatalf("%s: version %s, hash of decoded %s, hash of materialised %s", node, n.Version, cfg.Hash(), n.Config().Hash())
			}
			want, _ := json.Marshal(n.Config())
			if !bytes.Equal(want, n.JSON()) {
				t.Fatalf("%s: streamed bytes differ from json.Marshal of the config", node)
			}
		}
	}
}

func service(cfg *config.Config, key string) *config.Service {
	for i := range cfg.Services {
		if cfg.Services[i].Key() == key {
			return &cfg.Services[i]
		}
	}
	return nil
}

// TestRulesNarrowedToLocalSources: a node's config only carries rule sources
// that have pods on that node.
func TestRulesNarrowedToLocalSources(t *testing.T) {
	top := loadTopology(t, "../topology/testdata/mesh.yaml")
	res := Compile(top, assignAll(top, nil), opts, nil)
	a, b := res.Node("node-a").Config(), res.Node("node-b").Config()
	if r := service(a, "shop/web").Rules; len(r) != 1 || len(r[0].Sources) != 2 {
		t.Errorf("node-a has both web clients locally; rules %+v", r)
	}
	if r := service(b, "shop/web").Rules; len(r) != 0 {
		t.Errorf("node-b has no web client; rules %+v", r)
	}
	if r := service(b, "shop/db").Rules; len(r) != 1 || r[0].Sources[0].ServiceAccount != "web" {
		t.Errorf("node-b runs a web pod; db rules %+v", r)
	}
	if a.Version == b.Version {
		t.Error("different nodes, same version")
	}
	off := Compile(top, assignAll(top, nil), Options{MeshDomain: "mesh", HTTPPort: 10000}, nil)
	if r := service(off.Node("node-a").Config(), "shop/web").Rules; r != nil {
		t.Errorf("ACL off still ships rules: %+v", r)
	}
}

// TestPendingPorts: a TCP/UDP port without a proxy port is left out until
// the leader assigns one; a split backend that disappears leaves the split.
func TestPendingPorts(t *testing.T) {
	top := loadTopology(t, "../topology/testdata/mesh.yaml")
	res := Compile(top, assignAll(top, map[string]bool{"shop/db:5432/tcp": true}), opts, nil)
	if len(res.Pending) != 1 || res.Pending[0].String() != "shop/db:5432/tcp" {
		t.Fatalf("pending %v", res.Pending)
	}
	cfg := res.Node("node-a").Config()
	if service(cfg, "shop/db") != nil {
		t.Error("shop/db has no served port yet but is in the config")
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"shop/web", "shop/resolver", "other/api"} {
		if service(cfg, k) == nil {
			t.Errorf("%s missing", k)
		}
	}
	// Conflicting assignments: the second user waits.
	a := assignAll(top, nil)
	for k := range a {
		a[k] = 20000
	}
	res = Compile(top, a, opts, nil)
	if err := res.Node("node-a").Config().Validate(); err != nil {
		t.Fatalf("conflicting assignments made an invalid config: %v", err)
	}
}

// TestInvalidServiceDropped: what the proxy would reject costs only that
// Service.
func TestInvalidServiceDropped(t *testing.T) {
	top := loadTopology(t, "../topology/testdata/mesh.yaml")
	for _, s := range top.Services {
		if s.Key() == "other/api" {
			cp := *s
			cp.Resilience.Retries = &config.Retries{Attempts: 11}
			*s = cp
		}
	}
	res := Compile(top, assignAll(top, nil), opts, nil)
	cfg := res.Node("node-a").Config()
	if service(cfg, "other/api") != nil {
		t.Error("invalid Service kept")
	}
	if len(cfg.Services) != len(top.Services)-1 {
		t.Errorf("%d services, want %d", len(cfg.Services), len(top.Services)-1)
	}
	found := false
	for _, p := range res.Problems {
		if p.Object.Name == "api" && strings.Contains(p.Message, "retries.attempts") {
			found = true
		}
	}
	if !found {
		t.Errorf("no problem names the bad field: %v", res.Problems)
	}
}

// TestFragmentsReused: an unchanged Service keeps its encoding (pointer)
// across compiles, so deltas are cheap; a changed one gets a new one.
func TestFragmentsReused(t *testing.T) {
	top := loadTopology(t, "../topology/testdata/mesh.yaml")
	a := assignAll(top, nil)
	r1 := Compile(top, a, opts, nil)
	top2 := loadTopology(t, "../topology/testdata/mesh.yaml")
	for _, s := range top2.Services {
		if s.Key() == "shop/web" {
			sp := *s.Split
			sp.Backends = []config.Backend{{Service: "web-v1", Weight: 50}, {Service: "web-v2", Weight: 50}}
			s.Split = &sp
		}
	}
	r2 := Compile(top2, a, opts, r1)
	n1, n2 := r1.Node("node-a"), r2.Node("node-a")
	changed := 0
	for i := range n1.Services {
		if n1.Services[i] != n2.Services[i] {
			changed++
			if n1.Services[i].Key != "shop/web" {
				t.Errorf("%s re-encoded although unchanged", n1.Services[i].Key)
			}
		}
	}
	if changed != 1 || n1.Version == n2.Version {
		t.Errorf("changed %d fragments; versions %s %s", changed, n1.Version, n2.Version)
	}
	fresh := Compile(top2, a, opts, nil)
	for _, n := range fresh.Nodes() {
		if !bytes.Equal(r2.Node(n).JSON(), fresh.Node(n).JSON()) {
			t.Errorf("node %s: compiling on top of a previous result gave other bytes than compiling afresh", n)
		}
	}
	r3 := Compile(top, a, opts, nil)
	if r3.Node("node-a").Version != n1.Version {
		t.Error("same input, different version")
	}
}

// TestIncrementalHashMatches: hashing resumed from the previous compile's
// checkpoints gives exactly Config.Hash(), wherever the change is.
func TestIncrementalHashMatches(t *testing.T) {
	mk := func(changed int, weight int32) *topology.Topology {
		top := &topology.Topology{Nodes: []topology.Node{{Name: "n1"}, {Name: "n2"}},
			LocalPods: map[string][]config.LocalPod{"n1": {{IP: "10.0.0.1", Identity: config.Identity{ServiceAccount: "a", Namespace: "x"}}}}}
		for i := 0; i < 150; i++ {
			s := &topology.Service{Namespace: "x", Name: fmt.Sprintf("s%03d", i),
				Ports:     []config.ServicePort{{Name: "http", Port: 80, TargetPort: 8080, Protocol: config.ProtocolHTTP}},
				Endpoints: []config.Endpoint{{IP: fmt.Sprintf("10.1.%d.%d", i/200, i%200+1), Ready: true}}}
			if i == changed {
				s.Resilience.RateLimit = &config.RateLimit{RPS: float64(weight)}
			}
			top.Services = append(top.Services, s)
		}
		return top
	}
	o := Options{MeshDomain: "mesh", HTTPPort: 10000}
	for _, at := range []int{0, 31, 32, 33, 100, 149} {
		prev := Compile(mk(at, 1), nil, o, nil)
		inc := Compile(mk(at, 2), nil, o, prev)
		fresh := Compile(mk(at, 2), nil, o, nil)
		for _, n := range fresh.Nodes() {
			if inc.Node(n).Version != fresh.Node(n).Version || fresh.Node(n).Config().Hash() != fresh.Node(n).Version {
				t.Fatalf("change at %d, node %s: incremental %s, fresh %s, Hash %s", at, n, inc.Node(n).Version, fresh.Node(n).Version, fresh.Node(n).Config().Hash())
			}
			if inc.Node(n).Version == prev.Node(n).Version {
				t.Fatalf("change at %d not seen", at)
			}
		}
		// Chained: a third compile on top of the incremental one.
		again := Compile(mk(at, 3), nil, o, inc)
		if again.Node("n1").Version != Compile(mk(at, 3), nil, o, nil).Node("n1").Version {
			t.Fatalf("chained incremental hash differs (change at %d)", at)
		}
	}
}

// TestBadPluginLeftOut: a plugin the proxy's validation would refuse is
// reported on its MeshPlugin and left out of every config (and of the
// Services that named it), instead of making the whole config invalid.
func TestBadPluginLeftOut(t *testing.T) {
	top := loadTopology(t, "../topology/testdata/plugins.yaml")
	res := Compile(top, assignAll(top, nil), opts, nil)
	found := false
	for _, p := range res.Problems {
		if p.Object.Kind == "MeshPlugin" && p.Object.Name == "evil" {
			found = strings.Contains(p.Message, `"../evil.go": must be a relative path`)
		}
	}
	if !found {
		t.Fatalf("no problem reported for MeshPlugin shop/evil: %v", res.Problems)
	}
	cfg := res.Node("node-a").Config()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config invalid: %v", err)
	}
	var names []string
	for _, p := range cfg.Plugins {
		names = append(names, p.Name)
	}
	if strings.Join(names, ",") != "shop/auth,shop/headers" {
		t.Fatalf("plugins in the config: %v", names)
	}
	for _, s := range cfg.Services {
		if s.Name == "web" && strings.Join(s.Plugins, ",") != "shop/auth,shop/headers" {
			t.Fatalf("web's plugins: %v", s.Plugins)
		}
	}
}
