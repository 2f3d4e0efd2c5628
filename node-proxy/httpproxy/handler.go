package httpproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/trellis-mesh/trellis/node-proxy/balance"
	"github.com/trellis-mesh/trellis/node-proxy/config"
	"github.com/trellis-mesh/trellis/node-proxy/forward"
	"github.com/trellis-mesh/trellis/node-proxy/plugin"
	"github.com/trellis-mesh/trellis/node-proxy/proxyerr"
	"github.com/trellis-mesh/trellis/node-proxy/resilience"
	"github.com/trellis-mesh/trellis/node-proxy/runtime"
	"github.com/trellis-mesh/trellis/node-proxy/telemetry"
)

// Response headers on every response the proxy makes itself.
const (
	HeaderError  = "X-Trellis-Error"  // failure class, e.g. "denied"
	HeaderReason = "X-Trellis-Reason" // why, e.g. which rule was missing
)

// Options tune the handler.
type Options struct {
	// MaxHeaderCount bounds the number of request header fields (values).
	MaxHeaderCount int
	// Spans, when set, gets one span per sampled request (see SpanSink).
	// Nil records nothing and costs nothing.
	Spans SpanSink
}

// SpanSink records the spans of sampled requests. *telemetry.Tracer is one.
type SpanSink interface {
	// SampleNew reports whether a request that came without a valid
	// traceparent starts a sampled trace (the flag is then set in the
	// traceparent sent upstream, so the backend's spans join the trace).
	SampleNew() bool
	// Record takes the span of a finished sampled request. It is called on
	// the request's goroutine and must not block.
	Record(telemetry.HTTPSpan)
}

var _ SpanSink = (*telemetry.Tracer)(nil)

// Handler is the HTTP data path.
type Handler struct {
	rt     *runtime.Holder
	fwd    forward.HTTP
	m      *telemetry.Metrics
	log    *zap.Logger
	access *zap.Logger
	spans  SpanSink
	opts   Options
	// panics rate-limits the log of recovered panics (a bug hit by every
	// request must not flood the log; Metrics.Panics counts them all).
	panics rate.Sometimes
}

var _ http.Handler = (*Handler)(nil)

// logPanic logs a recovered panic: the first five, then one per 200ms.
func (h *Handler) logPanic(v any, host string) {
	h.panics.Do(func() {
		h.log.Error("panic serving request", zap.Any("panic", v), zap.String("host", host), zap.Stack("stack"))
	})
}

// New returns the HTTP data-path handler.
func New(rt *runtime.Holder, fwd forward.HTTP, m *telemetry.Metrics, log, access *zap.Logger, o Options) *Handler {
	if o.MaxHeaderCount == 0 {
		o.MaxHeaderCount = 100
	}
	if access == nil {
		access = zap.NewNop()
	}
	return &Handler{rt: rt, fwd: fwd, m: m, log: log, access: access, spans: o.Spans, opts: o,
		panics: rate.Sometimes{First: 5, Interval: 200 * time.Millisecond}}
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// exchange is the state of one request, for the response and telemetry.
type exchange struct {
	start     time.Time
	src       runtime.Source
	route     *runtime.Route
	target    *runtime.Target
	endpoint  *balance.Endpoint
	status    int
	class     proxyerr.Class
	reason    string
	attempts  int
	bytesOut  int64
	wrote     bool
	trace     telemetry.TraceContext // this hop's context, as sent upstream
	parent    [8]byte                // the caller's span id, zero if none
	srcAddr   netip.Addr
	breakerOK bool
	// The request, for the access log.
	proto, method, host, path string
}

var errPerTryTimeout = proxyerr.New(proxyerr.Timeout, "per-try timeout")

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	x := exchange{start: time.Now(), proto: r.Proto, method: r.Method, host: r.Host, path: r.URL.Path}
	defer func() {
		if v := recover(); v != nil {
			if err, ok := v.(error); ok && errors.Is(err, http.ErrAbortHandler) {
				h.finish(&x)
				panic(v)
			}
			h.m.Panics.Inc()
			h.logPanic(v, r.Host)
			x.class, x.reason = proxyerr.Internal, "internal error"
			if x.wrote {
				h.finish(&x)
				panic(http.ErrAbortHandler)
			}
			h.fail(w, &x, proxyerr.New(proxyerr.Internal, "internal error"))
		}
		h.finish(&x)
	}()
	h.serve(w, r, &x)
}

func (h *Handler) serve(w http.ResponseWriter, r *http.Request, x *exchange) {
	h.startTrace(x, r.Header.Get("Traceparent"))
	rt := h.rt.Load()
	if rt == nil {
		h.fail(w, x, errNoConfig)
		return
	}
	if n := headerCount(r.Header); n > h.opts.MaxHeaderCount {
		h.m.BadRequests.WithLabelValues("header_count").Inc()
		x.status = http.StatusRequestHeaderFieldsTooLarge
		h.fail(w, x, proxyerr.New(proxyerr.BadRequest, fmt.Sprintf("%d header fields, at most %d allowed", n, h.opts.MaxHeaderCount)))
		return
	}
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		x.srcAddr = ap.Addr()
		x.src = rt.Source(x.srcAddr)
	}
	route, err := h.lookup(rt, x, r.Host, r.URL.Path)
	if err != nil {
		h.fail(w, x, err)
		return
	}
	// The Service's timeout bounds everything after the lookup, plugin
	// code included.
	if svc := route.Service; svc.Timeout > 0 {
		ctx, cancel := context.WithTimeout(r.Context(), svc.Timeout)
		defer cancel()
		r = r.WithContext(ctx)
	}
	// Plugins wrap the rest: beforeAccess ones see every request for the
	// route, afterAccess ones only what access control and the rate limit
	// let through, before the split picks a backend. A plugin may answer
	// itself or pass on a changed request.
	h.plugins(w, r, x, route.Plugins.Stage(config.StageBeforeAccess), func(w http.ResponseWriter, r *http.Request) {
		err := h.authorize(x, route, r.Method, r.URL.Path, r.Header)
		if err == nil {
			err = h.limit(route)
		}
		if err != nil {
			h.fail(w, x, err)
			return
		}
		h.plugins(w, r, x, route.Plugins.Stage(config.StageAfterAccess), func(w http.ResponseWriter, r *http.Request) {
			h.forward(w, r, x, route)
		})
	})
}

// plugins runs r through chain c (nil: none) and then next, and accounts
// for what the chain did: a plugin's own answer, a plugin that could not
// load (503), panicked (500) or timed out (504), or a response that had
// already started when it failed (cut).
func (h *Handler) plugins(w http.ResponseWriter, r *http.Request, x *exchange, c *plugin.Chain, next http.HandlerFunc) {
	if c == nil {
		next(w, r)
		return
	}
	out := c.Serve(w, r, next)
	switch {
	case out.Err == nil:
		if x.status == 0 && out.Status != 0 { // a plugin answered itself
			x.status, x.bytesOut, x.wrote = out.Status, out.Bytes, true
		}
	case out.Written:
		x.class, x.reason = proxyerr.Classify(out.Err), out.Err.Error()
		x.wrote = true
		panic(http.ErrAbortHandler)
	default:
		h.fail(w, x, out.Err)
	}
}

// forward is the last step: hop-by-hop headers, the split's choice of
// target, then the attempts and the response.
func (h *Handler) forward(w http.ResponseWriter, r *http.Request, x *exchange, route *runtime.Route) {
	err := stripHopByHop(r.Header)
	var t *runtime.Target
	if err == nil {
		t, err = h.choose(x, route, r.Method, r.URL.Path, r.Header)
	}
	if err != nil {
		h.fail(w, x, err)
		return
	}

	// Trace context: this hop's span (startTrace) is the upstream's parent.
	if v := r.Header["Traceparent"]; len(v) == 1 {
		v[0] = x.trace.String()
	} else {
		r.Header["Traceparent"] = []string{x.trace.String()}
	}

	resp, cancelTry, err := h.roundTrip(r.Context(), r, x, route, t)
	if cancelTry != nil {
		defer cancelTry()
	}
	if err != nil {
		h.fail(w, x, err)
		return
	}
	h.copyResponse(w, resp, x)
}

var errNoConfig = proxyerr.New(proxyerr.NoEndpoint, "proxy has no config yet")

// startTrace gives the request its hop in the trace, from the incoming
// traceparent (in): the caller's trace and sampled flag with a new span
// id, or, without a valid one, a new trace, sampled at the span sink's
// ratio. Set before any policy step, so requests the proxy answers itself
// (403, 429, 503...) are traced too.
func (h *Handler) startTrace(x *exchange, in string) {
	tc, parent, continued := telemetry.Child(in)
	if !continued && h.spans != nil && h.spans.SampleNew() {
		tc.Flags |= telemetry.FlagSampled
	}
	x.trace, x.parent = tc, parent
}

// The policy steps below are shared by the net/http path (serve) and the
// HTTP/1.1 fast path, so both decide every request the same way.

// lookup refuses ambiguous paths and finds the route for host.
func (h *Handler) lookup(rt *runtime.Runtime, x *exchange, host, path string) (*runtime.Route, error) {
	if hasDotSegment(path) {
		// "/metrics/../admin" would pass a "/metrics" rule here and reach
		// /admin after the backend normalises it: refuse ambiguity.
		h.m.BadRequests.WithLabelValues("dot_segment").Inc()
		return nil, errDotSegment
	}
	route := rt.HTTPRoute(host)
	if route == nil {
		h.m.BadRequests.WithLabelValues("no_route").Inc()
		return nil, proxyerr.New(proxyerr.NoRoute, "no meshed service port for host "+sanitize(host)+"; use <service>.<namespace>."+rt.Config.Domain()+"[:port]")
	}
	x.route = route
	return route, nil
}

var errDotSegment = proxyerr.New(proxyerr.BadRequest, "path contains . or .. segments; send a normalised path")

// authorize applies access control.
func (h *Handler) authorize(x *exchange, route *runtime.Route, method, path string, hdr http.Header) error {
	if ok, reason := route.AllowHTTP(x.src, method, path, hdr); !ok {
		return proxyerr.New(proxyerr.Denied, reason)
	}
	return nil
}

// pick applies the rate limit, then choose.
func (h *Handler) pick(x *exchange, route *runtime.Route, method, path string, hdr http.Header) (*runtime.Target, error) {
	if err := h.limit(route); err != nil {
		return nil, err
	}
	return h.choose(x, route, method, path, hdr)
}

// limit applies the Service's rate limit.
func (h *Handler) limit(route *runtime.Route) error {
	if svc := route.Service; svc.Limiter != nil && !svc.Limiter.Allow() {
		return proxyerr.New(proxyerr.RateLimited, "rate limit of "+svc.Key+" exceeded")
	}
	return nil
}

// choose picks the target (split) and asks its circuit breaker; on
// success the breaker is owed a Done (see finish).
func (h *Handler) choose(x *exchange, route *runtime.Route, method, path string, hdr http.Header) (*runtime.Target, error) {
	t := route.Choose(method, path, hdr)
	x.target = t
	if t.Pool.Len() == 0 {
		return nil, proxyerr.New(proxyerr.NoEndpoint, "no endpoints for "+t.Service.Key)
	}
	if !t.Breaker.Allow(x.start) {
		return nil, proxyerr.New(proxyerr.CircuitOpen, "circuit breaker of "+t.Service.Key+" is open")
	}
	x.breakerOK = true
	return t, nil
}

// roundTrip runs the attempts. On success it returns the response and the
// cancel function of the attempt's context, to call after the body.
func (h *Handler) roundTrip(ctx context.Context, r *http.Request, x *exchange, route *runtime.Route, t *runtime.Target) (*http.Response, context.CancelFunc, error) {
	policy := route.Service.Retry
	policy.Budget.Deposit()
	var body []byte
	replayable := r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0
	if !replayable && policy.Attempts > 1 && r.ContentLength > 0 && r.ContentLength <= policy.MaxBodyBytes {
		b := make([]byte, r.ContentLength)
		if _, err := io.ReadFull(r.Body, b); err != nil {
			return nil, nil, proxyerr.Wrap(proxyerr.BadRequest, "request body ended early", err)
		}
		body, replayable = b, true
	}
	idempotent := resilience.Idempotent(r.Method)
	dst := forward.Destination{Scheme: t.Scheme, TLS: t.TLS, ConnectTimeout: route.Service.ConnectTimeout,
		Source: x.src.Identity, SourceKnown: x.src.Known}
	var last *balance.Endpoint
	for n := 1; ; n++ {
		e := t.Pool.Pick(time.Now().UnixNano(), last)
		x.endpoint, x.attempts = e, n
		dst.Endpoint = e
		// The inbound request is ours: it is reused as the outbound one
		// (no clone) and only gets its own context when a per-try timeout
		// needs one.
		out, cancel := r, context.CancelFunc(nop)
		var timer *time.Timer
		if policy.PerTry > 0 {
			var actx context.Context
			actx, cancel = context.WithCancel(ctx)
			timer = time.AfterFunc(policy.PerTry, cancel)
			out = r.WithContext(actx)
		} else if ctx != r.Context() {
			out = r.WithContext(ctx)
		}
		out.RequestURI = ""
		out.Close = false
		if body != nil {
			out.Body = io.NopCloser(bytes.NewReader(body))
		} else if replayable {
			out.Body = nil
			out.ContentLength = 0
		}
		balance.Start(e)
		resp, err := h.fwd.RoundTrip(out, &dst)
		balance.Finish(e)
		if timer != nil && !timer.Stop() {
			if resp != nil {
				resp.Body.Close()
				resp = nil
			}
			if ctx.Err() == nil {
				err = errPerTryTimeout
			}
		}
		if err != nil && ctx.Err() != nil {
			err = ctx.Err() // overall timeout or client gone
		}
		now := time.Now().UnixNano()
		switch {
		case err != nil && proxyerr.Classify(err) == proxyerr.ClientGone:
		case err != nil || isGatewayStatus(resp.StatusCode):
			t.Pool.Report(e, false, now)
		default:
			t.Pool.Report(e, true, now)
		}
		retry, wait := policy.Decide(ctx, resilience.Attempt{N: n, Resp: resp, Err: err, Replayable: replayable, Idempotent: idempotent})
		if !retry {
			if err != nil {
				cancel()
				return nil, nil, err
			}
			return resp, cancel, nil
		}
		if resp != nil {
			_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
			resp.Body.Close()
		}
		cancel()
		h.m.Retries.WithLabelValues(t.Service.Namespace, t.Service.Name).Inc()
		last = e
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(wait):
		}
	}
}

func nop() {}

// hasDotSegment reports whether the (decoded) path has a "." or ".."
// segment. It does not allocate.
func hasDotSegment(p string) bool {
	for i := 0; i < len(p); i++ {
		if p[i] != '.' || (i > 0 && p[i-1] != '/') {
			continue
		}
		j := i + 1
		if j < len(p) && p[j] == '.' {
			j++
		}
		if j == len(p) || p[j] == '/' {
			return true
		}
	}
	return false
}

func isGatewayStatus(code int) bool { return code == 502 || code == 503 || code == 504 }

func (h *Handler) copyResponse(w http.ResponseWriter, resp *http.Response, x *exchange) {
	defer resp.Body.Close()
	_ = stripHopByHop(resp.Header)
	hdr := w.Header()
	for k, vv := range resp.Header {
		hdr[k] = vv
	}
	var announced []string
	if len(resp.Trailer) > 0 {
		announced = make([]string, 0, len(resp.Trailer))
		for k := range resp.Trailer {
			announced = append(announced, k)
		}
		hdr["Trailer"] = []string{strings.Join(announced, ", ")}
	}
	x.status = resp.StatusCode
	x.wrote = true
	w.WriteHeader(resp.StatusCode)
	flush := resp.ContentLength == -1 || strings.HasPrefix(resp.Header.Get("Content-Type"), "application/grpc")
	n, err := copyBody(w, resp.Body, flush)
	x.bytesOut = n
	if err != nil {
		// The status is already sent: the only honest signal left is to
		// abort the stream so the client does not take a cut body as whole.
		x.class, x.reason = proxyerr.Classify(err), "response body: "+err.Error()
		if x.class == proxyerr.ClientGone {
			return
		}
		panic(http.ErrAbortHandler)
	}
	for k, vv := range resp.Trailer {
		if slices.Contains(announced, k) {
			hdr[k] = vv
		} else {
			hdr[http.TrailerPrefix+k] = vv
		}
	}
}

func copyBody(w http.ResponseWriter, r io.Reader, flush bool) (int64, error) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	var fl http.Flusher
	if flush {
		fl, _ = w.(http.Flusher)
	}
	var total int64
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			wn, werr := w.Write(buf[:n])
			total += int64(wn)
			if werr != nil {
				return total, fmt.Errorf("write to client: %w", context.Canceled)
			}
			if fl != nil {
				fl.Flush()
			}
		}
		if rerr == io.EOF {
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
	}
}

// fail writes a proxy-made error response: the one status of its class,
// the class and reason in headers, and a one-line body.
func (h *Handler) fail(w http.ResponseWriter, x *exchange, err error) {
	c := proxyerr.Classify(err)
	x.class = c
	x.reason = proxyerr.Reason(err)
	if c == proxyerr.ClientGone {
		x.status = 499
		return
	}
	if x.status == 0 {
		x.status = c.Status()
	}
	if x.wrote {
		return
	}
	x.wrote = true
	hdr := w.Header()
	for k := range hdr {
		delete(hdr, k)
	}
	hdr.Set("Content-Type", "text/plain; charset=utf-8")
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set(HeaderError, c.String())
	reason := sanitize(x.reason)
	hdr.Set(HeaderReason, reason)
	if c == proxyerr.RateLimited {
		hdr.Set("Retry-After", "1")
	}
	if c == proxyerr.BadRequest {
		hdr.Set("Connection", "close")
	}
	w.WriteHeader(x.status)
	_, _ = io.WriteString(w, c.String()+": "+reason+"\n")
}

// finish records the breaker outcome, the span, metrics and the access log.
func (h *Handler) finish(x *exchange) {
	if x.status == 0 {
		x.status = 499
		if x.class == proxyerr.OK {
			x.class = proxyerr.ClientGone
		}
	}
	if x.breakerOK {
		o := resilience.Success
		switch {
		case x.class == proxyerr.ClientGone:
			o = resilience.Ignore
		case x.class != proxyerr.OK || isGatewayStatus(x.status):
			o = resilience.Failure
		}
		x.target.Breaker.Done(o, time.Now())
	}
	dur := time.Since(x.start)
	// The span goes before the metrics: a counted request has its span
	// recorded (tests rely on it).
	if h.spans != nil && x.trace.Sampled() {
		h.spans.Record(spanOf(x, x.start.Add(dur)))
	}
	dstNS, dstSvc := "", ""
	if x.route != nil {
		dstNS, dstSvc = x.route.Service.Namespace, x.route.Service.Name
	}
	code := telemetry.CodeClass(x.status)
	if x.status == 499 {
		code = "client_closed"
	}
	id := x.src.Identity
	h.m.HTTPRequests.WithLabelValues(id.Namespace, id.ServiceAccount, x.src.Service, dstNS, dstSvc, code, x.class.String()).Inc()
	h.m.HTTPDuration.WithLabelValues(id.Namespace, x.src.Service, dstNS, dstSvc, code).Observe(dur.Seconds())
	if ce := h.access.Check(zap.InfoLevel, "request"); ce != nil {
		upstream, backend := "", ""
		if x.endpoint != nil {
			upstream = x.endpoint.HostPort
		}
		if x.target != nil {
			backend = x.target.Service.Key
		}
		ce.Write(
			zap.String("src_ip", x.srcAddr.String()),
			zap.String("src_identity", identityString(x.src)),
			zap.String("proto", x.proto),
			zap.String("method", x.method),
			zap.String("host", x.host),
			zap.String("path", x.path),
			zap.Int("status", x.status),
			zap.String("class", x.class.String()),
			zap.String("reason", x.reason),
			zap.String("backend", backend),
			zap.String("upstream", upstream),
			zap.Int("attempts", x.attempts),
			zap.Int64("bytes_out", x.bytesOut),
			zap.Duration("duration", dur),
			zap.String("trace_id", x.trace.TraceIDString()),
		)
	}
}

// spanOf describes the finished exchange for the span sink. The strings the
// fast path takes from its connection buffer are copied: the span outlives
// the request.
func spanOf(x *exchange, end time.Time) telemetry.HTTPSpan {
	s := telemetry.HTTPSpan{Trace: x.trace, Parent: x.parent, Start: x.start, End: end,
		Proto: x.proto, Method: strings.Clone(x.method), Host: strings.Clone(x.host), Path: strings.Clone(x.path),
		Status: x.status, BytesOut: x.bytesOut,
		ClientIP: x.srcAddr, Attempts: x.attempts}
	if x.class == proxyerr.ClientGone && !x.wrote {
		s.Status = 0 // 499 is the proxy's note, nothing was sent
	}
	if x.src.Known {
		s.SourceNamespace, s.SourceServiceAccount = x.src.Identity.Namespace, x.src.Identity.ServiceAccount
		s.SourcePod, s.SourceService = x.src.Pod, x.src.Service
	}
	if x.route != nil {
		s.DestNamespace, s.DestService = x.route.Service.Namespace, x.route.Service.Name
	}
	if x.target != nil {
		s.Backend = x.target.Service.Key
	}
	if x.endpoint != nil {
		s.Upstream = x.endpoint.HostPort
	}
	if x.class != proxyerr.OK {
		s.ErrorClass, s.Reason = x.class.String(), strings.Clone(x.reason)
		s.ProxyFailure = x.class != proxyerr.ClientGone
	}
	return s
}

func identityString(s runtime.Source) string {
	if !s.Known {
		return ""
	}
	return s.Identity.String()
}

func headerCount(h http.Header) int {
	n := 0
	for _, vv := range h {
		n += len(vv)
	}
	return n
}

// hopByHop are the RFC 9110 7.6.1 connection-specific fields.
var hopByHop = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// stripHopByHop removes connection-specific fields, including those named
// in Connection, keeping "TE: trailers" (gRPC needs it). A protocol upgrade
// other than h2c cannot be proxied yet and is refused.
func stripHopByHop(h http.Header) error {
	if up := h["Upgrade"]; len(up) > 0 {
		for _, v := range up {
			if !strings.EqualFold(strings.TrimSpace(v), "h2c") {
				return proxyerr.New(proxyerr.BadRequest, "protocol upgrade to "+sanitize(v)+" is not supported by the mesh proxy")
			}
		}
	}
	te := h["Te"]
	trailers := false
	for _, v := range te {
		for _, tok := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), "trailers") {
				trailers = true
			}
		}
	}
	for _, v := range h["Connection"] {
		for _, tok := range strings.Split(v, ",") {
			if tok = strings.TrimSpace(tok); tok != "" {
				h.Del(tok)
			}
		}
	}
	for _, k := range hopByHop {
		delete(h, k)
	}
	if trailers {
		h["Te"] = []string{"trailers"}
	}
	return nil
}

// sanitize makes s safe and short for a header value.
func sanitize(s string) string {
	if len(s) > runtime.MaxReasonLen {
		s = s[:runtime.MaxReasonLen]
	}
	clean := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f || c >= 0x80 {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r >= 0x80 {
			return '?'
		}
		return r
	}, s)
}
