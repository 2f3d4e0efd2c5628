package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/tools/record"

	"github.com/trellis-mesh/trellis/controller/compile"
	"github.com/trellis-mesh/trellis/controller/dns"
	"github.com/trellis-mesh/trellis/controller/report"
	"github.com/trellis-mesh/trellis/controller/serve"
	"github.com/trellis-mesh/trellis/controller/settings"
	"github.com/trellis-mesh/trellis/controller/shadow"
	"github.com/trellis-mesh/trellis/controller/topology"
	"github.com/trellis-mesh/trellis/controller/watch"
	"github.com/trellis-mesh/trellis/controller/webhook"
	"github.com/trellis-mesh/trellis/internal/version"
	"github.com/trellis-mesh/trellis/manifests/crds"
	"github.com/trellis-mesh/trellis/smi"
)

// Options configure one controller replica.
type Options struct {
	Settings  settings.Settings
	Kube      kubernetes.Interface
	Dynamic   dynamic.Interface
	Discovery discovery.DiscoveryInterface

	// Identity names this replica (the pod name) for leader election.
	Identity string
	// ServeAddr serves streams, acks, health and debug (":9000").
	ServeAddr string
	// MetricsAddr serves /metrics ("" disables).
	MetricsAddr string
	// DNSAddr serves the mesh DNS responder ("" disables).
	DNSAddr string
	// TLSCertFile and TLSKeyFile switch the serve listener to TLS.
	TLSCertFile, TLSKeyFile string
	// TokenAudiences are passed to TokenReview (empty: the apiserver's).
	TokenAudiences []string
	// LeaseDuration, RenewDeadline, RetryPeriod tune leader election
	// (defaults 15s, 10s, 2s).
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	// NoLeaderElection makes this replica lead without a lease (tests,
	// single-replica debugging).
	NoLeaderElection bool
	Registry         *prometheus.Registry
	Log              *zap.Logger
	// OnListen, when set, is told the bound addresses (tests).
	OnListen func(serve, dnsUDP net.Addr)

	// WebhookAddr serves the SMI CRDs' conversion webhook over TLS (":9443";
	// "" disables). The Service trellis-controller port 443 must reach it.
	WebhookAddr string
	// WebhookSecret holds the webhook's CA and serving certificate, in the
	// mesh namespace (default "trellis-controller-webhook").
	WebhookSecret string
	// WebhookIPs are extra IP SANs of the serving certificate (tests that
	// point a CRD at https://127.0.0.1:port).
	WebhookIPs []net.IP
	// WebhookResync is how often every replica re-reads the Secret and the
	// leader re-checks the CRDs' caBundle (default 1m).
	WebhookResync time.Duration
	// APIExtensions patches the CRDs' caBundle (nil: the leader leaves the
	// CRDs alone).
	APIExtensions apiextensionsclient.Interface
	// OnWebhookListen, when set, is told the webhook's address (tests).
	OnWebhookListen func(net.Addr)
}

// Controller is one replica.
type Controller struct {
	o       Options
	s       settings.Settings
	log     *zap.Logger
	watcher *watch.Watcher
	deb     *watch.Debouncer
	hub     *serve.Hub
	srv     *serve.Server
	dnsSrv  *dns.Server
	rep     *report.Reporter
	m       *metrics
	leading atomic.Bool
	ready   atomic.Bool
	writer  *shadow.Writer
	coredns *dns.CoreDNS

	mu        sync.Mutex
	prev      *compile.Result
	meshed    []serviceView // for /debug/services; nil before the first rebuild
	dnsState  string
	dnsDone   string // last upstream written to the Corefile
	dnsNextAt time.Time
	shadowErr string
	cache     topology.DecodeCache
	// webhookState is shown in /debug/state; webhookKick makes the webhook
	// loop check the CRDs now (on gaining leadership).
	webhookState string
	webhookKick  chan struct{}
}

type metrics struct {
	rebuild     prometheus.Histogram
	lag         prometheus.Histogram
	rebuilds    *prometheus.CounterVec
	versions    prometheus.Counter
	nodes       prometheus.Gauge
	services    prometheus.Gauge
	pending     prometheus.Gauge
	leader      prometheus.Gauge
	shadowOps   *prometheus.CounterVec
	dnsQueries  *prometheus.CounterVec
	dnsNames    prometheus.Gauge
	corednsSync *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		rebuild: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "trellis_rebuild_duration_seconds", Help: "Snapshot, topology, compile and publish of one rebuild.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "trellis_rebuild_lag_seconds", Help: "From the first event of a burst to its configs being published.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}}),
		rebuilds:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "trellis_rebuilds_total", Help: "Rebuilds, by whether any node's config changed."}, []string{"result"}),
		versions:    prometheus.NewCounter(prometheus.CounterOpts{Name: "trellis_config_versions_total", Help: "Node config versions produced (one per node whose config changed)."}),
		nodes:       prometheus.NewGauge(prometheus.GaugeOpts{Name: "trellis_config_nodes", Help: "Nodes with a compiled config."}),
		services:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "trellis_meshed_services", Help: "Services in the node configs."}),
		pending:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "trellis_pending_ports", Help: "TCP/UDP ports waiting for a proxy port assignment."}),
		leader:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "trellis_leader", Help: "1 when this replica is the leader (writes shadow Services, DNS, Events)."}),
		shadowOps:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "trellis_shadow_service_writes_total", Help: "Shadow Service writes, by operation."}, []string{"op"}),
		dnsQueries:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "trellis_dns_responses_total", Help: "Mesh DNS responses, by rcode."}, []string{"rcode"}),
		dnsNames:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "trellis_dns_names", Help: "Mesh names the DNS responder answers."}),
		corednsSync: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "trellis_coredns_sync_total", Help: "CoreDNS Corefile checks, by result."}, []string{"result"}),
	}
	if reg != nil {
		reg.MustRegister(m.rebuild, m.lag, m.rebuilds, m.versions, m.nodes, m.services, m.pending, m.leader, m.shadowOps, m.dnsQueries, m.dnsNames, m.corednsSync)
	}
	return m
}

// New builds a replica.
func New(o Options) (*Controller, error) {
	if err := o.Settings.Validate(); err != nil {
		return nil, err
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
		o.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	if o.Identity == "" {
		return nil, errors.New("identity (the pod name) is required for leader election")
	}
	if o.WebhookSecret == "" {
		o.WebhookSecret = "trellis-controller-webhook"
	}
	if o.WebhookResync <= 0 {
		o.WebhookResync = time.Minute
	}
	c := &Controller{o: o, s: o.Settings, log: o.Log, hub: serve.NewHub(), m: newMetrics(o.Registry), webhookKick: make(chan struct{}, 1)}
	c.deb = &watch.Debouncer{Quiet: c.s.Debounce.Quiet.D(), Max: c.s.Debounce.Max.D()}
	c.watcher = watch.New(o.Kube, o.Dynamic, o.Discovery, watch.Options{OnChange: func(string) { c.deb.Nudge() }, Log: o.Log.Named("watch")})

	bc := record.NewBroadcaster()
	bc.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: o.Kube.CoreV1().Events("")})
	rec := bc.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "trellis-controller", Host: o.Identity})
	c.rep = report.New(rec, o.Registry)

	c.writer = &shadow.Writer{Client: o.Kube, Namespace: c.s.MeshNamespace, Log: o.Log.Named("shadow")}
	c.coredns = &dns.CoreDNS{Client: o.Kube, Namespace: c.s.CoreDNS.Namespace, ConfigMap: c.s.CoreDNS.ConfigMap, Key: c.s.CoreDNS.Key}
	c.dnsSrv = dns.NewServer(c.s.Domains(), o.Log.Named("dns"))
	c.dnsSrv.OnAnswer = func(rcode int) { c.m.dnsQueries.WithLabelValues(rcodeName(rcode)).Inc() }

	c.srv = serve.New(serve.Options{
		Hub:                 c.hub,
		Auth:                &serve.TokenReviewer{Client: o.Kube, Audiences: o.TokenAudiences},
		Authz:               &serve.SARAuthorizer{Client: o.Kube},
		Pods:                &serve.ListerPods{Lister: c.watcher.Pods(), Client: o.Kube},
		ProxyNamespace:      c.s.MeshNamespace,
		ProxyServiceAccount: c.s.ProxyServiceAccount,
		Ready:               c.ready.Load,
		Metrics:             serve.NewMetrics(o.Registry),
		Log:                 o.Log.Named("serve"),
		Replica:             o.Identity,
		// Plugins compile on the proxies: their load errors come back in
		// acks and become problems (Events, metric) at the next rebuild.
		OnPluginErrors: func() { c.deb.Nudge() },
		Debug: map[string]func(*http.Request) (any, error){
			"problems": func(*http.Request) (any, error) { return c.rep.Problems(), nil },
			"state":    func(*http.Request) (any, error) { return c.state(), nil },
			"services": func(*http.Request) (any, error) { return c.services(), nil },
		},
	})
	return c, nil
}

// Hub exposes the published results (tests and the benchmark).
func (c *Controller) Hub() *serve.Hub { return c.hub }

// Ready reports whether caches synced and the first configs were compiled.
func (c *Controller) Ready() bool { return c.ready.Load() }

// Leading reports whether this replica leads.
func (c *Controller) Leading() bool { return c.leading.Load() }

// Problems returns the current problems.
func (c *Controller) Problems() []smi.Problem { return c.rep.Problems() }

// DNS returns the responder (tests).
func (c *Controller) DNS() *dns.Server { return c.dnsSrv }

// Run runs the replica until ctx ends. Every goroutine it starts ends
// before it returns.
func (c *Controller) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	goRun := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				if r := recover(); r != nil {
					c.log.Error("goroutine panicked", zap.String("goroutine", name), zap.Any("panic", r), zap.Stack("stack"))
					errc <- fmt.Errorf("%s panicked: %v", name, r)
				}
			}()
			if err := f(ctx); err != nil && ctx.Err() == nil {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}

	l, err := net.Listen("tcp", c.o.ServeAddr)
	if err != nil {
		return fmt.Errorf("serve listener %s: %w", c.o.ServeAddr, err)
	}
	hs := c.srv.HTTPServer()
	goRun("serve", func(ctx context.Context) error {
		if c.o.TLSCertFile != "" {
			tl, err := tlsListener(l, c.o.TLSCertFile, c.o.TLSKeyFile)
			if err != nil {
				return err
			}
			l = tl
		}
		return serve.Serve(ctx, hs, l, 5*time.Second)
	})
	var dnsAddr net.Addr
	if c.o.DNSAddr != "" {
		started := make(chan net.Addr, 1)
		goRun("dns", func(ctx context.Context) error {
			return c.dnsSrv.ListenAndServe(ctx, c.o.DNSAddr, func(u, _ net.Addr) { started <- u })
		})
		select {
		case dnsAddr = <-started:
		case err := <-errc:
			cancel()
			wg.Wait()
			return err
		}
	}
	if c.o.MetricsAddr != "" {
		ml, err := net.Listen("tcp", c.o.MetricsAddr)
		if err != nil {
			cancel()
			wg.Wait()
			return fmt.Errorf("metrics listener %s: %w", c.o.MetricsAddr, err)
		}
		ms := &http.Server{Handler: promhttp.HandlerFor(c.o.Registry, promhttp.HandlerOpts{}), ReadHeaderTimeout: 5 * time.Second}
		goRun("metrics", func(ctx context.Context) error { return serve.Serve(ctx, ms, ml, time.Second) })
	}
	if c.o.WebhookAddr != "" {
		wl, err := net.Listen("tcp", c.o.WebhookAddr)
		if err != nil {
			cancel()
			wg.Wait()
			return fmt.Errorf("conversion webhook listener %s: %w", c.o.WebhookAddr, err)
		}
		certs := &webhook.Certs{Client: c.o.Kube, Namespace: c.s.MeshNamespace, Secret: c.o.WebhookSecret,
			DNSNames: webhook.ServiceDNSNames(crds.ConversionService, crds.ConversionNamespace), IPs: c.o.WebhookIPs}
		ws := webhook.HTTPServer()
		goRun("webhook", func(ctx context.Context) error { return serve.Serve(ctx, ws, certs.Listener(wl), 5*time.Second) })
		goRun("webhook certificate", func(ctx context.Context) error { c.webhookLoop(ctx, certs); return nil })
		if c.o.OnWebhookListen != nil {
			c.o.OnWebhookListen(wl.Addr())
		}
	}
	if c.o.OnListen != nil {
		c.o.OnListen(l.Addr(), dnsAddr)
	}

	c.log.Info("waiting for caches to sync")
	if err := c.watcher.Start(ctx); err != nil {
		cancel()
		wg.Wait()
		if ctx.Err() != nil {
			return nil // stopped while syncing
		}
		return err
	}
	c.log.Info("caches synced", zap.String("smi", c.watcher.Served().String()))
	c.rebuild(ctx, time.Now())
	c.ready.Store(true)
	goRun("rebuild", func(ctx context.Context) error { c.deb.Run(ctx, c.rebuild); return nil })
	goRun("lag", func(ctx context.Context) error {
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
				c.srv.UpdateLag()
			}
		}
	})
	if c.o.NoLeaderElection {
		c.setLeading(true)
	} else {
		goRun("leader election", c.elect)
	}

	select {
	case <-ctx.Done():
	case err = <-errc:
		c.log.Error("controller stopping", zap.Error(err))
	}
	cancel()
	wg.Wait()
	return err
}

func (c *Controller) setLeading(b bool) {
	if c.leading.Swap(b) != b {
		v := 0.0
		if b {
			v = 1
		}
		c.m.leader.Set(v)
		c.log.Info("leadership changed", zap.Bool("leading", b))
		c.deb.Nudge()
		if b {
			select {
			case c.webhookKick <- struct{}{}:
			default:
			}
		}
	}
}

// webhookLoop keeps the webhook's certificate loaded from its Secret (every
// replica) and, on the leader, the CRDs' caBundle equal to its CA.
func (c *Controller) webhookLoop(ctx context.Context, certs *webhook.Certs) {
	log := c.log.Named("webhook")
	wait := time.Second
	for {
		state := ""
		wrote, err := certs.Ensure(ctx)
		switch {
		case err != nil:
			state = "certificate: " + err.Error()
			log.Warn("conversion webhook certificate not ready; retrying", zap.Error(err), zap.Duration("retry", wait))
		case c.leading.Load() && c.o.APIExtensions != nil:
			if wrote {
				log.Info("wrote the conversion webhook certificate", zap.String("secret", c.s.MeshNamespace+"/"+c.o.WebhookSecret))
			}
			updated, serr := webhook.SyncCABundle(ctx, c.o.APIExtensions.ApiextensionsV1().CustomResourceDefinitions(), certs.CABundle())
			if len(updated) > 0 {
				log.Info("set the conversion webhook caBundle", zap.Strings("crds", updated))
			}
			if serr != nil {
				err = serr
				state = "caBundle: " + serr.Error()
				log.Warn("conversion webhook caBundle not set; retrying", zap.Error(serr), zap.Duration("retry", wait))
			}
		}
		c.mu.Lock()
		c.webhookState = state
		c.mu.Unlock()
		next := c.o.WebhookResync
		if err != nil {
			next = min(wait, c.o.WebhookResync)
			wait = min(2*wait, 30*time.Second)
		} else {
			wait = time.Second
		}
		t := time.NewTimer(next)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-c.webhookKick:
			t.Stop()
		case <-t.C:
		}
	}
}

// elect campaigns for the lease until ctx ends. Losing it only stops
// writing; streams keep being served.
func (c *Controller) elect(ctx context.Context) error {
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metaName(c.s.MeshNamespace, "trellis-controller"),
		Client:     c.o.Kube.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: c.o.Identity},
	}
	ld, rd, rp := c.o.LeaseDuration, c.o.RenewDeadline, c.o.RetryPeriod
	if ld == 0 {
		ld, rd, rp = 15*time.Second, 10*time.Second, 2*time.Second
	}
	for ctx.Err() == nil {
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock: lock, LeaseDuration: ld, RenewDeadline: rd, RetryPeriod: rp, ReleaseOnCancel: true, Name: "trellis-controller",
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(context.Context) { c.setLeading(true) },
				OnStoppedLeading: func() { c.setLeading(false) },
			},
		})
		if err != nil {
			return err
		}
		le.Run(ctx)
		c.setLeading(false)
	}
	return nil
}

// rebuild is one pass: snapshot → topology → shadow plan → compile →
// publish; the leader then writes shadow Services, the Corefile and Events.
func (c *Controller) rebuild(ctx context.Context, since time.Time) {
	start := time.Now()
	snap, err := c.watcher.Snapshot()
	if err != nil {
		c.log.Error("snapshot failed", zap.Error(err))
		return
	}
	top := topology.Build(snap, topology.Options{MeshNamespace: c.s.MeshNamespace, DefaultTrafficType: c.s.DefaultTrafficType, Cache: &c.cache})
	so := shadow.Options{Namespace: c.s.MeshNamespace, Selector: c.s.ProxySelector, HTTPPort: c.s.ProxyHTTPPort, Min: c.s.ListenPorts.Min, Max: c.s.ListenPorts.Max}
	existing := shadow.Existing(snap.Services, c.s.MeshNamespace)
	desired, _, shadowProblems := shadow.Plan(top, existing, so)
	// Configs use only the assignments already stored in shadow Services,
	// so that every replica serves the same ports.
	assigned := shadow.Assignments(existing, so)
	c.mu.Lock()
	prev := c.prev
	c.mu.Unlock()
	res := compile.Compile(top, assigned, compile.Options{MeshDomain: c.s.MeshDomain, ACL: c.s.ACL, HTTPPort: c.s.ProxyHTTPPort}, prev)
	changed := 0
	for _, n := range res.Nodes() {
		if p := prev.Node(n); p == nil || p.Version != res.Node(n).Version {
			changed++
		}
	}
	if prev == nil || changed > 0 || len(prev.Nodes()) != len(res.Nodes()) {
		c.hub.Publish(res)
		c.m.rebuilds.WithLabelValues("changed").Inc()
	} else {
		c.m.rebuilds.WithLabelValues("unchanged").Inc()
	}
	c.m.versions.Add(float64(changed))
	c.m.nodes.Set(float64(len(res.Nodes())))
	c.m.services.Set(float64(res.Services))
	c.m.pending.Set(float64(len(res.Pending)))
	c.mu.Lock()
	c.prev, c.meshed = res, c.serviceViews(top)
	c.mu.Unlock()
	c.updateDNS(top, existing)
	c.m.rebuild.Observe(time.Since(start).Seconds())
	c.m.lag.Observe(time.Since(since).Seconds())

	problems := append(append(append([]smi.Problem(nil), top.Problems...), shadowProblems...), res.Problems...)
	observed := c.pluginProblems(res)
	problems = append(problems, observed...)
	leading := c.leading.Load()
	c.rep.Update(problems, lookup(snap), leading)
	if !leading {
		c.rep.Observe(observed, lookup(snap))
	}
	if !leading {
		return
	}
	r, err := c.writer.Sync(ctx, desired, existing)
	c.m.shadowOps.WithLabelValues("create").Add(float64(r.Created))
	c.m.shadowOps.WithLabelValues("update").Add(float64(r.Updated))
	c.m.shadowOps.WithLabelValues("delete").Add(float64(r.Deleted))
	c.mu.Lock()
	c.shadowErr = ""
	if err != nil {
		c.shadowErr = err.Error()
	}
	c.mu.Unlock()
	if err != nil {
		c.log.Warn("shadow Services not fully written; retrying", zap.Error(err))
		time.AfterFunc(time.Second, c.deb.Nudge)
	}
	if c.s.CoreDNS.Enabled {
		c.syncCoreDNS(ctx, snap)
	}
}

// pluginProblems turns the plugin load errors proxies reported into
// problems on the MeshPlugins, for plugins still in the config.
func (c *Controller) pluginProblems(res *compile.Result) []smi.Problem {
	reported := c.srv.PluginErrors()
	if len(reported) == 0 {
		return nil
	}
	current := map[string]bool{}
	if nodes := res.Nodes(); len(nodes) > 0 { // every node carries the same plugins
		for _, p := range res.Node(nodes[0]).Header().Plugins {
			current[p.Name] = true
		}
	}
	var out []smi.Problem
	for name, e := range reported {
		if !current[name] {
			continue
		}
		ns, n, _ := strings.Cut(name, "/")
		out = append(out, smi.Problem{Severity: smi.Error, Object: smi.Ref{Kind: topology.PluginKind, Namespace: ns, Name: n},
			Message: "the proxy on " + e.Node + " could not load it: " + e.Error,
			Fix:     "fix the plugin source in its ConfigMap (or spec.config); its Services apply spec.failurePolicy meanwhile"})
	}
	smi.SortProblems(out)
	return out
}

func (c *Controller) updateDNS(top *topology.Topology, existing []*corev1.Service) {
	ips := map[string][]netip.Addr{}
	for _, s := range existing {
		ns, name := shadow.Of(s)
		var addrs []netip.Addr
		for _, ip := range append([]string{s.Spec.ClusterIP}, s.Spec.ClusterIPs...) {
			if a, err := netip.ParseAddr(ip); err == nil {
				dup := false
				for _, x := range addrs {
					dup = dup || x == a
				}
				if !dup {
					addrs = append(addrs, a)
				}
			}
		}
		ips[ns+"/"+name] = addrs
	}
	var entries []dns.Entry
	for _, s := range top.Services {
		if a := ips[s.Key()]; len(a) > 0 {
			entries = append(entries, dns.Entry{Namespace: s.Namespace, Name: s.Name, IPs: a})
		}
	}
	t := dns.NewTable(c.s.Domains(), entries)
	c.dnsSrv.SetTable(t)
	c.m.dnsNames.Set(float64(t.Len()))
}

// syncCoreDNS keeps the stub-domain block pointing at the DNS Service.
// It is checked on every leader rebuild but written only when the block
// would change; failures are retried with a delay and explained.
func (c *Controller) syncCoreDNS(ctx context.Context, snap *topology.Snapshot) {
	var upstream string
	for _, s := range snap.Services {
		if s.Namespace == c.s.MeshNamespace && s.Name == c.s.DNSService && s.Spec.ClusterIP != "" && s.Spec.ClusterIP != corev1.ClusterIPNone {
			upstream = s.Spec.ClusterIP
		}
	}
	c.mu.Lock()
	skip := upstream == c.dnsDone || time.Now().Before(c.dnsNextAt)
	c.mu.Unlock()
	if skip {
		return
	}
	if upstream == "" {
		c.setDNSState(fmt.Sprintf("waiting for Service %s/%s (with a cluster IP) to forward the mesh domains to", c.s.MeshNamespace, c.s.DNSService), time.Minute)
		return
	}
	changed, err := c.coredns.Ensure(ctx, c.s.Domains(), upstream)
	var ue *dns.UnsupportedError
	switch {
	case errors.As(err, &ue):
		c.m.corednsSync.WithLabelValues("unsupported").Inc()
		c.log.Warn("CoreDNS not patched", zap.Error(err))
		c.setDNSState(err.Error(), 5*time.Minute)
		return
	case err != nil:
		c.m.corednsSync.WithLabelValues("error").Inc()
		c.log.Warn("CoreDNS Corefile update failed; retrying", zap.Error(err))
		c.setDNSState(err.Error(), 10*time.Second)
		time.AfterFunc(10*time.Second, c.deb.Nudge)
		return
	}
	if changed {
		c.m.corednsSync.WithLabelValues("written").Inc()
		c.log.Info("CoreDNS forwards the mesh domains", zap.Strings("domains", c.s.Domains()), zap.String("to", upstream))
	} else {
		c.m.corednsSync.WithLabelValues("unchanged").Inc()
	}
	c.mu.Lock()
	c.dnsDone = upstream
	c.dnsState = fmt.Sprintf("CoreDNS %s/%s forwards %v to %s", c.s.CoreDNS.Namespace, c.s.CoreDNS.ConfigMap, c.s.Domains(), upstream)
	c.mu.Unlock()
}

func (c *Controller) setDNSState(s string, retry time.Duration) {
	c.mu.Lock()
	c.dnsState = s
	c.dnsNextAt = time.Now().Add(retry)
	c.mu.Unlock()
}

func (c *Controller) state() map[string]any {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]any{
		"replica": c.o.Identity,
		"version": version.Get(),
		"leading": c.leading.Load(),
		"smi":     c.watcher.Served().String(),
		"dns":     c.dnsState,
		// dnsSynced: this replica (as leader) made CoreDNS forward the mesh
		// domains; false on other replicas and with coreDNS disabled.
		"dnsSynced":      c.dnsDone != "",
		"coreDNSEnabled": c.s.CoreDNS.Enabled,
		"shadowErrors":   c.shadowErr,
		"webhookError":   c.webhookState,
		"problems":       c.rep.Summary(),
	}
	if c.prev != nil {
		versions := map[string]string{}
		for _, n := range c.prev.Nodes() {
			versions[n] = c.prev.Node(n).Version
		}
		out["versions"] = versions
		out["pendingPorts"] = len(c.prev.Pending)
		out["services"] = c.prev.Services
	}
	return out
}

// serviceView is one entry of /debug/services. It is built at rebuild time
// so that the topology (every endpoint of every Service) is not retained
// between rebuilds just for this view.
type serviceView struct {
	Service  string `json:"service"`
	MeshedBy string `json:"meshedBy"`
	Shadow   string `json:"shadow"`
	Ports    any    `json:"ports"`
	Split    any    `json:"split,omitempty"`
	Rules    int    `json:"rules"`
}

func (c *Controller) serviceViews(top *topology.Topology) []serviceView {
	out := make([]serviceView, 0, len(top.Services))
	for _, s := range top.Services {
		out = append(out, serviceView{Service: s.Key(), MeshedBy: s.MeshedBy, Shadow: c.s.MeshNamespace + "/" + shadow.Name(s.Namespace, s.Name), Ports: s.Ports, Split: s.Split, Rules: len(s.Rules)})
	}
	return out
}

func (c *Controller) services() any {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.meshed
}

// lookup finds problem objects in the snapshot for Events.
func lookup(snap *topology.Snapshot) report.Lookup {
	return func(r smi.Ref) runtime.Object {
		switch r.Kind {
		case "Service":
			for _, s := range snap.Services {
				if s.Namespace == r.Namespace && s.Name == r.Name {
					o := s.DeepCopy()
					o.APIVersion, o.Kind = "v1", "Service"
					return o
				}
			}
		case "Namespace":
			for _, n := range snap.Namespaces {
				if n.Name == r.Name {
					o := n.DeepCopy()
					o.APIVersion, o.Kind = "v1", "Namespace"
					return o
				}
			}
		case "EndpointSlice":
			for _, s := range snap.EndpointSlices {
				if s.Namespace == r.Namespace && s.Name == r.Name {
					o := s.DeepCopy()
					o.APIVersion, o.Kind = "discovery.k8s.io/v1", "EndpointSlice"
					return o
				}
			}
		case topology.PluginKind:
			for _, u := range snap.Plugins {
				if u.GetNamespace() == r.Namespace && u.GetName() == r.Name {
					return u.DeepCopy()
				}
			}
		default:
			for _, u := range snap.SMI {
				if u.GetKind() == string(r.Kind) && u.GetNamespace() == r.Namespace && u.GetName() == r.Name {
					return u.DeepCopy()
				}
			}
		}
		return nil
	}
}

func rcodeName(rc int) string {
	switch rc {
	case 0:
		return "NOERROR"
	case 2:
		return "SERVFAIL"
	case 3:
		return "NXDOMAIN"
	case 4:
		return "NOTIMP"
	case 5:
		return "REFUSED"
	default:
		return "OTHER"
	}
}
