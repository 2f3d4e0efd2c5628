package httpproxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/trellis-mesh/trellis/node-proxy/forward"
	"github.com/trellis-mesh/trellis/node-proxy/telemetry"
)

// FastServer serves the shared HTTP listener. It accepts every connection
// itself and serves HTTP/1.1 keep-alive requests on its own fast path: one
// goroutine per client connection reads a request, forwards it over a
// pooled upstream connection and relays the answer, with no other
// goroutine involved and pooled buffers. Anything else it hands, with the
// bytes already read, to a net/http server running the same Handler:
// HTTP/2 with prior knowledge (gRPC), upgrades, Expect: 100-continue,
// HTTP/1.0, CONNECT and non-origin-form targets, and requests to services
// whose upstream scheme is h2c or https. A connection handed over stays
// with net/http. Both paths make the same decisions through the Handler's
// shared policy steps and the runtime.
type FastServer struct {
	h      *Handler
	dialer forward.Dialer
	m      *telemetry.Metrics
	log    *zap.Logger
	opts   ServerOptions
	inner  *http.Server
	hand   *handoffListener
	up     *upstreamPool
	open   interface {
		Inc()
		Dec()
	}

	mu        sync.Mutex
	ln        net.Listener
	conns     map[*h1conn]struct{}
	wg        sync.WaitGroup
	closing   atomic.Bool
	noKeep    atomic.Bool
	innerDone chan struct{}
}

// Listener is what the proxy needs from the shared HTTP listener's server;
// *http.Server and *FastServer both have it.
type Listener interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
	Close() error
	SetKeepAlivesEnabled(bool)
}

var (
	_ Listener = (*FastServer)(nil)
	_ Listener = (*http.Server)(nil)
)

// NewFastServer returns the fast-path server for h. dialer opens upstream
// connections (forwarding stays replaceable: today straight to the pod).
func NewFastServer(h *Handler, dialer forward.Dialer, m *telemetry.Metrics, logger *zap.Logger, o ServerOptions) *FastServer {
	o = o.withDefaults()
	s := &FastServer{h: h, dialer: dialer, m: m, log: logger, opts: o,
		inner: NewServer(h, m, logger, o), conns: map[*h1conn]struct{}{},
		up: newUpstreamPool(o.MaxIdleUpstreamPerHost, o.UpstreamIdleTimeout), innerDone: make(chan struct{}),
		open: m.OpenConns.WithLabelValues("http")}
	return s
}

// Serve accepts connections on l until Shutdown or Close.
func (s *FastServer) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		return http.ErrServerClosed
	}
	s.ln = l
	s.hand = newHandoffListener(l.Addr())
	s.mu.Unlock()
	go func() {
		defer close(s.innerDone)
		if err := s.inner.Serve(s.hand); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("net/http side of the HTTP listener stopped", zap.Error(err))
		}
	}()
	stopJanitor := s.up.startJanitor()
	defer stopJanitor()
	var backoff time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if s.closing.Load() {
				return http.ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && !errors.Is(err, net.ErrClosed) {
				// EMFILE and the like: back off rather than spin.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("http accept", zap.Error(err))
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		hc := s.track(c)
		if hc == nil {
			c.Close()
			continue
		}
		go hc.serve()
	}
}

func (s *FastServer) track(c net.Conn) *h1conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return nil
	}
	hc := newH1conn(s, c)
	s.conns[hc] = struct{}{}
	s.wg.Add(1)
	s.open.Inc()
	return hc
}

// untrack forgets hc; handedOff says net/http now owns (and counts) it.
func (s *FastServer) untrack(hc *h1conn) {
	s.mu.Lock()
	delete(s.conns, hc)
	s.mu.Unlock()
	s.open.Dec()
	s.wg.Done()
}

// SetKeepAlivesEnabled(false) makes every response close its connection
// (used when draining, so clients reconnect to another proxy).
func (s *FastServer) SetKeepAlivesEnabled(v bool) {
	s.noKeep.Store(!v)
	s.inner.SetKeepAlivesEnabled(v)
	if !v {
		s.closeIdle()
	}
}

func (s *FastServer) closeIdle() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for hc := range s.conns {
		hc.closeIfIdle()
	}
}

// Shutdown stops accepting, closes idle connections and waits until the
// active ones finish their request or ctx ends (then it returns ctx's
// error and leaves the rest to Close).
func (s *FastServer) Shutdown(ctx context.Context) error {
	s.closing.Store(true)
	s.noKeep.Store(true)
	s.mu.Lock()
	if s.ln != nil {
		s.ln.Close()
	}
	hand := s.hand
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	s.closeIdle()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var err error
wait:
	for {
		select {
		case <-done:
			break wait
		case <-ctx.Done():
			err = ctx.Err()
			break wait
		case <-tick.C:
			s.closeIdle() // connections that finished a request since
		}
	}
	if ierr := s.inner.Shutdown(ctx); ierr != nil && err == nil {
		err = ierr
	}
	if hand != nil {
		hand.Close()
		<-s.innerDone
	}
	s.up.closeAll()
	return err
}

// Close closes the listener and every connection at once.
func (s *FastServer) Close() error {
	s.closing.Store(true)
	s.mu.Lock()
	if s.ln != nil {
		s.ln.Close()
	}
	hand := s.hand
	for hc := range s.conns {
		hc.c.Close()
	}
	s.mu.Unlock()
	err := s.inner.Close()
	if hand != nil {
		hand.Close()
	}
	s.up.closeAll()
	return err
}

// handoff gives c, with the bytes already read from it, to net/http.
func (s *FastServer) handoff(c net.Conn, prefix []byte) {
	if !s.hand.push(&prefixConn{Conn: c, prefix: prefix}) {
		c.Close()
	}
}

// handoffListener feeds connections the fast path passes on to net/http.
type handoffListener struct {
	addr   net.Addr
	ch     chan net.Conn
	done   chan struct{}
	closed sync.Once
}

func newHandoffListener(addr net.Addr) *handoffListener {
	return &handoffListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *handoffListener) push(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *handoffListener) Close() error {
	l.closed.Do(func() { close(l.done) })
	return nil
}

func (l *handoffListener) Addr() net.Addr { return l.addr }

// prefixConn replays bytes the fast path read before handing over.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}
