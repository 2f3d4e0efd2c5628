package compile

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/trellis-mesh/trellis/controller/topology"
	"github.com/trellis-mesh/trellis/node-proxy/config"
	"github.com/trellis-mesh/trellis/smi"
)

// Options are the mesh-wide settings that go into every config.
type Options struct {
	MeshDomain string
	ACL        bool
	// HTTPPort is the proxy's shared HTTP listener.
	HTTPPort int32
}

// Assignments are the proxy ports of TCP and UDP service ports.
type Assignments = topology.Assignments

// Fragment is one Service as encoded in a node's config. Fragments are
// shared between nodes (and reused across compiles when their bytes are
// unchanged), so they must not be modified.
type Fragment struct {
	Key    string        // namespace/name
	JSON   []byte        // json.Marshal of the Service
	Digest config.Digest // config.DigestOf(JSON), its piece of the version
	// src is the value JSON encodes. The next compile compares against it
	// (reflect.DeepEqual: equal values encode to equal bytes, and shared
	// slices compare in O(1)) to skip re-encoding unchanged Services.
	src config.Service
}

// Node is one node's compiled config, kept in pieces so that a thousand
// services on a hundred nodes share their encodings.
type Node struct {
	Name    string
	Version string
	// header is json.Marshal of the config without services, local pods
	// and version: {"node":...,"listeners":...,"acl":...}.
	header    []byte
	Services  []*Fragment // sorted by Key
	localPods []byte      // json.Marshal(LocalPods), nil when none
	pods      []config.LocalPod
	cfg       config.Config // header fields only
}

// Result is the output of one compile.
type Result struct {
	nodes map[string]*Node
	names []string
	// Problems found while compiling (objects the proxy could not accept).
	Problems []smi.Problem
	// Pending lists TCP/UDP ports left out because no proxy port is
	// assigned yet (the leader assigns them in the shadow Services).
	Pending []topology.PortKey
	// Services is how many Services the configs hold.
	Services int
	frags    map[string]*Fragment // by key + variant, for reuse
}

// Nodes returns the node names, sorted.
func (r *Result) Nodes() []string { return r.names }

// Node returns one node's config, or nil.
func (r *Result) Node(name string) *Node {
	if r == nil {
		return nil
	}
	return r.nodes[name]
}

// WriteTo writes the node's config as one JSON object, exactly the bytes
// json.Marshal gives for Config().
func (n *Node) WriteTo(w io.Writer) (int64, error) {
	cw := &countWriter{w: w}
	h := n.header
	cw.str(`{"version":"` + n.Version + `",`)
	cw.bytes(h[1 : len(h)-1])
	if len(n.Services) > 0 {
		cw.str(`,"services":[`)
		for i, f := range n.Services {
			if i > 0 {
				cw.str(",")
			}
			cw.bytes(f.JSON)
		}
		cw.str("]")
	}
	if n.localPods != nil {
		cw.str(`,"localPods":`)
		cw.bytes(n.localPods)
	}
	cw.str("}")
	return cw.n, cw.err
}

// JSON returns WriteTo's bytes.
func (n *Node) JSON() []byte {
	var b bytes.Buffer
	_, _ = n.WriteTo(&b) // a bytes.Buffer does not fail
	return b.Bytes()
}

// countWriter counts bytes and keeps the first error; later writes are
// skipped.
type countWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (c *countWriter) bytes(p []byte) {
	if c.err != nil {
		return
	}
	k, err := c.w.Write(p)
	c.n += int64(k)
	c.err = err
}

func (c *countWriter) str(s string) {
	if c.err != nil {
		return
	}
	k, err := io.WriteString(c.w, s)
	c.n += int64(k)
	c.err = err
}

// Config materialises the node's config by decoding its fragments (for
// tests and debugging; the stream sends the bytes).
func (n *Node) Config() *config.Config {
	c := n.cfg
	c.Version = n.Version
	c.Services = make([]config.Service, len(n.Services))
	for i, f := range n.Services {
		if err := json.Unmarshal(f.JSON, &c.Services[i]); err != nil {
			panic(fmt.Sprintf("compile: decoding Service %s: %v", f.Key, err)) // we encoded it
		}
	}
	c.LocalPods = n.pods
	return &c
}

// LocalPods are the node's pods (shared; do not modify).
func (n *Node) LocalPods() []config.LocalPod { return n.pods }

// Header returns the config without services and local pods (for deltas).
func (n *Node) Header() config.Config { return n.cfg }

// HeaderJSON is the encoded header (shared; do not modify).
func (n *Node) HeaderJSON() []byte { return n.header }

// LocalPodsJSON is the encoded local pods, nil when none (shared).
func (n *Node) LocalPodsJSON() []byte { return n.localPods }

// Compile turns a topology into one config per node. prev, when given, is
// the previous result: fragments whose bytes did not change are reused so
// that unchanged services compare equal by pointer (cheap deltas). The
// output does not depend on prev.
func Compile(t *topology.Topology, assign Assignments, o Options, prev *Result) *Result {
	r := &Result{nodes: map[string]*Node{}, frags: map[string]*Fragment{}}
	plugins, problems := validPlugins(t.Plugins)
	names := make(map[string]bool, len(plugins))
	for _, p := range plugins {
		names[p.Name] = true
	}
	services, sproblems, pending := effectiveServices(t, assign, o, names)
	problems = append(problems, sproblems...)
	smi.SortProblems(problems)
	r.Problems = problems
	r.Pending = pending
	r.Services = len(services)

	reuse := func(key string, svc *config.Service) *Fragment {
		var old *Fragment
		if prev != nil {
			old = prev.frags[key]
		}
		// A deep-equal value encodes to the same bytes: skip encoding.
		if old != nil && reflect.DeepEqual(&old.src, svc) {
			r.frags[key] = old
			return old
		}
		b, err := json.Marshal(svc)
		if err != nil { // only invalid RawMessage can fail; none here
			panic(fmt.Sprintf("compile: encoding Service %s: %v", svc.Key(), err))
		}
		if old != nil && bytes.Equal(old.JSON, b) {
			r.frags[key] = old
			return old
		}
		f := &Fragment{Key: svc.Key(), JSON: b, Digest: config.DigestOf(b), src: *svc}
		r.frags[key] = f
		return f
	}
	// Services without rules (or with ACL off) are the same on every node.
	base := make([]*Fragment, len(services))
	var withRules []int
	for i := range services {
		s := &services[i]
		if o.ACL && len(s.Rules) > 0 {
			withRules = append(withRules, i)
			continue
		}
		if !o.ACL {
			s.Rules = nil
		}
		base[i] = reuse(s.Key(), s)
	}

	var mu sync.Mutex // guards r.frags for variants
	variant := func(i int, local map[config.Identity]bool, buf []byte) (*Fragment, []byte) {
		s := &services[i]
		// The variant is named by which rule sources are local: one bit
		// per source. Equal keys share one encoding.
		buf = append(buf[:0], s.Namespace...)
		buf = append(buf, '/')
		buf = append(buf, s.Name...)
		buf = append(buf, '|')
		var bits byte
		nb := 0
		for _, rule := range s.Rules {
			for _, id := range rule.Sources {
				if local[id] {
					bits |= 1 << nb
				}
				if nb++; nb == 8 {
					buf = append(buf, bits)
					bits, nb = 0, 0
				}
			}
		}
		buf = append(buf, bits)
		mu.Lock()
		f := r.frags[string(buf)]
		mu.Unlock()
		if f != nil {
			return f, buf
		}
		var rules []config.AccessRule
		for _, rule := range s.Rules {
			var kept []config.Identity
			for _, id := range rule.Sources {
				if local[id] {
					kept = append(kept, id)
				}
			}
			if len(kept) > 0 {
				nr := rule
				nr.Sources = kept
				rules = append(rules, nr)
			}
		}
		cp := *s
		cp.Rules = rules
		key := string(buf)
		mu.Lock()
		defer mu.Unlock()
		if f := r.frags[key]; f != nil {
			return f, buf
		}
		return reuse(key, &cp), buf
	}

	zoneOf := map[string]string{}
	for _, n := range t.Nodes {
		zoneOf[n.Name] = n.Zone
		r.names = append(r.names, n.Name)
	}
	sort.Strings(r.names)
	nodes := make([]*Node, len(r.names))
	work := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < runtime.GOMAXPROCS(0); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				nodes[i] = buildNode(r.names[i], zoneOf[r.names[i]], t.LocalPods[r.names[i]], o, plugins, base, withRules, variant)
			}
		}()
	}
	for i := range r.names {
		work <- i
	}
	close(work)
	wg.Wait()
	for _, n := range nodes {
		r.nodes[n.Name] = n
	}
	return r
}

func buildNode(name, zone string, pods []config.LocalPod, o Options, plugins []config.Plugin, base []*Fragment, withRules []int,
	variant func(int, map[config.Identity]bool, []byte) (*Fragment, []byte)) *Node {
	n := &Node{Name: name, pods: pods}
	n.cfg = config.Config{Node: name, Zone: zone, MeshDomain: o.MeshDomain, Listeners: config.Listeners{HTTP: o.HTTPPort}, ACL: config.ACLOff, Plugins: plugins}
	if o.MeshDomain == "mesh" {
		n.cfg.MeshDomain = "" // the default
	}
	if o.ACL {
		n.cfg.ACL = config.ACLOn
	}
	n.header, _ = json.Marshal(&n.cfg)
	if len(pods) > 0 {
		n.localPods, _ = json.Marshal(pods)
	}
	local := make(map[config.Identity]bool, len(pods))
	for _, p := range pods {
		local[p.Identity] = true
	}
	n.Services = make([]*Fragment, len(base))
	copy(n.Services, base)
	var buf []byte
	for _, i := range withRules {
		n.Services[i], buf = variant(i, local, buf)
	}
	n.Version = n.hash()
	return n
}

// hash computes Config.Hash() of the node from the digests of its pieces:
// each Service's digest was computed once, when its fragment was encoded,
// so a node costs 32 bytes of hashing per Service.
func (n *Node) hash() string {
	lp := n.localPods
	if lp == nil {
		lp = config.LocalPodsJSON(nil)
	}
	return config.HashPieces(config.DigestOf(n.header), len(n.Services),
		func(i int) *config.Digest { return &n.Services[i].Digest }, config.DigestOf(lp))
}

var servicePath = regexp.MustCompile(`^services\[(\d+)\]`)

// effectiveServices turns topology services into config services: proxy
// ports filled in (ports still waiting for one are left out), splits
// reduced to the backends that remain, and anything the proxy's validation
// rejects dropped and reported.
func effectiveServices(t *topology.Topology, assign Assignments, o Options, plugins map[string]bool) ([]config.Service, []smi.Problem, []topology.PortKey) {
	var pending []topology.PortKey
	var problems []smi.Problem
	out := make([]config.Service, 0, len(t.Services))
	used := map[config.Protocol]map[int32]string{config.ProtocolTCP: {}, config.ProtocolUDP: {}}
	for _, ts := range t.Services {
		s := config.Service{Namespace: ts.Namespace, Name: ts.Name, Endpoints: ts.Endpoints, Rules: ts.Rules, Resilience: ts.Resilience}
		for _, name := range ts.Plugins {
			if plugins[name] {
				s.Plugins = append(s.Plugins, name)
			}
		}
		for _, p := range ts.Ports {
			if p.Protocol == config.ProtocolTCP || p.Protocol == config.ProtocolUDP {
				k := topology.PortKey{Namespace: ts.Namespace, Name: ts.Name, Port: p.Port, Protocol: p.Protocol}
				lp, ok := assign[k]
				if !ok || lp <= 0 || lp > 65535 || lp == o.HTTPPort && p.Protocol == config.ProtocolTCP {
					pending = append(pending, k)
					continue
				}
				if other, dup := used[p.Protocol][lp]; dup {
					problems = append(problems, smi.Problem{Severity: smi.Warning, Object: smi.Ref{Kind: "Service", Namespace: ts.Namespace, Name: ts.Name},
						Field: "spec.ports", Message: fmt.Sprintf("proxy port %d/%s for port %d is also assigned to %s; waiting for a new assignment", lp, p.Protocol, p.Port, other)})
					pending = append(pending, k)
					continue
				}
				used[p.Protocol][lp] = k.String()
				p.ListenPort = lp
			}
			s.Ports = append(s.Ports, p)
		}
		if len(s.Ports) == 0 {
			continue
		}
		if ts.Split != nil {
			cp := *ts.Split
			s.Split = &cp
		}
		// Rules may name ports that are pending.
		s.Rules = dropPendingRulePorts(s.Rules, s.Ports)
		out = append(out, s)
	}
	fixSplits(out)
	// Validate everything together once (rules unfiltered, no local pods):
	// per-node configs only drop rule sources, which cannot invalidate them.
	for round := 0; round < 5; round++ {
		probe := config.Config{Version: "probe", Node: "probe", MeshDomain: o.MeshDomain, Listeners: config.Listeners{HTTP: o.HTTPPort}, Services: out, Plugins: pluginStubs(plugins)}
		err := probe.Validate()
		if err == nil {
			break
		}
		var ve *config.ValidationError
		if !errors.As(err, &ve) {
			break
		}
		bad := map[int]string{}
		for _, fe := range ve.Problems {
			m := servicePath.FindStringSubmatch(fe.Path)
			if m == nil {
				continue
			}
			i, _ := strconv.Atoi(m[1])
			if _, seen := bad[i]; !seen && i < len(out) {
				bad[i] = strings.TrimPrefix(fe.Error(), m[0])
			}
		}
		if len(bad) == 0 {
			break
		}
		kept := out[:0:0]
		for i, s := range out {
			if why, ok := bad[i]; ok {
				problems = append(problems, smi.Problem{Severity: smi.Error, Object: smi.Ref{Kind: "Service", Namespace: s.Namespace, Name: s.Name},
					Message: "the proxy config for this Service is invalid (" + strings.TrimPrefix(why, ".") + "); the Service is left out of the mesh",
					Fix:     "fix the Service's annotations or the SMI objects that name it"})
				continue
			}
			kept = append(kept, s)
		}
		out = kept
		fixSplits(out)
	}
	smi.SortProblems(problems)
	return out, problems, pending
}

// validPlugins keeps the plugins the proxy's validation accepts; each one
// it rejects is reported on its MeshPlugin and left out (Services using it
// then serve without it, as if it were not attached).
func validPlugins(in []config.Plugin) ([]config.Plugin, []smi.Problem) {
	var out []config.Plugin
	var problems []smi.Problem
	for _, p := range in {
		probe := config.Config{Version: "probe", Node: "probe", Plugins: []config.Plugin{p}}
		if err := probe.Validate(); err != nil {
			ns, name, _ := strings.Cut(p.Name, "/")
			problems = append(problems, smi.Problem{Severity: smi.Error, Object: smi.Ref{Kind: topology.PluginKind, Namespace: ns, Name: name},
				Message: "the proxy would refuse this plugin (" + strings.ReplaceAll(err.Error(), "plugins[0]", "plugin") + "); it is left out",
				Fix:     "fix spec.module or the ConfigMap's file names"})
			continue
		}
		out = append(out, p)
	}
	return out, problems
}

// pluginStubs stand for the valid plugins when validating Services, which
// only needs their names (the sources were checked by validPlugins).
func pluginStubs(names map[string]bool) []config.Plugin {
	out := make([]config.Plugin, 0, len(names))
	for n := range names {
		out = append(out, config.Plugin{Name: n, Version: "stub", Module: "stub", Files: map[string]string{"stub.go": ""}})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func dropPendingRulePorts(rules []config.AccessRule, ports []config.ServicePort) []config.AccessRule {
	has := map[int32]bool{}
	for _, p := range ports {
		has[p.Port] = true
	}
	var out []config.AccessRule
	changed := false
	for _, r := range rules {
		var ps []int32
		for _, p := range r.Ports {
			if has[p] {
				ps = append(ps, p)
			}
		}
		if len(ps) != len(r.Ports) {
			changed = true
			if len(ps) == 0 {
				continue // selects no port that is served yet; empty would mean "all"
			}
			r.Ports = ps
		}
		out = append(out, r)
	}
	if !changed {
		return rules
	}
	return out
}

// fixSplits drops split backends that are not in services (left out) or
// whose ports no longer line up, and splits with no weight left.
func fixSplits(services []config.Service) {
	byKey := make(map[string]*config.Service, len(services))
	for i := range services {
		byKey[services[i].Key()] = &services[i]
	}
	for i := range services {
		s := &services[i]
		if s.Split == nil {
			continue
		}
		var kept []config.Backend
		var total int64
		for _, b := range s.Split.Backends {
			be := byKey[s.Namespace+"/"+b.Service]
			if be == nil || !samePorts(s, be) {
				continue
			}
			kept = append(kept, b)
			total += int64(b.Weight)
		}
		if total == 0 {
			s.Split = nil
			continue
		}
		if len(kept) != len(s.Split.Backends) {
			cp := *s.Split
			cp.Backends = kept
			s.Split = &cp
		}
	}
}

func samePorts(root, be *config.Service) bool {
	for _, rp := range root.Ports {
		ok := false
		for _, bp := range be.Ports {
			if bp.Port == rp.Port && bp.Protocol == rp.Protocol {
				ok = true
			}
		}
		if !ok {
			return false
		}
	}
	return true
}
