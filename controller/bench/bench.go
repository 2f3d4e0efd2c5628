package bench

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"

	"github.com/trellis-mesh/trellis/controller/compile"
	"github.com/trellis-mesh/trellis/controller/serve"
	"github.com/trellis-mesh/trellis/controller/shadow"
	"github.com/trellis-mesh/trellis/controller/topology"
	"github.com/trellis-mesh/trellis/node-proxy/config"
	"github.com/trellis-mesh/trellis/node-proxy/source"
	"github.com/trellis-mesh/trellis/smi/annotations"
)

// Controller is the controller's rebuild-and-serve path on a synthetic
// mesh: the same topology, shadow planning, compile and serve code the
// controller runs, fed from an in-memory snapshot instead of informers.
type Controller struct {
	Mesh  *Mesh
	Hub   *serve.Hub
	Srv   *serve.Server
	mu    sync.Mutex
	prev  *compile.Result
	nodes []string
	cache topology.DecodeCache
}

const proxyNS, proxySA = "trellis-system", "trellis-proxy"

// NewController generates the mesh and compiles it once.
func NewController(s Shape) *Controller {
	c := &Controller{Mesh: Generate(s), Hub: serve.NewHub()}
	for _, n := range c.Mesh.Snap.Nodes {
		c.nodes = append(c.nodes, n.Name)
	}
	auth, pods := tableAuth{}, tablePods{}
	for _, n := range c.nodes {
		auth["token-"+n] = &serve.Caller{User: "system:serviceaccount:" + proxyNS + ":" + proxySA,
			Extra: map[string][]string{serve.ExtraPodName: {"proxy-" + n}, serve.ExtraPodUID: {"uid-" + n}, serve.ExtraNodeName: {n}}}
		p := &corev1.Pod{}
		p.Namespace, p.Name, p.UID, p.Spec.NodeName = proxyNS, "proxy-"+n, types.UID("uid-"+n), n
		pods[proxyNS+"/proxy-"+n] = p
	}
	c.Srv = serve.New(serve.Options{Hub: c.Hub, Auth: auth, Pods: pods, ProxyNamespace: proxyNS, ProxyServiceAccount: proxySA})
	c.Rebuild()
	return c
}

// Nodes lists the node names.
func (c *Controller) Nodes() []string { return c.nodes }

// Rebuild runs one controller pass and publishes the result.
func (c *Controller) Rebuild() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	start := time.Now()
	top := topology.Build(c.Mesh.Snap, topology.Options{MeshNamespace: proxyNS, DefaultTrafficType: annotations.HTTP, Cache: &c.cache})
	so := shadow.Options{Namespace: proxyNS, Selector: map[string]string{"app": "proxy"}, HTTPPort: 10000, Min: 20000, Max: 59999}
	_, assigned, _ := shadow.Plan(top, nil, so)
	c.prev = compile.Compile(top, assigned, compile.Options{MeshDomain: "mesh", ACL: true, HTTPPort: 10000}, c.prev)
	c.Hub.Publish(c.prev)
	return time.Since(start)
}

// Versions returns each node's current version.
func (c *Controller) Versions() map[string]string {
	res, _, _ := c.Hub.Current()
	out := map[string]string{}
	for _, n := range res.Nodes() {
		out[n] = res.Node(n).Version
	}
	return out
}

// Listen serves the streams on a loopback port.
func (c *Controller) Listen(ctx context.Context) (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	go func() {
		if err := serve.Serve(ctx, c.Srv.HTTPServer(), l, time.Second); err != nil {
			fmt.Fprintln(os.Stderr, "bench: serving streams:", err)
		}
	}()
	return "http://" + l.Addr().String(), nil
}

type tableAuth map[string]*serve.Caller

func (t tableAuth) Authenticate(_ context.Context, tok string) (*serve.Caller, error) {
	if c, ok := t[tok]; ok {
		return c, nil
	}
	return nil, fmt.Errorf("%w: unknown token", serve.ErrUnauthenticated)
}

type tablePods map[string]*corev1.Pod

func (t tablePods) GetPod(_ context.Context, ns, name string) (*corev1.Pod, error) {
	if p, ok := t[ns+"/"+name]; ok {
		return p, nil
	}
	return nil, apierrors.NewNotFound(corev1.Resource("pods"), name)
}

// Clients are simulated proxies: real source.Stream clients (snapshot and
// delta decoding, hash verification, acks) whose apply records the time.
type Clients struct {
	n       int
	node    []string
	version []atomic.Pointer[string]
	at      []atomic.Int64 // unix nanos of the last apply
	notify  chan struct{}
	err     atomic.Pointer[error] // a client that gave up
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// StartClients connects n streams, client i for nodes[i % len(nodes)],
// each with its own token file in dir.
func StartClients(url string, nodes []string, n int, tokenDir func(node string) string) *Clients {
	ctx, cancel := context.WithCancel(context.Background())
	cl := &Clients{n: n, node: make([]string, n), version: make([]atomic.Pointer[string], n), at: make([]atomic.Int64, n), cancel: cancel,
		notify: make(chan struct{}, 1)}
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	for i := 0; i < n; i++ {
		i := i
		cl.node[i] = nodes[i%len(nodes)]
		// One connection per client, as separate proxies have.
		hc := &http.Client{Transport: &http.Transport{Protocols: &p}}
		s := &source.Stream{URL: url, TokenFile: tokenDir(cl.node[i]), Client: hc, MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second}
		cl.wg.Add(1)
		go func() {
			defer cl.wg.Done()
			err := s.Run(ctx, func(_ context.Context, c *config.Config) error {
				v := c.Version
				cl.at[i].Store(time.Now().UnixNano())
				cl.version[i].Store(&v)
				select {
				case cl.notify <- struct{}{}:
				default:
				}
				return nil
			})
			if err != nil {
				cl.err.CompareAndSwap(nil, &err)
				select {
				case cl.notify <- struct{}{}:
				default:
				}
			}
		}()
	}
	return cl
}

// Stop disconnects every client.
func (cl *Clients) Stop() {
	cl.cancel()
	cl.wg.Wait()
}

// Wait blocks until every client holds its node's version in want, and
// returns each client's latency from start (sorted).
func (cl *Clients) Wait(want map[string]string, start time.Time, timeout time.Duration) ([]time.Duration, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		done := 0
		for i := 0; i < cl.n; i++ {
			if v := cl.version[i].Load(); v != nil && *v == want[cl.node[i]] {
				done++
			}
		}
		if done == cl.n {
			break
		}
		if err := cl.err.Load(); err != nil {
			return nil, fmt.Errorf("a stream client stopped: %w", *err)
		}
		select {
		case <-cl.notify:
		case <-timer.C:
			return nil, fmt.Errorf("%d of %d streams converged after %s", done, cl.n, timeout)
		}
	}
	out := make([]time.Duration, cl.n)
	for i := range out {
		out[i] = time.Duration(cl.at[i].Load() - start.UnixNano())
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out, nil
}

// Percentile of sorted durations.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p/100*float64(len(sorted))+0.5) - 1
	if i < 0 {
		i = 0
	}
	if i >= len(sorted) {
		i = len(sorted) - 1
	}
	return sorted[i]
}
