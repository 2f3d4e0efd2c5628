package l4

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/trellis-mesh/trellis/node-proxy/balance"
	"github.com/trellis-mesh/trellis/node-proxy/forward"
	"github.com/trellis-mesh/trellis/node-proxy/proxyerr"
	"github.com/trellis-mesh/trellis/node-proxy/resilience"
	"github.com/trellis-mesh/trellis/node-proxy/runtime"
	"github.com/trellis-mesh/trellis/node-proxy/telemetry"
)

// Deps are what both L4 proxies need.
type Deps struct {
	Runtime *runtime.Holder
	Dialer  forward.Dialer
	Metrics *telemetry.Metrics
	Log     *zap.Logger
}

// TCP serves one TCP listen port.
type TCP struct {
	Deps
	Port int32
	ln   net.Listener

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// NewTCP returns a TCP proxy for ln, which listens on port.
func NewTCP(d Deps, port int32, ln net.Listener) *TCP {
	return &TCP{Deps: d, Port: port, ln: ln, conns: map[net.Conn]struct{}{}}
}

// Serve accepts until the listener is closed.
func (p *TCP) Serve() error {
	var backoff time.Duration
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			// EMFILE and similar: back off rather than spin.
			p.Log.Warn("tcp accept", zap.Int32("port", p.Port), zap.Error(err))
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		if !p.track(c) {
			c.Close()
			continue
		}
		go p.handle(c)
	}
}

func (p *TCP) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	p.wg.Add(1)
	return true
}

func (p *TCP) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	p.wg.Done()
}

// CloseListener stops accepting; open connections continue.
func (p *TCP) CloseListener() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	return p.ln.Close()
}

// Drain stops accepting and waits for open connections until ctx ends,
// then closes those left. It returns how many were cut.
func (p *TCP) Drain(ctx context.Context) int {
	_ = p.CloseListener()
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
		return 0
	case <-ctx.Done():
	}
	p.mu.Lock()
	n := len(p.conns)
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	<-done
	return n
}

// Open returns the number of open client connections.
func (p *TCP) Open() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

func addrOf(a net.Addr) netip.AddrPort {
	switch v := a.(type) {
	case *net.TCPAddr:
		return v.AddrPort()
	case *net.UDPAddr:
		return v.AddrPort()
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

func (p *TCP) handle(c net.Conn) {
	defer p.untrack(c)
	defer c.Close()
	open := p.Metrics.OpenConns.WithLabelValues("tcp")
	open.Inc()
	defer open.Dec()
	defer func() {
		if v := recover(); v != nil {
			p.Metrics.Panics.Inc()
			p.Log.Error("panic in tcp connection", zap.Any("panic", v), zap.Stack("stack"))
		}
	}()
	rt := p.Runtime.Load() // this connection's config, for its whole life
	if rt == nil {
		return
	}
	route := rt.TCP[p.Port]
	if route == nil {
		return
	}
	src := rt.Source(addrOf(c.RemoteAddr()).Addr())
	up, t, e, err := connect(context.Background(), p.Deps, route, src, "tcp")
	p.count(p.Metrics, src, route, err)
	if err != nil {
		p.Log.Debug("tcp connection refused", zap.Int32("port", p.Port), zap.String("src", c.RemoteAddr().String()),
			zap.String("class", proxyerr.Classify(err).String()), zap.String("reason", proxyerr.Reason(err)))
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // RST: the client learns at once that it was refused
		}
		return
	}
	defer balance.Finish(e)
	start := time.Now()
	toUp, toClient, idle := relay(c, up, route.Service.TCPIdleTimeout)
	if idle {
		p.Log.Debug("tcp connection closed after its idle timeout", zap.Int32("port", p.Port),
			zap.String("src", c.RemoteAddr().String()), zap.Duration("idle_timeout", route.Service.TCPIdleTimeout))
	}
	t.Breaker.Done(resilience.Success, time.Now())
	lbl := []string{"tcp", route.Service.Namespace, route.Service.Name}
	p.Metrics.L4Bytes.WithLabelValues(append(lbl, "to_upstream")...).Add(float64(toUp))
	p.Metrics.L4Bytes.WithLabelValues(append(lbl, "to_client")...).Add(float64(toClient))
	p.Log.Debug("tcp connection", zap.String("src", c.RemoteAddr().String()), zap.String("upstream", e.HostPort),
		zap.Int64("bytes_up", toUp), zap.Int64("bytes_down", toClient), zap.Duration("duration", time.Since(start)))
}

func (p *TCP) count(m *telemetry.Metrics, src runtime.Source, r *runtime.Route, err error) {
	m.TCPConns.WithLabelValues(src.Identity.Namespace, src.Identity.ServiceAccount, src.Service,
		r.Service.Namespace, r.Service.Name, proxyerr.Classify(err).String()).Inc()
}

// connect runs the per-connection policy (ACL, rate limit, split, breaker)
// and dials a pod, trying up to three endpoints when connecting fails. On
// success the endpoint is marked outstanding (caller calls balance.Finish)
// and the breaker admitted the connection (caller reports Done).
func connect(ctx context.Context, d Deps, route *runtime.Route, src runtime.Source, network string) (net.Conn, *runtime.Target, *balance.Endpoint, error) {
	if ok, reason := route.AllowL4(src); !ok {
		return nil, nil, nil, proxyerr.New(proxyerr.Denied, reason)
	}
	svc := route.Service
	if svc.Limiter != nil && !svc.Limiter.Allow() {
		return nil, nil, nil, proxyerr.New(proxyerr.RateLimited, "rate limit of "+svc.Key+" exceeded")
	}
	t := route.ChooseL4()
	if t.Pool.Len() == 0 {
		return nil, nil, nil, proxyerr.New(proxyerr.NoEndpoint, "no endpoints for "+t.Service.Key)
	}
	if !t.Breaker.Allow(time.Now()) {
		return nil, nil, nil, proxyerr.New(proxyerr.CircuitOpen, "circuit breaker of "+t.Service.Key+" is open")
	}
	dst := forward.Destination{ConnectTimeout: svc.ConnectTimeout, Source: src.Identity, SourceKnown: src.Known}
	var last *balance.Endpoint
	var err error
	for try := 0; try < 3; try++ {
		e := t.Pool.Pick(time.Now().UnixNano(), last)
		dst.Endpoint = e
		balance.Start(e)
		var up net.Conn
		up, err = d.Dialer.DialContext(ctx, network, &dst)
		if err == nil {
			t.Pool.Report(e, true, time.Now().UnixNano())
			return up, t, e, nil
		}
		balance.Finish(e)
		t.Pool.Report(e, false, time.Now().UnixNano())
		last = e
		if t.Pool.Len() == 1 {
			break
		}
	}
	t.Breaker.Done(resilience.Failure, time.Now())
	return nil, nil, nil, err
}

// relay copies both ways, propagating half-closes, until both directions
// end or nothing has moved either way for idle (0: no limit); idleClosed
// reports the latter.
func relay(client, up net.Conn, idle time.Duration) (toUp, toClient int64, idleClosed bool) {
	tr := &activity{idle: idle}
	tr.touch()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		toUp = pipe(up, client, tr)
	}()
	toClient = pipe(client, up, tr)
	wg.Wait()
	up.Close()
	return toUp, toClient, tr.idleClosed.Load()
}

// activity is the last time a byte moved on a relayed connection, in
// either direction.
type activity struct {
	idle       time.Duration
	last       atomic.Int64 // unix nanos
	idleClosed atomic.Bool
}

func (a *activity) touch() { a.last.Store(time.Now().UnixNano()) }

// pipe copies src to dst with io.Copy, which splices socket to socket
// without a user-space buffer. With an idle timeout the read side gets a
// deadline a quarter of it ahead; when it passes, the copy reports whether
// bytes moved and goes on, unless nothing moved either way for idle. A
// connection is so closed between 1 and 1.25 idle timeouts after its last
// byte (plus the quarter in which that byte was seen).
func pipe(dst, src net.Conn, a *activity) int64 {
	var total int64
	for {
		if a.idle > 0 {
			_ = src.SetReadDeadline(time.Now().Add(a.idle / 4))
		}
		n, err := io.Copy(dst, src)
		total += n
		if n > 0 {
			a.touch()
		}
		if err == nil {
			// The client or pod finished sending: pass the half-close on.
			if cw, ok := dst.(interface{ CloseWrite() error }); ok {
				_ = cw.CloseWrite()
				return total
			}
			break
		}
		var ne net.Error
		if a.idle > 0 && errors.As(err, &ne) && ne.Timeout() {
			if time.Since(time.Unix(0, a.last.Load())) < a.idle {
				continue
			}
			a.idleClosed.Store(true)
		}
		break
	}
	// An error or the idle timeout on one side: tear both down so the
	// other copy ends.
	dst.Close()
	src.Close()
	return total
}
