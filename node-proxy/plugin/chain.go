package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/trellis-mesh/trellis/node-proxy/config"
	"github.com/trellis-mesh/trellis/node-proxy/proxyerr"
)

// Chains are one Service's plugins, one Chain per stage (nil when the
// stage has none). They are built once per runtime (and reused by the
// next runtime when nothing they depend on changed), never per request.
type Chains struct {
	Before *Chain // config.StageBeforeAccess
	After  *Chain // config.StageAfterAccess
}

// Stage returns the chain of stage s (nil when none). Safe on nil.
func (cs *Chains) Stage(s config.PluginStage) *Chain {
	if cs == nil {
		return nil
	}
	if s == config.StageBeforeAccess {
		return cs.Before
	}
	return cs.After
}

// Wrap returns next behind stage s's plugins (next itself when there are
// none). Proxy errors are written as plain text; the proxy's handler uses
// Chain.Serve instead to write them its own way.
func (cs *Chains) Wrap(s config.PluginStage, next http.Handler) http.Handler {
	if c := cs.Stage(s); c != nil {
		return c.Handler(next)
	}
	return next
}

// Chain is one Service's plugins of one stage, instantiated: each
// plugin's New was called once, with the next plugin (or the end of the
// chain) as next.
type Chain struct {
	service string
	stage   config.PluginStage
	head    http.Handler // nil when every plugin was skipped
	links   []*link      // outermost first
	// closed is set when a plugin with failurePolicy fail did not load:
	// every request is refused with 503 naming it.
	closed  *LoadError
	skipped []*LoadError // failed, failurePolicy ignore: served without
	budget  time.Duration
	env     *Env
	key     string
}

// Service is the Service the chain belongs to.
func (c *Chain) Service() string { return c.service }

// Plugins lists the plugins that run, outermost first.
func (c *Chain) Plugins() []string {
	out := make([]string, len(c.links))
	for i, l := range c.links {
		out[i] = l.name
	}
	return out
}

// Unavailable is the load error that makes the chain refuse every
// request (a plugin with failurePolicy fail did not load), else nil.
func (c *Chain) Unavailable() *LoadError { return c.closed }

// Skipped lists plugins left out because they did not load and their
// failurePolicy is ignore.
func (c *Chain) Skipped() []*LoadError { return c.skipped }

// Timeout is how long plugin code may run per request.
func (c *Chain) Timeout() time.Duration { return c.budget }

// Kind is what went wrong with a plugin during a request.
type Kind uint8

// Kinds of plugin failure during a request.
const (
	Unavailable Kind = iota + 1 // did not load, failurePolicy fail: 503
	Panicked                    // panicked: 500
	TimedOut                    // did not finish in time: 504
	Misused                     // broke the contract (next twice, request context dropped): 500
)

// Error is a plugin failure during a request. Serve returns it wrapped in
// a *proxyerr.Error carrying the failure class (and so the status).
type Error struct {
	Plugin  string
	Service string
	Kind    Kind
	Detail  string // for logs: the panic value, the load error...
	Err     error  // the *LoadError for Unavailable
}

func (e *Error) Error() string {
	s := "plugin " + e.Plugin + " (service " + e.Service + "): " + e.Detail
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

func (e *Error) classify() *proxyerr.Error {
	var class proxyerr.Class
	var reason string
	switch e.Kind {
	case Unavailable:
		// 503 like a Service with nothing to serve it; the class for a
		// plugin that did not load is the proxy's to name.
		class, reason = proxyerr.NoEndpoint, "plugin "+e.Plugin+" is not loaded and its failurePolicy is fail"
	case TimedOut:
		class, reason = proxyerr.Timeout, "plugin "+e.Plugin+" "+e.Detail
	default:
		class, reason = proxyerr.Internal, "plugin "+e.Plugin+" "+e.Detail
	}
	return proxyerr.Wrap(class, reason, e)
}

// Outcome is how a request went through a chain.
type Outcome struct {
	// Status and Bytes are what was written to the client through the
	// chain (by a plugin or by next); 0 when nothing was.
	Status int
	Bytes  int64
	// Err is set when the chain failed: a *proxyerr.Error (503 plugin not
	// loaded, 500 panic or misuse, 504 timeout) wrapping a *Error.
	Err error
	// Written is true when the response had started before Err: it cannot
	// become an error response any more and must be cut (the handler
	// panics with http.ErrAbortHandler).
	Written bool
}

// Serve runs r through the chain and then next, which receives the
// ResponseWriter and Request the last plugin passes on (they may differ
// from w and r). The response is streamed: what the plugins and next
// write reaches w as it is written, except the header map, which is the
// plugins' own and copied to w when the header is written.
//
// Plugin code runs on a goroutine of its own. Serve returns when the chain
// returns, or when plugin code (time spent in next excluded) has run for
// Timeout or past r's context deadline: the request is then given up
// (504) and the goroutine left to finish on its own, unable to write to w
// or to call next. A panic in plugin code gives a 500; a panic in next
// (such as http.ErrAbortHandler) is re-raised on the caller's goroutine.
// Serve never writes an error response itself: see Outcome.
func (c *Chain) Serve(w http.ResponseWriter, r *http.Request, next http.Handler) Outcome {
	if c.closed != nil {
		return Outcome{Err: (&Error{Plugin: c.closed.Plugin, Service: c.service, Kind: Unavailable, Detail: "not loaded", Err: c.closed}).classify()}
	}
	if c.head == nil {
		next.ServeHTTP(w, r)
		return Outcome{}
	}
	parent := r.Context()
	cl := &call{Context: parent, chain: c, next: next, wake: make(chan struct{}, 1), origBody: r.Body}
	cl.gw.init(w)
	r2 := r.WithContext(cl) // cl is the request's context: it carries the call

	deadline, hasDeadline := parent.Deadline()
	start := time.Now()
	cl.since = start
	dispatch(cl, r2)

	// One channel wakes this goroutine: the chain finished, the timer
	// fired, or next returned after the timer fired during it.
	t := time.AfterFunc(c.wait(start, 0, deadline, hasDeadline), cl.signal)
	defer t.Stop()
	for {
		<-cl.wake
		cl.mu.Lock()
		if cl.state != running {
			cl.mu.Unlock()
			return cl.finish()
		}
		if cl.inNext {
			cl.idle = true // next's time is not the plugins': wait for it to return
			cl.mu.Unlock()
			continue
		}
		now := time.Now()
		used := cl.used + now.Sub(cl.since)
		if used < c.budget && (!hasDeadline || now.Before(deadline)) {
			t.Reset(c.wait(now, used, deadline, hasDeadline))
			cl.mu.Unlock()
			continue
		}
		cl.state, cl.blame = abandoned, cl.plugin()
		cl.mu.Unlock()
		return cl.giveUp(hasDeadline && !now.Before(deadline) && used < c.budget)
	}
}

// wait is how long until the budget or the deadline runs out.
func (c *Chain) wait(now time.Time, used time.Duration, deadline time.Time, hasDeadline bool) time.Duration {
	d := c.budget - used
	if hasDeadline {
		d = min(d, deadline.Sub(now))
	}
	return max(d, 0)
}

// Handler returns next behind the chain, writing proxy errors as plain
// text with their status.
func (c *Chain) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		out := c.Serve(w, r, next)
		if out.Err == nil {
			return
		}
		if out.Written {
			panic(http.ErrAbortHandler)
		}
		status, _ := proxyerr.Status(out.Err)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, proxyerr.Reason(out.Err)+"\n")
	})
}

type callKey struct{}

// Plugin code runs on pooled goroutines: the interpreter's deep call
// stacks make a fresh goroutine grow (copy) its stack on every request,
// which costs more than the plugin itself. A goroutine abandoned with its
// request stays with its plugin code; a new one takes its place.
type task struct {
	cl *call
	r  *http.Request
}

var (
	tasks       = make(chan task)
	idleWorkers atomic.Int32
	maxIdle     = int32(max(64, 16*runtime.GOMAXPROCS(0)))
)

func dispatch(cl *call, r *http.Request) {
	select {
	case tasks <- task{cl, r}:
	default:
		go worker(task{cl, r})
	}
}

func worker(t task) {
	for {
		t.cl.run(t.r)
		if idleWorkers.Add(1) > maxIdle {
			idleWorkers.Add(-1)
			return
		}
		t = <-tasks
		idleWorkers.Add(-1)
	}
}

const (
	running = iota
	finished
	abandoned
)

// call is the state of one request in a chain. It is also the context of
// the request the plugins get: the request's own, plus the call.
type call struct {
	context.Context
	chain    *Chain
	next     http.Handler
	origBody io.ReadCloser
	gw       guardWriter
	wake     chan struct{} // buffered 1, see Serve
	current  atomic.Int32  // index of the plugin running, for attribution

	mu           sync.Mutex
	state        int
	inNext       bool
	nextCalled   bool
	idle         bool          // the waiter waits for next to return
	used         time.Duration // plugin time before since
	since        time.Time     // start of the current stretch of plugin time
	panicked     bool
	nextPanicked bool
	panicVal     any
	stack        []byte
	blame        string // the plugin a timeout is counted against
}

// Value implements context.Context. The proxy's *http.Server is not
// handed out (plugins cannot name its key either).
func (cl *call) Value(key any) any {
	switch key {
	case callKey{}:
		return cl
	case http.ServerContextKey:
		return nil
	}
	return cl.Context.Value(key)
}

// signal wakes Serve (without blocking: one pending wake is enough, Serve
// looks at the state each time).
func (cl *call) signal() {
	select {
	case cl.wake <- struct{}{}:
	default:
	}
}

func callFrom(r *http.Request) *call {
	if cl, ok := r.Context().(*call); ok {
		return cl // the request as the chain passed it on
	}
	cl, _ := r.Context().Value(callKey{}).(*call)
	return cl
}

// run runs the chain on the plugin goroutine.
func (cl *call) run(r *http.Request) {
	defer func() {
		v := recover()
		cl.mu.Lock()
		if v != nil {
			cl.panicked, cl.panicVal, cl.stack = true, v, debug.Stack()
		}
		state, name := cl.state, cl.blame
		if state == running {
			cl.state = finished
		}
		cl.mu.Unlock()
		cl.signal()
		if state == abandoned {
			c := cl.chain
			c.env.Metrics.Abandoned.WithLabelValues(name).Dec()
			if v != nil && !errors.Is(asError(v), http.ErrAbortHandler) {
				c.env.Metrics.Panics.WithLabelValues(name).Inc()
			}
			c.env.Log.Warn("plugin code of a timed-out request returned", zap.String("plugin", name),
				zap.String("service", c.service), zap.Any("panic", panicValue(v)))
		}
	}()
	cl.chain.head.ServeHTTP(&cl.gw, r)
}

func (cl *call) plugin() string {
	links := cl.chain.links
	i := int(cl.current.Load())
	if i < 0 || i >= len(links) {
		i = 0
	}
	return links[i].name
}

func asError(v any) error {
	err, _ := panicValue(v).(error)
	return err
}

// finish reports a chain that returned.
func (cl *call) finish() Outcome {
	out := cl.gw.close()
	if !cl.panicked {
		return out
	}
	if errors.Is(asError(cl.panicVal), http.ErrAbortHandler) {
		panic(http.ErrAbortHandler) // a deliberate abort, the plugin's or next's
	}
	if cl.nextPanicked {
		// Not the plugin's fault: the caller's to handle, on its goroutine.
		// Its recover sees this goroutine's stack, so log where it was.
		cl.chain.env.Log.Error("panic behind plugins, passed on to the handler", zap.String("service", cl.chain.service),
			zap.Any("panic", cl.panicVal), zap.ByteString("stack", cl.stack))
		panic(cl.panicVal)
	}
	c, name := cl.chain, cl.plugin()
	c.env.Metrics.Panics.WithLabelValues(name).Inc()
	c.env.Log.Error("plugin panicked; request answered 500", zap.String("plugin", name),
		zap.String("service", c.service), zap.Any("panic", panicValue(cl.panicVal)), zap.ByteString("stack", cl.stack))
	out.Err = (&Error{Plugin: name, Service: c.service, Kind: Panicked, Detail: fmt.Sprintf("panicked: %v", panicValue(cl.panicVal))}).classify()
	return out
}

// giveUp abandons a request whose plugin code ran out of time.
func (cl *call) giveUp(deadline bool) Outcome {
	out := cl.gw.close()
	c, name := cl.chain, cl.blame
	c.env.Metrics.Timeouts.WithLabelValues(name).Inc()
	c.env.Metrics.Abandoned.WithLabelValues(name).Inc()
	detail := fmt.Sprintf("did not finish within %s", c.budget)
	if deadline {
		detail = "did not finish before the request deadline"
	}
	c.env.Log.Warn("plugin timed out; request answered 504 and its goroutine abandoned", zap.String("plugin", name),
		zap.String("service", c.service), zap.Duration("timeout", c.budget))
	out.Err = (&Error{Plugin: name, Service: c.service, Kind: TimedOut, Detail: detail}).classify()
	return out
}

// link is one plugin in a chain; it records which plugin runs.
type link struct {
	idx  int32
	name string
	h    http.Handler
}

func (l *link) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	cl := callFrom(r)
	if cl == nil {
		l.h.ServeHTTP(w, r)
		return
	}
	prev := cl.current.Swap(l.idx)
	l.h.ServeHTTP(w, r)
	cl.current.Store(prev)
}

// tail ends a chain: it calls the request's next, once. It does not
// reference the Chain, so a goroutine a plugin keeps does not keep the
// Chain (whose collection cancels the plugins' context).
type tail struct {
	service string
	plugin  string // innermost plugin, for messages
	env     *Env
}

func (t *tail) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	cl := callFrom(r)
	if cl == nil {
		t.misuse(w, t.plugin, "passed next a request whose context does not derive from the one it received")
		return
	}
	cl.mu.Lock()
	if cl.state != running {
		cl.mu.Unlock()
		return // the request was given up: its next must not run
	}
	if cl.nextCalled {
		// The first call's response stands; this one does nothing.
		cl.mu.Unlock()
		t.env.Log.Error("plugin broke the middleware contract", zap.String("plugin", cl.plugin()), zap.String("service", t.service),
			zap.String("error", "called next twice; the proxy forwards a request once, the second call did nothing"))
		return
	}
	cl.nextCalled, cl.inNext = true, true
	cl.used += time.Since(cl.since)
	cl.mu.Unlock()

	if r.Body != nil && r.Body != cl.origBody && r.Body != http.NoBody {
		// The forwarder reads the body on a goroutine of its own: a
		// panic in a body the plugin supplied must not end the proxy.
		r = r.WithContext(r.Context())
		r.Body = &safeBody{rc: r.Body, t: t, name: cl.plugin()}
	}
	ok := false
	defer func() {
		cl.mu.Lock()
		cl.inNext = false
		cl.since = time.Now()
		cl.nextPanicked = !ok
		wake := cl.idle
		cl.idle = false
		cl.mu.Unlock()
		if wake {
			cl.signal()
		}
	}()
	cl.next.ServeHTTP(w, r)
	ok = true
}

func (t *tail) misuse(w http.ResponseWriter, plugin, what string) {
	t.env.Log.Error("plugin broke the middleware contract", zap.String("plugin", plugin), zap.String("service", t.service), zap.String("error", what))
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusInternalServerError)
	_, _ = io.WriteString(w, "plugin "+plugin+" "+what+"\n")
}

// safeBody is a request body supplied by a plugin, read by the forwarder.
type safeBody struct {
	rc   io.ReadCloser
	t    *tail
	name string
}

func (b *safeBody) Read(p []byte) (n int, err error) {
	defer b.recover(&err)
	return b.rc.Read(p)
}

func (b *safeBody) Close() (err error) {
	defer b.recover(&err)
	return b.rc.Close()
}

func (b *safeBody) recover(err *error) {
	if v := recover(); v != nil {
		b.t.env.Metrics.Panics.WithLabelValues(b.name).Inc()
		b.t.env.Log.Error("plugin request body panicked", zap.String("plugin", b.name), zap.Any("panic", panicValue(v)))
		*err = fmt.Errorf("plugin %s: request body panicked: %v", b.name, panicValue(v))
	}
}

// guardWriter is the ResponseWriter plugin code gets. It streams to the
// real writer under a lock, with a header map of its own, and stops
// passing anything on once the request is over (finished or given up), so
// an abandoned goroutine can never touch the real writer or its headers.
type guardWriter struct {
	mu          sync.Mutex
	w           http.ResponseWriter
	h           http.Header
	dead        bool
	wroteHeader bool
	status      int
	bytes       int64
}

var errGone = errors.New("plugin: the request is over; the response can no longer be written")

func (g *guardWriter) init(w http.ResponseWriter) {
	g.w = w
	src := w.Header()
	g.h = make(http.Header, len(src)+4)
	for k, v := range src {
		g.h[k] = v
	}
}

func (g *guardWriter) Header() http.Header { return g.h }

func (g *guardWriter) WriteHeader(code int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.dead || g.wroteHeader {
		return
	}
	g.writeHeader(code)
}

func (g *guardWriter) writeHeader(code int) {
	real := g.w.Header()
	for k := range real {
		if _, ok := g.h[k]; !ok {
			delete(real, k)
		}
	}
	for k, v := range g.h {
		real[k] = v
	}
	g.w.WriteHeader(code)
	if code >= 200 || code == http.StatusSwitchingProtocols {
		g.wroteHeader, g.status = true, code
	}
}

func (g *guardWriter) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.dead {
		return 0, errGone
	}
	if !g.wroteHeader {
		g.writeHeader(http.StatusOK)
	}
	n, err := g.w.Write(p)
	g.bytes += int64(n)
	return n, err
}

// Flush implements http.Flusher (streaming responses, gRPC).
func (g *guardWriter) Flush() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.dead {
		return
	}
	if !g.wroteHeader {
		g.writeHeader(http.StatusOK)
	}
	if f, ok := g.w.(http.Flusher); ok {
		f.Flush()
	}
}

// close ends the guard: nothing reaches the real writer afterwards.
// Trailers set on the plugins' map after the header was written (declared
// in "Trailer" or with http.TrailerPrefix) are copied to the real map.
func (g *guardWriter) close() Outcome {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.dead = true
	if g.wroteHeader {
		var declared map[string]bool
		for _, v := range g.h["Trailer"] {
			for _, k := range strings.Split(v, ",") {
				if k = strings.TrimSpace(k); k != "" {
					if declared == nil {
						declared = map[string]bool{}
					}
					declared[http.CanonicalHeaderKey(k)] = true
				}
			}
		}
		real := g.w.Header()
		for k, v := range g.h {
			if declared[k] || strings.HasPrefix(k, http.TrailerPrefix) {
				real[k] = v
			}
		}
	}
	return Outcome{Status: g.status, Bytes: g.bytes, Written: g.wroteHeader}
}

var _ http.Flusher = (*guardWriter)(nil)
