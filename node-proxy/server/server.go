package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/trellis-mesh/trellis/node-proxy/admin"
	"github.com/trellis-mesh/trellis/node-proxy/balance"
	"github.com/trellis-mesh/trellis/node-proxy/config"
	"github.com/trellis-mesh/trellis/node-proxy/forward"
	"github.com/trellis-mesh/trellis/node-proxy/httpproxy"
	"github.com/trellis-mesh/trellis/node-proxy/l4"
	"github.com/trellis-mesh/trellis/node-proxy/plugin"
	"github.com/trellis-mesh/trellis/node-proxy/resilience"
	"github.com/trellis-mesh/trellis/node-proxy/runtime"
	"github.com/trellis-mesh/trellis/node-proxy/telemetry"
)

// Source delivers whole configs: it calls apply with each new one until ctx
// ends. A static file and the controller stream are Sources. When the
// source loses its upstream it simply stops calling apply; the proxy keeps
// serving the last config (static stability).
type Source interface {
	Run(ctx context.Context, apply func(context.Context, *config.Config) error) error
}

// Options configure a Proxy.
type Options struct {
	// BindIP is the address data listeners bind (default all, "").
	BindIP string
	// HTTPPort overrides config listeners.http when > 0.
	HTTPPort int32
	// AdminAddr is the admin listener, e.g. ":15000"; "" disables it.
	AdminAddr string
	// NodeName, when set, makes the proxy refuse configs for other nodes.
	NodeName string
	// DrainPeriod is how long the proxy keeps serving after failing
	// readiness on shutdown, so endpoints stop targeting it.
	DrainPeriod time.Duration
	// ShutdownGrace bounds the wait for in-flight requests and connections
	// after the drain period.
	ShutdownGrace time.Duration
	// ListenerGrace bounds how long connections of a listener removed by a
	// reload may continue.
	ListenerGrace time.Duration

	HTTP        httpproxy.ServerOptions
	HTTPHandler httpproxy.Options
	Forward     forward.Options

	Log       *zap.Logger
	AccessLog *zap.Logger
	Metrics   *telemetry.Metrics

	// Tracer, when set, gets a span for every sampled HTTP request and
	// decides the sampling of requests without a traceparent (it should
	// count on Metrics). The proxy flushes and stops it at the end of
	// Shutdown. Nil: no spans.
	Tracer *telemetry.Tracer
	// TraceFlushTimeout bounds that final flush (default 5s).
	TraceFlushTimeout time.Duration
}

// Proxy is one node proxy.
type Proxy struct {
	opts    Options
	log     *zap.Logger
	metrics *telemetry.Metrics
	holder  runtime.Holder
	fwd     *forward.Direct
	handler *httpproxy.Handler
	plugins *plugin.Env

	mu       sync.Mutex // serialises Apply and shutdown
	httpPort int32
	httpSrv  httpproxy.Listener
	httpAddr net.Addr
	tcp      map[int32]*l4.TCP
	udp      map[int32]*l4.UDP
	bg       sync.WaitGroup // retiring listeners
	// retireCtx bounds retiring listeners; cancelled at the end of Shutdown.
	retireCtx    context.Context
	retireCancel context.CancelFunc

	draining  atomic.Bool
	appliedAt atomic.Pointer[time.Time]
	rejection atomic.Pointer[rejection]
}

type rejection struct {
	err string
	at  time.Time
}

var _ admin.State = (*Proxy)(nil)

// New returns a proxy with no config (not ready).
func New(o Options) *Proxy {
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.Metrics == nil {
		o.Metrics = telemetry.NewMetrics()
	}
	if o.ShutdownGrace == 0 {
		o.ShutdownGrace = 30 * time.Second
	}
	if o.ListenerGrace == 0 {
		o.ListenerGrace = 5 * time.Minute
	}
	if o.TraceFlushTimeout == 0 {
		o.TraceFlushTimeout = 5 * time.Second
	}
	if o.Tracer != nil {
		o.HTTPHandler.Spans = o.Tracer
	}
	p := &Proxy{opts: o, log: o.Log, metrics: o.Metrics, tcp: map[int32]*l4.TCP{}, udp: map[int32]*l4.UDP{}}
	p.retireCtx, p.retireCancel = context.WithCancel(context.Background())
	p.fwd = forward.NewDirect(o.Forward)
	p.handler = httpproxy.New(&p.holder, p.fwd, p.metrics, p.log, o.AccessLog, o.HTTPHandler)
	p.plugins = &plugin.Env{Log: o.Log.Named("plugin"), Metrics: plugin.NewMetrics()}
	for _, c := range p.plugins.Metrics.Collectors() {
		p.metrics.Registry.MustRegister(c)
	}
	return p
}

// Handler is the HTTP data-path handler (for tests and benchmarks).
func (p *Proxy) Handler() http.Handler { return p.handler }

// Runtime is the live runtime (nil before the first config).
func (p *Proxy) Runtime() *runtime.Runtime { return p.holder.Load() }

// HTTPAddr is the bound address of the shared HTTP listener (nil if none).
func (p *Proxy) HTTPAddr() net.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.httpAddr
}

func (p *Proxy) hooks() runtime.Hooks {
	return runtime.Hooks{
		Plugins: p.plugins,
		OnEject: func(t *runtime.Target, e *balance.Endpoint, d time.Duration) {
			p.metrics.Ejections.WithLabelValues(t.Service.Namespace, t.Service.Name).Inc()
			p.log.Warn("endpoint ejected", zap.String("service", t.Service.Key), zap.String("endpoint", e.HostPort), zap.Duration("for", d))
		},
		OnBreakerChange: func(t *runtime.Target, s resilience.BreakerState) {
			v := 1.0
			if s == resilience.Closed {
				v = 0
			}
			p.metrics.BreakerOpen.WithLabelValues(t.Service.Namespace, t.Service.Name, strconv.Itoa(int(t.Port.Port))).Set(v)
		},
	}
}

// Apply serves cfg if it builds and its listeners bind; otherwise it
// returns the error and the current config stays.
func (p *Proxy) Apply(ctx context.Context, cfg *config.Config) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.draining.Load() {
		return errors.New("proxy is shutting down")
	}
	cur := p.holder.Load()
	if cur != nil && cfg.Version != "" && cur.Version == cfg.Version {
		p.metrics.ConfigReloads.WithLabelValues("unchanged").Inc()
		return nil
	}
	err := p.apply(cfg, cur)
	if err != nil {
		p.metrics.ConfigReloads.WithLabelValues("rejected").Inc()
		p.rejection.Store(&rejection{err: err.Error(), at: time.Now()})
		p.log.Error("config rejected; still serving the previous one", zap.String("version", cfg.Version), zap.Error(err))
		return err
	}
	now := time.Now()
	p.appliedAt.Store(&now)
	p.metrics.ConfigReloads.WithLabelValues("applied").Inc()
	p.metrics.SetConfigVersion(cfg.Version)
	p.log.Info("config applied", zap.String("version", cfg.Version), zap.Int("services", len(cfg.Services)))
	return nil
}

func (p *Proxy) apply(cfg *config.Config, cur *runtime.Runtime) error {
	if p.opts.NodeName != "" && cfg.Node != p.opts.NodeName {
		return fmt.Errorf("node: config is for node %q but this proxy runs on %q", cfg.Node, p.opts.NodeName)
	}
	rt, err := runtime.Build(cfg, cur, p.hooks())
	if err != nil {
		return err
	}
	// Bind every new listener before anything changes.
	httpPort := cfg.Listeners.HTTP
	if p.opts.HTTPPort > 0 {
		httpPort = p.opts.HTTPPort
	}
	var opened []func()
	undo := func() {
		for _, c := range opened {
			c()
		}
	}
	var newHTTP net.Listener
	if httpPort != 0 && (httpPort != p.httpPort || p.httpSrv == nil) {
		l, err := net.Listen("tcp", p.addr(httpPort))
		if err != nil {
			return fmt.Errorf("listeners.http: bind %s: %w", p.addr(httpPort), err)
		}
		newHTTP = l
		opened = append(opened, func() { l.Close() })
	}
	newTCP := map[int32]net.Listener{}
	for port := range rt.TCP {
		if _, ok := p.tcp[port]; ok {
			continue
		}
		l, err := net.Listen("tcp", p.addr(port))
		if err != nil {
			undo()
			return fmt.Errorf("tcp listenPort %d (%s): bind: %w", port, rt.TCP[port].Service.Key, err)
		}
		newTCP[port] = l
		opened = append(opened, func() { l.Close() })
	}
	newUDP := map[int32]*net.UDPConn{}
	for port := range rt.UDP {
		if _, ok := p.udp[port]; ok {
			continue
		}
		ua, err := net.ResolveUDPAddr("udp", p.addr(port))
		if err != nil {
			undo()
			return fmt.Errorf("udp listenPort %d: %w", port, err)
		}
		pc, err := net.ListenUDP("udp", ua)
		if err != nil {
			undo()
			return fmt.Errorf("udp listenPort %d (%s): bind: %w", port, rt.UDP[port].Service.Key, err)
		}
		newUDP[port] = pc
		opened = append(opened, func() { pc.Close() })
	}

	// Swap. From here nothing fails.
	p.holder.Store(rt)
	deps := l4.Deps{Runtime: &p.holder, Dialer: p.fwd, Metrics: p.metrics, Log: p.log}
	for port, l := range newTCP {
		s := l4.NewTCP(deps, port, l)
		p.tcp[port] = s
		go func() { _ = s.Serve() }() // returns only once the listener is closed
	}
	for port, pc := range newUDP {
		s := l4.NewUDP(deps, port, pc)
		p.udp[port] = s
		go func() { _ = s.Serve() }() // returns only once the socket is closed
	}
	for port, s := range p.tcp {
		if _, ok := rt.TCP[port]; !ok {
			delete(p.tcp, port)
			p.retire(func(ctx context.Context) { s.Drain(ctx) })
		}
	}
	for port, s := range p.udp {
		if _, ok := rt.UDP[port]; !ok {
			delete(p.udp, port)
			p.retire(func(ctx context.Context) { s.Drain(ctx) })
		}
	}
	if newHTTP != nil || httpPort == 0 {
		if old := p.httpSrv; old != nil {
			p.retire(func(ctx context.Context) {
				if err := old.Shutdown(ctx); err != nil {
					p.log.Warn("in-flight HTTP requests cut at the end of the listener grace period", zap.Error(err))
					old.Close()
				}
			})
			p.httpSrv, p.httpAddr = nil, nil
		}
		if newHTTP != nil {
			var srv httpproxy.Listener
			if p.opts.HTTP.DisableFastPath {
				srv = httpproxy.NewServer(p.handler, p.metrics, p.log, p.opts.HTTP)
			} else {
				srv = httpproxy.NewFastServer(p.handler, p.fwd, p.metrics, p.log, p.opts.HTTP)
			}
			p.httpSrv, p.httpAddr = srv, newHTTP.Addr()
			go func() {
				if err := srv.Serve(newHTTP); err != nil && !errors.Is(err, http.ErrServerClosed) {
					p.log.Error("http listener stopped", zap.Error(err))
				}
			}()
		}
	}
	p.httpPort = httpPort
	return nil
}

func (p *Proxy) addr(port int32) string {
	return net.JoinHostPort(p.opts.BindIP, strconv.Itoa(int(port)))
}

// retire runs stop in the background with the listener grace period.
func (p *Proxy) retire(stop func(context.Context)) {
	p.bg.Add(1)
	go func() {
		defer p.bg.Done()
		ctx, cancel := context.WithTimeout(p.retireCtx, p.opts.ListenerGrace)
		defer cancel()
		stop(ctx)
	}()
}

// PluginErrors lists the served config's plugins that failed to load.
func (p *Proxy) PluginErrors() []string {
	rt := p.holder.Load()
	if rt == nil {
		return nil
	}
	var out []string
	for _, e := range rt.PluginErrors() {
		out = append(out, e.Error())
	}
	return out
}

var _ admin.PluginState = (*Proxy)(nil)

// PluginLoadErrors maps each plugin of the served config that failed to
// load to its error (for the controller's ack).
func (p *Proxy) PluginLoadErrors() map[string]string {
	rt := p.holder.Load()
	if rt == nil {
		return nil
	}
	out := map[string]string{}
	for _, e := range rt.PluginErrors() {
		if _, ok := out[e.Plugin]; !ok {
			out[e.Plugin] = e.Error()
		}
	}
	return out
}

// Ready implements admin.State.
func (p *Proxy) Ready() string {
	switch {
	case p.draining.Load():
		return "draining"
	case p.holder.Load() == nil:
		return "no config yet"
	}
	return ""
}

// Live implements admin.State.
func (p *Proxy) Live() (*config.Config, time.Time) {
	rt := p.holder.Load()
	if rt == nil {
		return nil, time.Time{}
	}
	var at time.Time
	if t := p.appliedAt.Load(); t != nil {
		at = *t
	}
	return rt.Config, at
}

// LastRejection implements admin.State.
func (p *Proxy) LastRejection() (string, time.Time) {
	if r := p.rejection.Load(); r != nil {
		return r.err, r.at
	}
	return "", time.Time{}
}

// Run serves the admin endpoint and configs from src until ctx ends, then
// shuts down gracefully (see Shutdown). It returns src's error if the
// source fails before ctx ends (e.g. the static file is invalid).
func (p *Proxy) Run(ctx context.Context, src Source) error {
	var adminSrv *http.Server
	if p.opts.AdminAddr != "" {
		l, err := net.Listen("tcp", p.opts.AdminAddr)
		if err != nil {
			return fmt.Errorf("admin listener %s: %w", p.opts.AdminAddr, err)
		}
		adminSrv = &http.Server{Handler: admin.Handler(p, p.metrics.Registry), ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := adminSrv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				p.log.Error("admin listener stopped", zap.Error(err))
			}
		}()
		defer adminSrv.Close()
	}
	srcCtx, stopSrc := context.WithCancel(ctx)
	defer stopSrc()
	srcErr := make(chan error, 1)
	go func() { srcErr <- src.Run(srcCtx, p.Apply) }()
	select {
	case err := <-srcErr:
		if err != nil && ctx.Err() == nil {
			p.Shutdown(context.Background(), 0)
			return err
		}
		<-ctx.Done()
	case <-ctx.Done():
	}
	stopSrc()
	p.Shutdown(context.Background(), p.opts.DrainPeriod)
	return nil
}

// Shutdown fails readiness, keeps serving for drain, then stops accepting,
// closes idle connections and waits up to ShutdownGrace for in-flight
// requests and connections, cutting what is left.
func (p *Proxy) Shutdown(ctx context.Context, drain time.Duration) {
	p.draining.Store(true)
	p.log.Info("draining: readiness now fails", zap.Duration("drain_period", drain))
	p.mu.Lock()
	srv := p.httpSrv
	p.mu.Unlock()
	if srv != nil {
		// Ask HTTP/1.1 clients to reconnect (to the replacement proxy).
		srv.SetKeepAlivesEnabled(false)
	}
	if drain > 0 {
		t := time.NewTimer(drain)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	gctx, cancel := context.WithTimeout(ctx, p.opts.ShutdownGrace)
	defer cancel()
	var wg sync.WaitGroup
	if p.httpSrv != nil {
		wg.Add(1)
		go func(s httpproxy.Listener) {
			defer wg.Done()
			if err := s.Shutdown(gctx); err != nil {
				p.log.Warn("in-flight HTTP requests cut at the end of the grace period", zap.Error(err))
				s.Close()
			}
		}(p.httpSrv)
	}
	for _, s := range p.tcp {
		wg.Add(1)
		go func(s *l4.TCP) {
			defer wg.Done()
			if n := s.Drain(gctx); n > 0 {
				p.log.Warn("tcp connections cut at the end of the grace period", zap.Int32("port", s.Port), zap.Int("count", n))
			}
		}(s)
	}
	for _, s := range p.udp {
		wg.Add(1)
		go func(s *l4.UDP) { defer wg.Done(); s.Drain(gctx) }(s)
	}
	wg.Wait()
	p.retireCancel()
	p.bg.Wait()
	p.fwd.CloseIdle()
	if p.opts.Tracer != nil {
		fctx, cancel := context.WithTimeout(ctx, p.opts.TraceFlushTimeout)
		defer cancel()
		if err := p.opts.Tracer.Shutdown(fctx); err != nil {
			p.log.Warn("spans not all exported at shutdown", zap.Error(err))
		}
	}
	p.log.Info("shutdown complete")
}
