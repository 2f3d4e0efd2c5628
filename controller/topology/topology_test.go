package topology

import (
	"bytes"
	"encoding/json"
	"flag"
	"math/rand"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/trellis-mesh/trellis/node-proxy/config"
	"github.com/trellis-mesh/trellis/smi"
	"github.com/trellis-mesh/trellis/smi/annotations"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

var testOpts = Options{MeshNamespace: "trellis-system", DefaultTrafficType: annotations.HTTP}

func load(t *testing.T, path string) *Snapshot {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	snap, err := SnapshotFromYAML(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return snap
}

// render is the golden form of a topology (Policy is left out: package smi
// has its own goldens).
func render(t *testing.T, top *Topology) []byte {
	t.Helper()
	view := struct {
		Services  []*Service                   `json:"services"`
		Nodes     []Node                       `json:"nodes"`
		LocalPods map[string][]config.LocalPod `json:"localPods"`
		Plugins   []config.Plugin              `json:"plugins,omitempty"`
		Problems  []string                     `json:"problems"`
	}{top.Services, top.Nodes, top.LocalPods, top.Plugins, nil}
	for _, p := range top.Problems {
		view.Problems = append(view.Problems, string(p.Severity)+": "+p.String())
	}
	b, err := json.MarshalIndent(view, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}

func TestGolden(t *testing.T) {
	inputs, _ := filepath.Glob("testdata/*.yaml")
	if len(inputs) == 0 {
		t.Fatal("no inputs in testdata/")
	}
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".yaml")
		t.Run(name, func(t *testing.T) {
			got := render(t, Build(load(t, in), testOpts))
			golden := filepath.Join("testdata", name+".golden.json")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./controller/topology -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs; run go test ./controller/topology -update and review the diff.\n%s", golden, diff(string(want), string(got)))
			}
		})
	}
}

func diff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	var out []string
	for i := 0; i < len(al) || i < len(bl); i++ {
		var x, y string
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if x != y {
			out = append(out, "- "+x, "+ "+y)
			if len(out) > 40 {
				break
			}
		}
	}
	return strings.Join(out, "\n")
}

// TestDeterministicAndReadOnly shuffles the input order: the output must not
// change, and Build must not modify the (cached) input objects.
func TestDeterministicAndReadOnly(t *testing.T) {
	snap := load(t, "testdata/mesh.yaml")
	want := render(t, Build(snap, testOpts))
	before := deepCopy(snap)
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 20; i++ {
		s := *snap
		s.Services = shuffle(rng, s.Services)
		s.Pods = shuffle(rng, s.Pods)
		s.EndpointSlices = shuffle(rng, s.EndpointSlices)
		s.Nodes = shuffle(rng, s.Nodes)
		s.SMI = shuffle(rng, s.SMI)
		if got := render(t, Build(&s, testOpts)); !bytes.Equal(got, want) {
			t.Fatalf("order %d changed the output:\n%s", i, diff(string(want), string(got)))
		}
	}
	if !reflect.DeepEqual(before, deepCopy(snap)) {
		t.Fatal("Build modified its input objects")
	}
}

func shuffle[T any](rng *rand.Rand, in []T) []T {
	out := append([]T(nil), in...)
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

func deepCopy(s *Snapshot) *Snapshot {
	out := &Snapshot{}
	for _, o := range s.Services {
		out.Services = append(out.Services, o.DeepCopy())
	}
	for _, o := range s.Pods {
		out.Pods = append(out.Pods, o.DeepCopy())
	}
	for _, o := range s.EndpointSlices {
		out.EndpointSlices = append(out.EndpointSlices, o.DeepCopy())
	}
	for _, o := range s.Nodes {
		out.Nodes = append(out.Nodes, o.DeepCopy())
	}
	for _, o := range s.Namespaces {
		out.Namespaces = append(out.Namespaces, o.DeepCopy())
	}
	for _, o := range s.SMI {
		out.SMI = append(out.SMI, o.DeepCopy())
	}
	return out
}

// TestBadObjectsAreIsolated: each bad input is reported against itself and
// the rest of the mesh is built as without it.
func TestBadObjectsAreIsolated(t *testing.T) {
	base := load(t, "testdata/mesh.yaml")
	good := Build(base, testOpts)
	cases := []struct {
		name    string
		mutate  func(*Snapshot)
		problem string // substring of one problem
	}{
		{"garbage annotation", func(s *Snapshot) {
			s.Services = append(s.Services, svc("shop", "junk", map[string]string{"trellis.io/timeout": "\x00\xff forever", "trellis.io/retry-attempts": "-3"}, 80))
		}, "Service shop/junk"},
		{"split pointing at itself", func(s *Snapshot) {
			s.SMI = append(s.SMI, smiObj("split.smi-spec.io/v1alpha4", "TrafficSplit", "shop", "selfie",
				map[string]any{"service": "resolver", "backends": []any{map[string]any{"service": "resolver", "weight": int64(1)}}}))
		}, "TrafficSplit shop/selfie"},
		{"target naming an unknown rule", func(s *Snapshot) {
			s.SMI = append(s.SMI, smiObj("access.smi-spec.io/v1alpha3", "TrafficTarget", "shop", "ghost", map[string]any{
				"destination": map[string]any{"kind": "ServiceAccount", "name": "web", "namespace": "shop"},
				"sources":     []any{map[string]any{"kind": "ServiceAccount", "name": "client", "namespace": "shop"}},
				"rules":       []any{map[string]any{"kind": "HTTPRouteGroup", "name": "nope"}}}))
		}, "TrafficTarget shop/ghost"},
		{"unknown SMI version", func(s *Snapshot) {
			s.SMI = append(s.SMI, smiObj("split.smi-spec.io/v1alpha4", "TrafficSplit", "shop", "empty", map[string]any{"service": 42}))
		}, "TrafficSplit shop/empty"},
		{"200 ports", func(s *Snapshot) {
			ports := make([]int32, 200)
			for i := range ports {
				ports[i] = int32(1000 + i)
			}
			s.Services = append(s.Services, svc("shop", "wide", map[string]string{"trellis.io/traffic-type": "tcp"}, ports...))
		}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := *base
			s.Services = append([]*corev1.Service(nil), base.Services...)
			s.SMI = append([]*unstructured.Unstructured(nil), base.SMI...)
			tc.mutate(&s)
			got := Build(&s, testOpts)
			if tc.problem != "" {
				found := false
				for _, p := range got.Problems {
					if strings.Contains(p.String(), tc.problem) {
						found = true
					}
				}
				if !found {
					t.Errorf("no problem about %s in %v", tc.problem, got.Problems)
				}
			}
			// Every Service of the good mesh is still there, unchanged.
			byKey := map[string]*Service{}
			for _, s := range got.Services {
				byKey[s.Key()] = s
			}
			for _, want := range good.Services {
				if !reflect.DeepEqual(byKey[want.Key()], want) {
					t.Errorf("Service %s changed:\n got %+v\nwant %+v", want.Key(), byKey[want.Key()], want)
				}
			}
		})
	}
}

func svc(ns, name string, ann map[string]string, ports ...int32) *corev1.Service {
	s := &corev1.Service{}
	s.Namespace, s.Name, s.Annotations = ns, name, ann
	for _, p := range ports {
		s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: "p" + itoa(p), Port: p, Protocol: corev1.ProtocolTCP})
	}
	return s
}

func itoa(i int32) string { b, _ := json.Marshal(i); return string(b) }

func smiObj(apiVersion, kind, ns, name string, spec map[string]any) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": apiVersion, "kind": kind,
		"metadata": map[string]any{"name": name, "namespace": ns},
		"spec":     spec,
	}}
}

var _ = smi.Error

// TestCacheGivesSameResult builds a sequence of snapshots (each object in
// turn dropped or replaced by a changed copy, with the base in between)
// through one cache: every result must equal the uncached one.
func TestCacheGivesSameResult(t *testing.T) {
	base := load(t, "testdata/mesh.yaml")
	type step struct {
		name string
		snap *Snapshot
		opts Options
	}
	without := func(n int, i int) []int { // indexes 0..n-1 except i
		var out []int
		for k := 0; k < n; k++ {
			if k != i {
				out = append(out, k)
			}
		}
		return out
	}
	var steps []step
	add := func(name string, f func(s *Snapshot), opts Options) {
		s := *base
		s.Services = append([]*corev1.Service(nil), base.Services...)
		s.Pods = append([]*corev1.Pod(nil), base.Pods...)
		s.EndpointSlices = append(s.EndpointSlices[:0:0], base.EndpointSlices...)
		s.Nodes = append([]*corev1.Node(nil), base.Nodes...)
		s.Namespaces = append([]*corev1.Namespace(nil), base.Namespaces...)
		f(&s)
		steps = append(steps, step{name, &s, opts}, step{"base", base, testOpts})
	}
	add("first", func(*Snapshot) {}, testOpts)
	add("tcp default", func(*Snapshot) {}, Options{MeshNamespace: testOpts.MeshNamespace, DefaultTrafficType: annotations.TCP})
	add("other mesh namespace", func(*Snapshot) {}, Options{MeshNamespace: "shop", DefaultTrafficType: annotations.HTTP})
	for i := range base.Pods {
		add("drop pod", func(s *Snapshot) {
			var ps []*corev1.Pod
			for _, k := range without(len(base.Pods), i) {
				ps = append(ps, base.Pods[k])
			}
			s.Pods = ps
		}, testOpts)
		add("pod other account", func(s *Snapshot) {
			p := base.Pods[i].DeepCopy()
			p.Spec.ServiceAccountName = "other"
			s.Pods[i] = p
		}, testOpts)
	}
	for i := range base.Nodes {
		add("node zone", func(s *Snapshot) {
			n := base.Nodes[i].DeepCopy()
			if n.Labels == nil {
				n.Labels = map[string]string{}
			}
			n.Labels[ZoneLabel] = "elsewhere"
			s.Nodes[i] = n
		}, testOpts)
	}
	for i := range base.Namespaces {
		add("namespace unlabelled", func(s *Snapshot) {
			n := base.Namespaces[i].DeepCopy()
			n.Labels, n.Annotations = nil, nil
			s.Namespaces[i] = n
		}, testOpts)
	}
	for i := range base.EndpointSlices {
		add("drop slice", func(s *Snapshot) {
			s.EndpointSlices = s.EndpointSlices[:0]
			for _, k := range without(len(base.EndpointSlices), i) {
				s.EndpointSlices = append(s.EndpointSlices, base.EndpointSlices[k])
			}
		}, testOpts)
		add("slice loses an endpoint", func(s *Snapshot) {
			sl := base.EndpointSlices[i].DeepCopy()
			if len(sl.Endpoints) > 0 {
				sl.Endpoints = sl.Endpoints[1:]
			}
			s.EndpointSlices[i] = sl
		}, testOpts)
	}
	for i := range base.Services {
		add("service tcp", func(s *Snapshot) {
			sv := base.Services[i].DeepCopy()
			if sv.Annotations == nil {
				sv.Annotations = map[string]string{}
			}
			sv.Annotations["trellis.io/traffic-type"] = "tcp"
			s.Services[i] = sv
		}, testOpts)
	}
	if len(steps) < 20 {
		t.Fatalf("only %d steps; is testdata/mesh.yaml empty?", len(steps))
	}
	cache := &DecodeCache{}
	for i, st := range steps {
		want := render(t, Build(st.snap, st.opts))
		o := st.opts
		o.Cache = cache
		if got := render(t, Build(st.snap, o)); !bytes.Equal(got, want) {
			t.Fatalf("step %d (%s): cached build differs:\n%s", i, st.name, diff(string(want), string(got)))
		}
	}
}
