package traffic

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/trellis-mesh/trellis/internal/cli/clienv"
)

// The node proxy DaemonSet and its admin port (manifests/base/proxy.yaml).
const (
	proxyDaemonSet = "trellis-proxy"
	adminPort      = 15000
	metricsPath    = "/metrics"
	// scrapeTimeout bounds one proxy's /metrics read through the apiserver.
	scrapeTimeout = 10 * time.Second
	// scrapeParallel bounds concurrent reads (apiserver load on big clusters).
	scrapeParallel = 8
)

// proxy is one node proxy pod.
type proxy struct {
	Pod  string
	Node string
	// UID and Restarts (of its containers) change when the proxy process
	// is replaced: its counters then start over.
	UID      string
	Restarts int32
}

func (p proxy) String() string {
	if p.Node == "" {
		return "proxy pod " + p.Pod
	}
	return fmt.Sprintf("proxy pod %s (node %s)", p.Pod, p.Node)
}

// metricsSource finds the node proxies and reads their metrics. The
// command uses podSource; tests serve the proxy's own metrics registry.
type metricsSource interface {
	// Proxies lists the proxy pods to read, sorted by node then pod, and
	// one line for each pod it skips (not running yet, ...).
	Proxies(ctx context.Context) ([]proxy, []string, error)
	// Metrics returns one proxy's /metrics in Prometheus text format.
	Metrics(ctx context.Context, p proxy) ([]byte, error)
}

var _ metricsSource = (*podSource)(nil)

// podSource reads the pods of the trellis-proxy DaemonSet in the mesh
// namespace, through the apiserver's pods/proxy subresource (RBAC: get
// daemonsets, list pods, get pods/proxy in the mesh namespace).
type podSource struct{ env *clienv.Env }

// Proxies implements metricsSource.
func (s *podSource) Proxies(ctx context.Context) ([]proxy, []string, error) {
	kube, err := s.env.Kube()
	if err != nil {
		return nil, nil, err
	}
	return listProxies(ctx, kube, s.env.MeshNamespace, "")
}

// Metrics implements metricsSource.
func (s *podSource) Metrics(ctx context.Context, p proxy) ([]byte, error) {
	// Ask for the classic text format whatever the proxy could also offer.
	h := http.Header{"Accept": []string{"text/plain;version=0.0.4;q=1"}}
	return s.env.PodGet(ctx, s.env.MeshNamespace, p.Pod, adminPort, metricsPath, h)
}

// listProxies finds the running pods of the proxy DaemonSet, optionally
// only the one on node.
func listProxies(ctx context.Context, kube kubernetes.Interface, meshNS, node string) ([]proxy, []string, error) {
	ds, err := kube.AppsV1().DaemonSets(meshNS).Get(ctx, proxyDaemonSet, metav1.GetOptions{})
	if err != nil {
		err = clienv.APIError(fmt.Sprintf("get DaemonSet %s/%s", meshNS, proxyDaemonSet), err)
		if clienv.Code(err) == clienv.ExitNotFound {
			return nil, nil, clienv.Fail(clienv.ExitNotFound, fmt.Errorf("DaemonSet %s/%s (the node proxies) not found", meshNS, proxyDaemonSet),
				"install Trellis (kubectl trellis install), or pass --mesh-namespace if it runs in another namespace")
		}
		return nil, nil, err
	}
	sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil {
		return nil, nil, fmt.Errorf("DaemonSet %s/%s: spec.selector: %w", meshNS, proxyDaemonSet, err)
	}
	opts := metav1.ListOptions{LabelSelector: sel.String()}
	if node != "" {
		opts.FieldSelector = "spec.nodeName=" + node
	}
	list, err := kube.CoreV1().Pods(meshNS).List(ctx, opts)
	if err != nil {
		return nil, nil, clienv.APIError(fmt.Sprintf("list pods of DaemonSet %s/%s", meshNS, proxyDaemonSet), err)
	}
	items := list.Items
	sort.Slice(items, func(i, j int) bool {
		if items[i].Spec.NodeName != items[j].Spec.NodeName {
			return items[i].Spec.NodeName < items[j].Spec.NodeName
		}
		return items[i].Name < items[j].Name
	})
	var out []proxy
	var skipped []string
	for _, p := range items {
		px := proxy{Pod: p.Name, Node: p.Spec.NodeName, UID: string(p.UID)}
		for _, cs := range p.Status.ContainerStatuses {
			px.Restarts += cs.RestartCount
		}
		switch {
		case p.Spec.NodeName == "":
			skipped = append(skipped, fmt.Sprintf("%s is not scheduled to a node yet; not read", px))
		case p.Status.Phase != corev1.PodRunning:
			skipped = append(skipped, fmt.Sprintf("%s is %s, not Running; not read", px, phaseOf(&p)))
		default:
			out = append(out, px)
		}
	}
	return out, skipped, nil
}

func phaseOf(p *corev1.Pod) string {
	if p.Status.Phase == "" {
		return "Pending"
	}
	return string(p.Status.Phase)
}

// round is one scrape of every proxy.
type scrape struct {
	proxies []proxy
	samples map[string]*sample // by pod
	failed  map[string]string  // by pod: why it could not be read
	skipped []string
}

// scrapeRound lists the proxies and reads them all, in parallel. A proxy
// that cannot be read is recorded, not fatal.
func scrapeRound(ctx context.Context, src metricsSource, now func() time.Time) (*scrape, error) {
	ps, skipped, err := src.Proxies(ctx)
	if err != nil {
		return nil, err
	}
	r := &scrape{proxies: ps, samples: map[string]*sample{}, failed: map[string]string{}, skipped: skipped}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, scrapeParallel)
	for _, p := range ps {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			s, err := scrapeOne(ctx, src, p, now)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				r.failed[p.Pod] = oneLine(err.Error())
				return
			}
			r.samples[p.Pod] = s
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return r, nil
}

func scrapeOne(ctx context.Context, src metricsSource, p proxy, now func() time.Time) (s *sample, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("reading its metrics panicked: %v", v)
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, scrapeTimeout)
	defer cancel()
	body, err := src.Metrics(ctx, p)
	if err != nil {
		return nil, err
	}
	at := now()
	s, err = parseMetrics(body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", metricsPath, err)
	}
	s.At = at
	return s, nil
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	const max = 300
	if len(s) > max {
		s = s[:max-3] + "..."
	}
	return s
}

// delta is what one proxy counted between two rounds.
type delta struct {
	Proxy     proxy
	Seconds   float64
	Requests  map[reqKey]float64
	Durations map[histKey]*hist
	L4        map[l4Key]float64
}

// window is what every proxy counted between two rounds.
type window struct {
	Deltas   []delta
	Warnings []string
	// Read is how many proxies were read in both rounds.
	Read int
}

var (
	errNoProxies  = errors.New("no node proxy pods are running")
	errNoneRead   = errors.New("no node proxy could be read")
	errNoBaseline = errors.New("no node proxy was read in both rounds")
)

// diff computes the window between two rounds: per proxy read in both, the
// increase of every counter (a counter that went down, or a proxy whose
// process restarted, counts from zero, as Prometheus's rate() does).
func diff(prev, cur *scrape) (*window, error) {
	w := &window{}
	w.Warnings = append(w.Warnings, cur.skipped...)
	warned := map[string]bool{}
	for _, r := range []*scrape{prev, cur} {
		for _, p := range r.proxies {
			if why, ok := r.failed[p.Pod]; ok && !warned[p.Pod] {
				warned[p.Pod] = true
				w.Warnings = append(w.Warnings, fmt.Sprintf("%s could not be read, its traffic is left out: %s", p, why))
			}
		}
	}
	before := map[string]proxy{}
	for _, p := range prev.proxies {
		before[p.Pod] = p
	}
	for _, p := range cur.proxies {
		c, p0 := cur.samples[p.Pod], prev.samples[p.Pod]
		if c == nil || p0 == nil {
			continue
		}
		secs := c.At.Sub(p0.At).Seconds()
		if secs <= 0 {
			continue
		}
		w.Read++
		// A restarted process starts its counters over. Counters that went
		// down say so too, but not when they happen to climb back past the
		// old values within the interval.
		b := before[p.Pod]
		reset := c.Start != 0 && p0.Start != 0 && c.Start != p0.Start ||
			b.UID != p.UID || b.Restarts != p.Restarts
		d := delta{Proxy: p, Seconds: secs, Requests: map[reqKey]float64{}, Durations: map[histKey]*hist{}, L4: map[l4Key]float64{}}
		for k, v := range c.Requests {
			if x := counterDelta(p0.Requests[k], v, reset); x > 0 {
				d.Requests[k] = x
			}
		}
		for k, v := range c.L4 {
			if x := counterDelta(p0.L4[k], v, reset); x > 0 {
				d.L4[k] = x
			}
		}
		for k, h := range c.Durations {
			var old *hist
			if !reset {
				old = p0.Durations[k]
			}
			if dh := deltaHist(old, h); dh.Total() > 0 {
				d.Durations[k] = dh
			}
		}
		w.Deltas = append(w.Deltas, d)
	}
	if w.Read == 0 {
		switch {
		case len(cur.proxies) == 0 && len(prev.proxies) == 0:
			return w, errNoProxies
		case len(cur.samples) == 0:
			return w, errNoneRead
		}
		return w, errNoBaseline
	}
	return w, nil
}

func counterDelta(prev, cur float64, reset bool) float64 {
	if reset || cur < prev {
		return cur
	}
	return cur - prev
}
