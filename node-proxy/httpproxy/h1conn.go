package httpproxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/textproto"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/trellis-mesh/trellis/node-proxy/config"
	"github.com/trellis-mesh/trellis/node-proxy/forward"
	"github.com/trellis-mesh/trellis/node-proxy/proxyerr"
	"github.com/trellis-mesh/trellis/node-proxy/runtime"
)

const (
	connIdle int32 = iota
	connActive
	connClosed
)

const (
	readBufSize  = 4 << 10
	writeBufSize = 4 << 10
	flushAt      = 32 << 10 // bytes gathered before a write to the client
	maxTrailer   = 8 << 10
)

// h1conn is one client connection on the fast path.
type h1conn struct {
	s      *FastServer
	c      net.Conn
	remote netip.Addr
	state  atomic.Int32
	rd     connReader
	out    wbuf
	req    reqHead
	x      exchange
	ew     errWriter
	up     []byte // the upstream request head being built
	dst    forward.Destination
	hdr    http.Header
	linger bool // close gracefully: the client may still be sending
	// bodyRead is set once the request body has been taken from the
	// connection (buffered or streamed), so an error answer knows whether
	// the connection can carry another request.
	bodyRead bool
}

var connPool = sync.Pool{New: func() any {
	return &h1conn{rd: connReader{buf: make([]byte, readBufSize)}, out: wbuf{b: make([]byte, 0, writeBufSize)},
		up: make([]byte, 0, 1024)}
}}

func newH1conn(s *FastServer, c net.Conn) *h1conn {
	hc := connPool.Get().(*h1conn)
	hc.s, hc.c, hc.linger = s, c, false
	hc.state.Store(connIdle)
	hc.rd.c, hc.rd.max = c, s.opts.MaxHeaderBytes+readBufSize
	hc.rd.r, hc.rd.w, hc.rd.keep = 0, 0, 0
	hc.out.c, hc.out.err = c, nil
	hc.remote = netip.Addr{}
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		hc.remote = ta.AddrPort().Addr().Unmap()
	}
	return hc
}

func (hc *h1conn) release() {
	if cap(hc.rd.buf) > readBufSize {
		hc.rd.buf = make([]byte, readBufSize)
	}
	if cap(hc.out.b) > 2*flushAt {
		hc.out.b = make([]byte, 0, writeBufSize)
	}
	hc.out.b = hc.out.b[:0]
	hc.s, hc.c, hc.rd.c, hc.out.c = nil, nil, nil, nil
	hc.x = exchange{}
	hc.dst = forward.Destination{}
	hc.ew.body = hc.ew.body[:0]
	connPool.Put(hc)
}

func (hc *h1conn) closeIfIdle() {
	if hc.state.CompareAndSwap(connIdle, connClosed) {
		hc.c.Close()
	}
}

// next says what a connection does after a request.
type next uint8

const (
	keepGoing next = iota
	closeConn
	handedOff
)

// h2PrefaceHead is the part of the HTTP/2 connection preface that looks
// like a request head.
var h2PrefaceHead = []byte("PRI * HTTP/2.0\r\n\r\n")

func (hc *h1conn) serve() {
	s := hc.s
	c := hc.c
	handed := false
	defer func() {
		switch {
		case handed:
		case hc.linger:
			lingerClose(c)
		default:
			c.Close()
		}
		s.untrack(hc)
		hc.release()
	}()
	for {
		hc.rd.reset()
		if hc.rd.w == 0 {
			_ = c.SetReadDeadline(time.Now().Add(s.opts.IdleTimeout))
			if err := hc.rd.fill(); err != nil {
				return
			}
		}
		if !hc.state.CompareAndSwap(connIdle, connActive) {
			return // closed while idle
		}
		_ = c.SetReadDeadline(time.Now().Add(s.opts.ReadHeaderTimeout))
		n, err := hc.rd.readHead(s.opts.MaxHeaderBytes)
		if err == nil && bytes.HasPrefix(hc.rd.buffered(), h2PrefaceHead) {
			// HTTP/2 with prior knowledge (gRPC) is net/http's.
			handed = hc.handoff()
			return
		}
		if err != nil {
			if errors.Is(err, errHeadTooBig) {
				hc.reject(&headError{status: http.StatusRequestHeaderFieldsTooLarge, reason: "request head larger than " + strconv.Itoa(s.opts.MaxHeaderBytes) + " bytes"}, "header_size")
			}
			return
		}
		if herr := parseRequestHead(hc.rd.buf[hc.rd.r:hc.rd.r+n], &hc.req, s.h.opts.MaxHeaderCount); herr != nil {
			reason := "framing"
			if herr.status == http.StatusRequestHeaderFieldsTooLarge {
				reason = "header_count"
			}
			hc.reject(herr, reason)
			return
		}
		if hc.req.unusual() {
			handed = hc.handoff()
			return
		}
		hc.rd.keep = hc.rd.r + n
		hc.rd.r += n
		switch hc.serveRequest() {
		case closeConn:
			return
		case handedOff:
			handed = true
			return
		}
		if s.noKeep.Load() || !hc.state.CompareAndSwap(connActive, connIdle) {
			return
		}
	}
}

// handoff passes the connection, and every byte read from it that belongs
// to the current request or later ones, to net/http.
func (hc *h1conn) handoff() bool {
	if hc.s.closing.Load() {
		return false
	}
	// Each request starts at the front of the buffer (reset moved it there).
	prefix := bytes.Clone(hc.rd.buf[:hc.rd.w])
	_ = hc.c.SetDeadline(time.Time{})
	hc.s.handoff(hc.c, prefix)
	return true
}

// lingerClose closes c after an error answer without losing it: a close
// with unread input makes the kernel reset the connection, which can
// destroy the answer before the client reads it. So: half-close, read and
// drop what the client still sends for a moment, then close.
func lingerClose(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		_, _ = io.CopyN(io.Discard, c, 256<<10)
	}
	c.Close()
}

// reject answers a malformed head and closes.
func (hc *h1conn) reject(e *headError, metric string) {
	hc.linger = true
	hc.s.m.BadRequests.WithLabelValues(metric).Inc()
	x := &hc.x
	*x = exchange{start: time.Now(), proto: "HTTP/1.1", srcAddr: hc.remote, status: e.status}
	hc.ew.reset(hc)
	hc.s.h.fail(&hc.ew, x, proxyerr.New(proxyerr.BadRequest, e.reason))
	hc.ew.send(true)
	hc.s.h.finish(x)
}

// bstr views b as a string without copying. The string is only used while
// the request is served (the buffer is reused after).
func bstr(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

func methodString(b []byte) string {
	switch string(b) {
	case "GET":
		return http.MethodGet
	case "HEAD":
		return http.MethodHead
	case "POST":
		return http.MethodPost
	case "PUT":
		return http.MethodPut
	case "DELETE":
		return http.MethodDelete
	case "PATCH":
		return http.MethodPatch
	case "OPTIONS":
		return http.MethodOptions
	}
	return string(b)
}

// requestPath returns the decoded path of an origin-form target, as
// net/http's URL.Path would be.
func requestPath(target []byte) (string, error) {
	p := target
	if i := bytes.IndexByte(p, '?'); i >= 0 {
		p = p[:i]
	}
	if bytes.IndexByte(p, '%') < 0 {
		return bstr(p), nil
	}
	u, err := url.ParseRequestURI(string(target))
	if err != nil {
		return "", err
	}
	return u.Path, nil
}

// header builds the request's header map, for matches that look at
// headers (rare: most rules match paths and methods only).
func (hc *h1conn) header() http.Header {
	if hc.hdr == nil {
		hc.hdr = make(http.Header, len(hc.req.fields))
	} else {
		clear(hc.hdr)
	}
	for _, f := range hc.req.fields {
		k := textproto.CanonicalMIMEHeaderKey(string(f.name))
		hc.hdr[k] = append(hc.hdr[k], string(f.value))
	}
	return hc.hdr
}

// h1Only reports whether every target of route speaks plain HTTP/1.1
// upstream, which the fast path forwards itself.
func h1Only(route *runtime.Route) bool {
	if route.Own != nil && route.Own.Scheme != config.SchemeHTTP {
		return false
	}
	if route.Split != nil {
		for _, t := range route.Split.Choices() {
			if t.Scheme != config.SchemeHTTP {
				return false
			}
		}
	}
	return true
}

// body is how the request body reaches the upstream.
type body struct {
	data       []byte // the whole body in memory (replayable), or nil
	stream     int64  // bytes still to stream from the client (Content-Length)
	chunked    bool   // stream a chunked body from the client
	started    bool   // streaming began: the body cannot be sent again
	consumed   bool   // a streamed body was read to its end
	replayable bool   // for the retry decision (as in the net/http path)
}

func (hc *h1conn) serveRequest() (nx next) {
	h := hc.s.h
	rq := &hc.req
	x := &hc.x
	*x = exchange{start: time.Now(), proto: "HTTP/1.1", method: methodString(rq.method), host: bstr(rq.host), srcAddr: hc.remote}
	hc.bodyRead = false
	skipFinish := false
	defer func() {
		if v := recover(); v != nil {
			h.m.Panics.Inc()
			h.logPanic(v, x.host)
			x.class, x.reason = proxyerr.Internal, "internal error"
			if !x.wrote {
				hc.ew.reset(hc)
				h.fail(&hc.ew, x, proxyerr.New(proxyerr.Internal, "internal error"))
				hc.ew.send(true)
			}
			nx, skipFinish = closeConn, false
		}
		if !skipFinish {
			h.finish(x)
		}
	}()
	h.startTrace(x, bstr(rq.traceparent))
	rt := h.rt.Load()
	if rt == nil {
		return hc.failReq(x, errNoConfig)
	}
	x.src = rt.Source(hc.remote)
	path, err := requestPath(rq.target)
	if err != nil {
		h.m.BadRequests.WithLabelValues("target").Inc()
		return hc.failReq(x, proxyerr.New(proxyerr.BadRequest, "malformed request target: "+err.Error()))
	}
	x.path = path
	route, err := h.lookup(rt, x, x.host, path)
	if err != nil {
		return hc.failReq(x, err)
	}
	if !h1Only(route) || route.HasPlugins() {
		// h2c and https upstreams go through net/http's transport, and
		// plugins run on net/http's request and ResponseWriter.
		if hc.handoff() {
			skipFinish = true
			return handedOff
		}
		return closeConn
	}
	var hdr http.Header
	if route.NeedsHeaders {
		hdr = hc.header()
	}
	if err := h.authorize(x, route, x.method, path, hdr); err != nil {
		return hc.failReq(x, err)
	}
	t, err := h.pick(x, route, x.method, path, hdr)
	if err != nil {
		return hc.failReq(x, err)
	}
	var b body
	policy := route.Service.Retry
	switch {
	case rq.chunked:
		b.chunked = true
	case rq.contentLength <= 0:
		b.replayable = true
	case rq.contentLength <= int64(hc.rd.w-hc.rd.r):
		b.data = hc.rd.buf[hc.rd.r : hc.rd.r+int(rq.contentLength)]
		hc.rd.r += int(rq.contentLength)
		hc.bodyRead = true
		b.replayable = policy.Attempts > 1 && rq.contentLength <= policy.MaxBodyBytes
	case policy.Attempts > 1 && rq.contentLength <= policy.MaxBodyBytes:
		data := make([]byte, rq.contentLength)
		err := hc.readBody(data)
		hc.bodyRead = err == nil
		if err != nil {
			hc.req.connClose = true
			return hc.failReq(x, proxyerr.Wrap(proxyerr.BadRequest, "request body ended early", err))
		}
		b.data, b.replayable = data, true
	default:
		b.stream = rq.contentLength
	}
	if b.chunked || b.stream > 0 {
		_ = hc.c.SetReadDeadline(time.Now().Add(hc.s.opts.IdleTimeout))
	}
	var deadline time.Time
	if to := route.Service.Timeout; to > 0 {
		deadline = x.start.Add(to)
	}
	uc, err := hc.roundTrip(x, route, t, &b, deadline)
	if b.consumed {
		hc.bodyRead = true
	}
	if err != nil {
		if proxyerr.Classify(err) == proxyerr.BadRequest {
			hc.req.connClose = true // the body's framing cannot be trusted
		}
		return hc.failReq(x, err)
	}
	return hc.relay(x, uc, deadline)
}

// readBody fills p from the client (buffered bytes first).
func (hc *h1conn) readBody(p []byte) error {
	n := copy(p, hc.rd.buffered())
	hc.rd.r += n
	if n < len(p) {
		_ = hc.c.SetReadDeadline(time.Now().Add(hc.s.opts.IdleTimeout))
		_, err := io.ReadFull(hc.c, p[n:])
		return err
	}
	return nil
}

// failReq answers with the proxy's error for err. The connection stays
// open only when the request had no body left unread.
func (hc *h1conn) failReq(x *exchange, err error) next {
	hc.ew.reset(hc)
	hc.s.h.fail(&hc.ew, x, err)
	if x.class == proxyerr.ClientGone {
		return closeConn
	}
	closing := hc.req.connClose || hc.s.noKeep.Load() || hc.ew.hdr.Get("Connection") == "close"
	if rq := &hc.req; (rq.chunked || rq.contentLength > 0) && !hc.bodyRead {
		// Skip a body still in the buffer; otherwise the connection
		// cannot carry another request.
		if !rq.chunked && rq.contentLength <= int64(hc.rd.w-hc.rd.r) {
			hc.rd.r += int(rq.contentLength)
			hc.bodyRead = true
		} else {
			closing = true
		}
	}
	if !hc.ew.send(closing) {
		return closeConn
	}
	if closing {
		hc.linger = true
		return closeConn
	}
	return keepGoing
}

// errWriter is the http.ResponseWriter the shared fail() writes proxy-made
// answers to; send puts them on the wire.
type errWriter struct {
	hc     *h1conn
	hdr    http.Header
	status int
	body   []byte
}

var _ http.ResponseWriter = (*errWriter)(nil)

func (w *errWriter) reset(hc *h1conn) {
	w.hc, w.status, w.body = hc, 0, w.body[:0]
	if w.hdr == nil {
		w.hdr = http.Header{}
	}
	clear(w.hdr)
}

func (w *errWriter) Header() http.Header { return w.hdr }

func (w *errWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}

func (w *errWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	w.body = append(w.body, p...)
	return len(p), nil
}

// send writes the answer; false if the client is gone.
func (w *errWriter) send(closing bool) bool {
	hc := w.hc
	if w.status == 0 {
		return true // nothing to say (client gone)
	}
	o := &hc.out
	o.b = appendStatusLine(o.b, w.status, nil)
	for k, vv := range w.hdr {
		if k == "Connection" {
			continue
		}
		for _, v := range vv {
			o.b = appendField(o.b, k, v)
		}
	}
	o.b = append(o.b, "Date: "...)
	o.b = append(o.b, httpDate()...)
	o.b = append(o.b, "\r\nContent-Length: "...)
	o.b = strconv.AppendInt(o.b, int64(len(w.body)), 10)
	o.b = append(o.b, "\r\n"...)
	if closing {
		o.b = append(o.b, "Connection: close\r\n"...)
	}
	o.b = append(o.b, "\r\n"...)
	if hc.x.method != http.MethodHead {
		o.b = append(o.b, w.body...)
	}
	return o.flush() == nil
}

func appendStatusLine(b []byte, code int, reason []byte) []byte {
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, ' ')
	if len(reason) > 0 {
		return append(append(b, reason...), "\r\n"...)
	}
	return append(append(b, http.StatusText(code)...), "\r\n"...)
}

func appendField(b []byte, k, v string) []byte {
	b = append(b, k...)
	b = append(b, ": "...)
	b = append(b, v...)
	return append(b, "\r\n"...)
}

// httpDate is the current time as an HTTP date, formatted once a second.
func httpDate() []byte {
	now := time.Now()
	sec := now.Unix()
	if d := dateCache.Load(); d != nil && d.sec == sec {
		return d.b
	}
	d := &cachedDate{sec: sec, b: now.UTC().AppendFormat(nil, http.TimeFormat)}
	dateCache.Store(d)
	return d.b
}

type cachedDate struct {
	sec int64
	b   []byte
}

var dateCache atomic.Pointer[cachedDate]

// wbuf gathers bytes for a connection and writes them in few syscalls.
type wbuf struct {
	c   net.Conn
	b   []byte
	n   int64 // body bytes written, for telemetry
	err error
}

func (w *wbuf) write(p []byte) error {
	if w.err != nil {
		return w.err
	}
	if len(w.b)+len(p) <= flushAt {
		w.b = append(w.b, p...)
		return nil
	}
	if err := w.flush(); err != nil {
		return err
	}
	if len(p) >= flushAt {
		_, w.err = w.c.Write(p)
		return w.err
	}
	w.b = append(w.b, p...)
	return nil
}

func (w *wbuf) flush() error {
	if w.err != nil {
		return w.err
	}
	if len(w.b) > 0 {
		_, w.err = w.c.Write(w.b)
		w.b = w.b[:0]
	}
	return w.err
}

// chunked re-encoding onto a wbuf (chunkWriter).
type chunkOut struct {
	w   *wbuf
	hex [20]byte
}

func (c *chunkOut) header(size int64) error {
	b := strconv.AppendInt(c.hex[:0], size, 16)
	b = append(b, '\r', '\n')
	return c.w.write(b)
}
func (c *chunkOut) chunk(p []byte) error { c.w.n += int64(len(p)); return c.w.write(p) }
func (c *chunkOut) endChunk() error      { return c.w.write(crlf) }
func (c *chunkOut) trailer(name, value []byte) error {
	if err := c.w.write(name); err != nil {
		return err
	}
	if err := c.w.write(colonSP); err != nil {
		return err
	}
	if err := c.w.write(value); err != nil {
		return err
	}
	return c.w.write(crlf)
}
func (c *chunkOut) end() error { return c.w.write(crlf) }

var (
	crlf    = []byte("\r\n")
	colonSP = []byte(": ")
)

var _ chunkWriter = (*chunkOut)(nil)
