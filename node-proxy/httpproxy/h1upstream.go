package httpproxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/trellis-mesh/trellis/node-proxy/balance"
	"github.com/trellis-mesh/trellis/node-proxy/forward"
	"github.com/trellis-mesh/trellis/node-proxy/proxyerr"
	"github.com/trellis-mesh/trellis/node-proxy/resilience"
	"github.com/trellis-mesh/trellis/node-proxy/runtime"
)

// maxRespHead bounds an upstream response head.
const maxRespHead = 1 << 20

// upConn is a connection to one pod, owned by one request at a time.
type upConn struct {
	c         net.Conn
	rd        connReader
	key       string
	resp      respHead
	deadline  time.Time
	idleSince time.Time
	reused    bool
}

// upstreamPool keeps idle upstream connections per pod address.
type upstreamPool struct {
	mu   sync.Mutex
	idle map[string][]*upConn
	max  int
	ttl  time.Duration
	done bool
}

func newUpstreamPool(max int, ttl time.Duration) *upstreamPool {
	return &upstreamPool{idle: map[string][]*upConn{}, max: max, ttl: ttl}
}

// get returns the most recently used idle connection to key, if any.
func (p *upstreamPool) get(key string) *upConn {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.idle[key]
	for len(l) > 0 {
		uc := l[len(l)-1]
		l[len(l)-1] = nil
		l = l[:len(l)-1]
		if now.Sub(uc.idleSince) < p.ttl {
			p.idle[key] = l
			uc.reused = true
			return uc
		}
		uc.c.Close()
	}
	delete(p.idle, key)
	return nil
}

func (p *upstreamPool) put(uc *upConn) {
	uc.idleSince = time.Now()
	p.mu.Lock()
	if !p.done && len(p.idle[uc.key]) < p.max {
		p.idle[uc.key] = append(p.idle[uc.key], uc)
		uc = nil
	}
	p.mu.Unlock()
	if uc != nil {
		uc.c.Close()
	}
}

// sweep closes connections idle for longer than the ttl.
func (p *upstreamPool) sweep() {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, l := range p.idle {
		keep := l[:0]
		for _, uc := range l {
			if now.Sub(uc.idleSince) >= p.ttl {
				uc.c.Close()
			} else {
				keep = append(keep, uc)
			}
		}
		clear(l[len(keep):])
		if len(keep) == 0 {
			delete(p.idle, k)
		} else {
			p.idle[k] = keep
		}
	}
}

// startJanitor sweeps periodically until the returned stop is called.
func (p *upstreamPool) startJanitor() (stop func()) {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(max(p.ttl/2, time.Second))
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				p.sweep()
			}
		}
	}()
	return func() { close(done) }
}

func (p *upstreamPool) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done = true
	for k, l := range p.idle {
		for _, uc := range l {
			uc.c.Close()
		}
		delete(p.idle, k)
	}
}

// buildRequest writes the upstream request head (and a small in-memory
// body) into hc.up: the client's fields minus the connection-specific
// ones, this hop's traceparent, and the framing the proxy sends.
func (hc *h1conn) buildRequest(x *exchange, b *body) (headLen int) {
	rq := &hc.req
	up := hc.up[:0]
	up = append(up, rq.method...)
	up = append(up, ' ')
	up = append(up, rq.target...)
	up = append(up, " HTTP/1.1\r\n"...)
	for _, f := range rq.fields {
		if f.hop {
			continue
		}
		up = append(up, f.name...)
		up = append(up, ": "...)
		up = append(up, f.value...)
		up = append(up, "\r\n"...)
	}
	up = append(up, "Traceparent: "...)
	up = x.trace.AppendTo(up)
	up = append(up, "\r\n"...)
	if rq.teTrailers {
		up = append(up, "Te: trailers\r\n"...)
	}
	if b.chunked {
		up = append(up, "Transfer-Encoding: chunked\r\n"...)
	}
	up = append(up, "\r\n"...)
	headLen = len(up)
	if len(b.data) > 0 && len(b.data) <= flushAt {
		up = append(up, b.data...)
	}
	hc.up = up
	return headLen
}

// roundTrip runs the attempts, as the net/http path's roundTrip does:
// same retry decision (resilience.Retry.Decide), per-try and overall
// timeouts, outlier reports and retry metric. It returns the upstream
// connection with the response head read.
func (hc *h1conn) roundTrip(x *exchange, route *runtime.Route, t *runtime.Target, b *body, deadline time.Time) (*upConn, error) {
	h := hc.s.h
	policy := route.Service.Retry
	policy.Budget.Deposit()
	idempotent := resilience.Idempotent(x.method)
	headLen := hc.buildRequest(x, b)
	// The destination lives in the connection: handing it to the dialer
	// (an interface) would otherwise cost an allocation per request.
	dst := &hc.dst
	*dst = forward.Destination{Scheme: t.Scheme, TLS: t.TLS, ConnectTimeout: route.Service.ConnectTimeout,
		Source: x.src.Identity, SourceKnown: x.src.Known}
	var last *balance.Endpoint
	for n := 1; ; n++ {
		e := t.Pool.Pick(time.Now().UnixNano(), last)
		x.endpoint, x.attempts = e, n
		dst.Endpoint = e
		tryDeadline, perTry := deadline, false
		if policy.PerTry > 0 {
			if d := time.Now().Add(policy.PerTry); deadline.IsZero() || d.Before(deadline) {
				tryDeadline, perTry = d, true
			}
		}
		balance.Start(e)
		uc, err := hc.attempt(dst, b, headLen, tryDeadline, idempotent)
		balance.Finish(e)
		if err != nil && proxyerr.Classify(err) == proxyerr.Timeout {
			if !deadline.IsZero() && !time.Now().Before(deadline) {
				err = context.DeadlineExceeded // the overall timeout
			} else if perTry {
				err = errPerTryTimeout
			}
		}
		now := time.Now().UnixNano()
		switch {
		case err != nil && proxyerr.Classify(err) == proxyerr.BadRequest:
			return nil, err // the client's body was at fault, not the pod
		case err != nil || isGatewayStatus(uc.resp.status):
			t.Pool.Report(e, false, now)
		default:
			t.Pool.Report(e, true, now)
		}
		retry, wait := false, time.Duration(0)
		if n < policy.Attempts {
			ctx, cancel := context.Background(), context.CancelFunc(nop)
			if !deadline.IsZero() {
				ctx, cancel = context.WithDeadline(ctx, deadline)
			}
			a := resilience.Attempt{N: n, Err: err, Replayable: b.replayable && !b.started, Idempotent: idempotent}
			if uc != nil {
				a.Resp = &http.Response{StatusCode: uc.resp.status}
			}
			retry, wait = policy.Decide(ctx, a)
			cancel()
		}
		if !retry {
			return uc, err
		}
		if uc != nil {
			uc.c.Close() // its body is not wanted
		}
		h.m.Retries.WithLabelValues(t.Service.Namespace, t.Service.Name).Inc()
		last = e
		if !deadline.IsZero() && time.Now().Add(wait).After(deadline) {
			return nil, context.DeadlineExceeded
		}
		time.Sleep(wait)
	}
}

// attempt sends the request to one pod over a pooled or new connection
// and reads the response head. A pooled connection the pod closed while
// idle is replaced once, when the request can be sent again.
func (hc *h1conn) attempt(dst *forward.Destination, b *body, headLen int, deadline time.Time, idempotent bool) (*upConn, error) {
	for try := 0; ; try++ {
		var uc *upConn
		if try == 0 {
			uc = hc.s.up.get(dst.Endpoint.HostPort)
		}
		if uc == nil {
			var err error
			if uc, err = hc.dial(dst, deadline); err != nil {
				return nil, err
			}
		}
		if !deadline.Equal(uc.deadline) {
			_ = uc.c.SetDeadline(deadline)
			uc.deadline = deadline
		}
		sent, err := hc.send(uc, b, headLen)
		if err == nil {
			err = hc.readResponseHead(uc)
		}
		if err == nil {
			return uc, nil
		}
		uc.c.Close()
		if try == 0 && uc.reused && uc.rd.w == 0 && !b.started && (idempotent || !sent) &&
			proxyerr.Classify(err) == proxyerr.Reset {
			continue
		}
		return nil, err
	}
}

func (hc *h1conn) dial(dst *forward.Destination, deadline time.Time) (*upConn, error) {
	ctx := context.Background()
	if !deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	c, err := hc.s.dialer.DialContext(ctx, "tcp", dst)
	if err != nil {
		return nil, err
	}
	return &upConn{c: c, key: dst.Endpoint.HostPort,
		rd: connReader{c: c, buf: make([]byte, readBufSize), max: maxRespHead + readBufSize}}, nil
}

// errClientBody marks a failure reading the request body from the client.
func errClientBody(err error) error {
	if errors.Is(err, errBadChunk) {
		return proxyerr.Wrap(proxyerr.BadRequest, "malformed chunked request body", err)
	}
	return proxyerr.Wrap(proxyerr.BadRequest, "request body ended early", err)
}

// send writes the request head and body. sent reports whether the whole
// request reached the socket (so an error after it may mean the pod got it).
func (hc *h1conn) send(uc *upConn, b *body, headLen int) (sent bool, err error) {
	if _, err := uc.c.Write(hc.up); err != nil {
		return false, err
	}
	if len(b.data) > flushAt {
		if _, err := uc.c.Write(b.data); err != nil {
			return false, err
		}
	}
	_ = headLen
	switch {
	case b.stream > 0:
		b.started = true
		for b.stream > 0 {
			if hc.rd.r == hc.rd.w {
				if err := hc.rd.fill(); err != nil {
					return false, errClientBody(err)
				}
			}
			n := int(min(int64(hc.rd.w-hc.rd.r), b.stream))
			if _, err := uc.c.Write(hc.rd.buf[hc.rd.r : hc.rd.r+n]); err != nil {
				return false, err
			}
			hc.rd.r += n
			b.stream -= int64(n)
		}
		b.consumed = true
	case b.chunked:
		b.started = true
		w := wbuf{c: uc.c, b: hc.up[:0]}
		hc.rd.flushFirst = &w
		_, err := relayChunked(&hc.rd, &chunkOut{w: &w}, maxTrailer)
		hc.rd.flushFirst = nil
		if err == nil {
			b.consumed = true
			err = w.flush()
		}
		hc.up = w.b[:0]
		if err != nil {
			if w.err != nil {
				return false, w.err
			}
			return false, errClientBody(err)
		}
	}
	return true, nil
}

// readResponseHead reads the response head, skipping interim (1xx)
// responses.
func (hc *h1conn) readResponseHead(uc *upConn) error {
	if uc.rd.r != uc.rd.w {
		return proxyerr.New(proxyerr.Upstream, "upstream sent bytes nobody asked for")
	}
	for {
		uc.rd.reset()
		n, err := uc.rd.readHead(maxRespHead)
		if err != nil {
			if errors.Is(err, errHeadTooBig) {
				return proxyerr.New(proxyerr.Upstream, "upstream response head too large")
			}
			if errors.Is(err, io.EOF) && uc.rd.w > 0 {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		if err := parseResponseHead(uc.rd.buf[uc.rd.r:uc.rd.r+n], &uc.resp); err != nil {
			return proxyerr.Wrap(proxyerr.Upstream, "malformed response from upstream", err)
		}
		uc.rd.r += n
		switch {
		case uc.resp.status == http.StatusSwitchingProtocols:
			return proxyerr.New(proxyerr.Upstream, "upstream switched protocols unasked")
		case uc.resp.status < 200:
			continue // 100 Continue, 103 Early Hints
		}
		uc.rd.keep = uc.rd.r
		return nil
	}
}

// relay streams the response to the client and returns the upstream
// connection to the pool when it can carry another request.
func (hc *h1conn) relay(x *exchange, uc *upConn, deadline time.Time) next {
	resp := &uc.resp
	if !deadline.Equal(uc.deadline) {
		_ = uc.c.SetDeadline(deadline) // the per-try timeout ends with the head
		uc.deadline = deadline
	}
	closing := hc.req.connClose || hc.s.noKeep.Load()
	noBody := x.method == http.MethodHead || resp.status == http.StatusNoContent || resp.status == http.StatusNotModified
	untilClose := !noBody && !resp.chunked && resp.contentLength < 0
	o := &hc.out
	o.n = 0
	o.b = appendStatusLine(o.b, resp.status, resp.reason)
	for _, f := range resp.fields {
		if f.hop {
			continue
		}
		o.b = append(o.b, f.name...)
		o.b = append(o.b, ": "...)
		o.b = append(o.b, f.value...)
		o.b = append(o.b, "\r\n"...)
	}
	if !resp.hasDate {
		o.b = append(o.b, "Date: "...)
		o.b = append(o.b, httpDate()...)
		o.b = append(o.b, "\r\n"...)
	}
	if !noBody && (resp.chunked || untilClose) {
		o.b = append(o.b, "Transfer-Encoding: chunked\r\n"...)
	}
	if closing {
		o.b = append(o.b, "Connection: close\r\n"...)
	}
	o.b = append(o.b, "\r\n"...)
	x.status, x.wrote = resp.status, true
	uc.rd.keep = 0 // the head is copied out
	reuse := !resp.connClose && !untilClose

	var err error
	uc.rd.flushFirst = o
	switch {
	case noBody:
	case resp.chunked:
		_, err = relayChunked(&uc.rd, &chunkOut{w: o}, maxTrailer)
	case resp.contentLength >= 0:
		for left := resp.contentLength; left > 0 && err == nil; {
			if uc.rd.r == uc.rd.w {
				if err = uc.rd.fill(); err != nil {
					if errors.Is(err, io.EOF) {
						err = io.ErrUnexpectedEOF
					}
					break
				}
			}
			n := int(min(int64(uc.rd.w-uc.rd.r), left))
			o.n += int64(n)
			err = o.write(uc.rd.buf[uc.rd.r : uc.rd.r+n])
			uc.rd.r += n
			left -= int64(n)
		}
	case untilClose:
		co := chunkOut{w: o}
		for err == nil {
			if uc.rd.r == uc.rd.w {
				if err = uc.rd.fill(); err != nil {
					break
				}
			}
			p := uc.rd.buf[uc.rd.r:uc.rd.w]
			if err = co.header(int64(len(p))); err == nil {
				if err = co.chunk(p); err == nil {
					err = co.endChunk()
				}
			}
			uc.rd.r = uc.rd.w
		}
		if errors.Is(err, io.EOF) {
			err = o.write([]byte("0\r\n\r\n"))
		}
	}
	uc.rd.flushFirst = nil
	if err == nil {
		err = o.flush()
	}
	x.bytesOut = o.n
	if err != nil || o.err != nil {
		uc.c.Close()
		if o.err != nil {
			x.class, x.reason = proxyerr.ClientGone, "client went away"
		} else {
			// The status is already sent: closing is the only honest
			// signal that the body is cut.
			x.class, x.reason = proxyerr.Classify(err), "response body: "+err.Error()
		}
		return closeConn
	}
	if reuse && uc.rd.r == uc.rd.w {
		uc.rd.reset()
		hc.s.up.put(uc)
	} else {
		uc.c.Close()
	}
	if closing {
		return closeConn
	}
	return keepGoing
}
