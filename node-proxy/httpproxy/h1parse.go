package httpproxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strconv"
)

// This file is the HTTP/1.1 fast path's wire format: a strict parser for
// request and response heads (RFC 9112) over a connection buffer, and a
// validating chunked-body relay. Every slice a parser returns points into
// the buffer and is valid until the buffer is compacted, i.e. for the
// current request.

// headError is a malformed or refused request head: the status to answer
// with (400, 431, 501, 505) and why. The connection is closed after it.
type headError struct {
	status int
	reason string
}

func (e *headError) Error() string { return e.reason }

func badHead(reason string) *headError { return &headError{status: 400, reason: reason} }

// hfield is one header field as received.
type hfield struct {
	name, value []byte
	hop         bool // connection-specific: not forwarded
}

// reqHead is a parsed request head.
type reqHead struct {
	method, target []byte
	minor          int // HTTP/1.<minor>
	host           []byte
	contentLength  int64 // -1 when absent
	chunked        bool
	connClose      bool
	expect         bool
	upgrade        bool
	teTrailers     bool
	traceparent    []byte
	fields         []hfield
	length         int // bytes of the head, final CRLF included
}

// unusual reports whether the request needs net/http: anything but an
// HTTP/1.1 request in origin form without Expect or Upgrade.
func (h *reqHead) unusual() bool {
	return h.minor != 1 || h.expect || h.upgrade || len(h.target) == 0 || h.target[0] != '/' ||
		string(h.method) == "CONNECT"
}

var (
	tokenChars [256]bool // RFC 9110 tchar
	hostChars  [256]bool // what a Host value may hold (reg-name, IP literal, port)
)

func init() {
	for c := '0'; c <= '9'; c++ {
		tokenChars[c], hostChars[c] = true, true
	}
	for c := 'a'; c <= 'z'; c++ {
		tokenChars[c], hostChars[c] = true, true
		tokenChars[c-32], hostChars[c-32] = true, true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		tokenChars[c] = true
	}
	for _, c := range "-._~!$&'()*+,;=:[]%" {
		hostChars[c] = true
	}
}

func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !tokenChars[c] {
			return false
		}
	}
	return true
}

// validValue reports whether b is a field value: visible characters,
// spaces, tabs and obs-text, no other control characters.
func validValue(b []byte) bool {
	for _, c := range b {
		if c < 0x20 && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// eqFold compares an ASCII byte slice with a lower-case string.
func eqFold(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// nextLine splits b at the first CRLF. A bare CR or LF is refused: the
// proxy re-frames what it forwards, but a peer that disagrees about line
// ends is how requests get smuggled.
func nextLine(b []byte) (line, rest []byte, ok bool) {
	i := bytes.IndexByte(b, '\n')
	if i < 1 || b[i-1] != '\r' {
		return nil, nil, false
	}
	line = b[:i-1]
	if bytes.IndexByte(line, '\r') >= 0 {
		return nil, nil, false
	}
	return line, b[i+1:], true
}

// parseDecimal parses a Content-Length value: digits only.
func parseDecimal(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// forEachToken calls f with each non-empty element of a comma list.
func forEachToken(v []byte, f func([]byte)) {
	for len(v) > 0 {
		i := bytes.IndexByte(v, ',')
		var tok []byte
		if i < 0 {
			tok, v = v, nil
		} else {
			tok, v = v[:i], v[i+1:]
		}
		if tok = trimOWS(tok); len(tok) > 0 {
			f(tok)
		}
	}
}

// parseRequestHead parses a complete head (it ends with CRLF CRLF). fields
// is reused. maxFields bounds the number of header fields.
func parseRequestHead(b []byte, h *reqHead, maxFields int) *headError {
	*h = reqHead{fields: h.fields[:0], contentLength: -1}
	start := len(b)
	// A client may send empty lines before a request (RFC 9112 2.2).
	for i := 0; i < 4 && len(b) >= 2 && b[0] == '\r' && b[1] == '\n'; i++ {
		b = b[2:]
	}
	line, rest, ok := nextLine(b)
	if !ok {
		return badHead("malformed request line (lines must end with CRLF)")
	}
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 <= 0 {
		return badHead("malformed request line")
	}
	h.method = line[:sp1]
	line = line[sp1+1:]
	sp2 := bytes.IndexByte(line, ' ')
	if sp2 <= 0 {
		return badHead("malformed request line")
	}
	h.target = line[:sp2]
	version := line[sp2+1:]
	if !isToken(h.method) {
		return badHead("malformed request method")
	}
	for _, c := range h.target {
		if c <= 0x20 || c >= 0x7f {
			return badHead("request target has a space, control or non-ASCII character; percent-encode it")
		}
	}
	switch string(version) {
	case "HTTP/1.1":
		h.minor = 1
	case "HTTP/1.0":
		h.minor = 0
	default:
		if len(version) == 8 && string(version[:5]) == "HTTP/" && version[6] == '.' {
			return &headError{status: 505, reason: "HTTP version " + sanitize(string(version)) + " is not supported"}
		}
		return badHead("malformed HTTP version")
	}
	hosts, cls, tes := 0, 0, 0
	for {
		line, rest, ok = nextLine(rest)
		if !ok {
			return badHead("malformed header line (lines must end with CRLF)")
		}
		if len(line) == 0 {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			return badHead("obsolete line folding in a header field is not allowed")
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !isToken(line[:colon]) {
			return badHead("malformed header field name")
		}
		name, value := line[:colon], trimOWS(line[colon+1:])
		if !validValue(value) {
			return badHead("header field " + sanitize(string(name)) + " has a control character")
		}
		if len(h.fields) >= maxFields {
			return &headError{status: 431, reason: "more than " + strconv.Itoa(maxFields) + " header fields"}
		}
		f := hfield{name: name, value: value}
		switch len(name) {
		case 2:
			if eqFold(name, "te") {
				f.hop = true
				forEachToken(value, func(t []byte) {
					if eqFold(t, "trailers") {
						h.teTrailers = true
					}
				})
			}
		case 4:
			if eqFold(name, "host") {
				hosts++
				h.host = value
			}
		case 6:
			if eqFold(name, "expect") {
				h.expect = true
			}
		case 7:
			if eqFold(name, "upgrade") {
				h.upgrade, f.hop = true, true
			} else if eqFold(name, "trailer") {
				f.hop = true
			}
		case 10:
			if eqFold(name, "connection") {
				f.hop = true
				forEachToken(value, func(t []byte) {
					if eqFold(t, "close") {
						h.connClose = true
					}
				})
			} else if eqFold(name, "keep-alive") {
				f.hop = true
			}
		case 11:
			if eqFold(name, "traceparent") {
				f.hop = true // replaced by the proxy's own span
				h.traceparent = value
			}
		case 14:
			if eqFold(name, "content-length") {
				cls++
				n, ok := parseDecimal(value)
				if !ok {
					return badHead("malformed Content-Length")
				}
				h.contentLength = n
			}
		case 16:
			if eqFold(name, "proxy-connection") {
				f.hop = true
			}
		case 17:
			if eqFold(name, "transfer-encoding") {
				tes++
				f.hop = true
				if !eqFold(value, "chunked") {
					return &headError{status: 501, reason: "transfer coding " + sanitize(string(value)) + " is not supported; only chunked is"}
				}
				h.chunked = true
			}
		case 19:
			if eqFold(name, "proxy-authorization") {
				f.hop = true
			}
		}
		h.fields = append(h.fields, f)
	}
	h.length = start - len(rest)
	switch {
	case cls > 1:
		return badHead("more than one Content-Length field")
	case tes > 1:
		return badHead("more than one Transfer-Encoding field")
	case cls > 0 && tes > 0:
		return badHead("both Content-Length and Transfer-Encoding; the message framing is ambiguous")
	case tes > 0 && h.minor == 0:
		return badHead("Transfer-Encoding in an HTTP/1.0 request")
	case hosts > 1:
		return badHead("more than one Host field")
	case hosts == 0 && h.minor == 1:
		return badHead("missing Host field")
	}
	for _, c := range h.host {
		if !hostChars[c] {
			return badHead("malformed Host field")
		}
	}
	// Fields named in Connection are connection-specific too.
	for i := range h.fields {
		if !eqFold(h.fields[i].name, "connection") {
			continue
		}
		forEachToken(h.fields[i].value, func(t []byte) {
			for k := range h.fields {
				if !h.fields[k].hop && bytes.EqualFold(h.fields[k].name, t) {
					h.fields[k].hop = true
				}
			}
		})
	}
	return nil
}

// respHead is a parsed response head.
type respHead struct {
	status        int
	reason        []byte
	minor         int
	contentLength int64
	chunked       bool
	connClose     bool
	hasDate       bool
	fields        []hfield
	length        int
}

var errMalformedResponse = errors.New("malformed response head from upstream")

// parseResponseHead parses a complete response head. Unlike requests, the
// upstream may repeat an identical Content-Length; conflicting framing is
// an upstream failure.
func parseResponseHead(b []byte, h *respHead) error {
	*h = respHead{fields: h.fields[:0], contentLength: -1}
	start := len(b)
	line, rest, ok := nextLine(b)
	if !ok || len(line) < 12 || string(line[:7]) != "HTTP/1." || line[8] != ' ' {
		return errMalformedResponse
	}
	switch line[7] {
	case '0':
		h.minor = 0
	case '1':
		h.minor = 1
	default:
		return errMalformedResponse
	}
	code := line[9:12]
	for _, c := range code {
		if c < '0' || c > '9' {
			return errMalformedResponse
		}
	}
	h.status = int(code[0]-'0')*100 + int(code[1]-'0')*10 + int(code[2]-'0')
	if h.status < 100 {
		return errMalformedResponse
	}
	if len(line) > 12 {
		if line[12] != ' ' {
			return errMalformedResponse
		}
		h.reason = line[13:]
		if !validValue(h.reason) {
			return errMalformedResponse
		}
	}
	tes := 0
	for {
		line, rest, ok = nextLine(rest)
		if !ok {
			return errMalformedResponse
		}
		if len(line) == 0 {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			return errMalformedResponse
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !isToken(line[:colon]) {
			return errMalformedResponse
		}
		name, value := line[:colon], trimOWS(line[colon+1:])
		if !validValue(value) {
			return errMalformedResponse
		}
		f := hfield{name: name, value: value}
		switch {
		case eqFold(name, "content-length"):
			n, ok := parseDecimal(value)
			if !ok || (h.contentLength >= 0 && h.contentLength != n) {
				return errMalformedResponse
			}
			h.contentLength = n
		case eqFold(name, "transfer-encoding"):
			tes++
			f.hop = true
			if !eqFold(value, "chunked") || tes > 1 {
				return errMalformedResponse
			}
			h.chunked = true
		case eqFold(name, "connection"):
			f.hop = true
			forEachToken(value, func(t []byte) {
				if eqFold(t, "close") {
					h.connClose = true
				}
			})
		case eqFold(name, "keep-alive"), eqFold(name, "proxy-connection"), eqFold(name, "upgrade"),
			eqFold(name, "te"), eqFold(name, "proxy-authenticate"):
			f.hop = true
		case eqFold(name, "date"):
			h.hasDate = true
		}
		h.fields = append(h.fields, f)
	}
	if h.chunked && h.contentLength >= 0 {
		return errMalformedResponse
	}
	for i := range h.fields {
		if !eqFold(h.fields[i].name, "connection") {
			continue
		}
		forEachToken(h.fields[i].value, func(t []byte) {
			for k := range h.fields {
				if !h.fields[k].hop && bytes.EqualFold(h.fields[k].name, t) {
					if eqFold(h.fields[k].name, "date") {
						h.hasDate = false
					}
					h.fields[k].hop = true
				}
			}
		})
	}
	if h.minor == 0 {
		h.connClose = true // HTTP/1.0 upstreams: no keep-alive
	}
	h.length = start - len(rest)
	return nil
}

// connReader buffers one side of a connection. The first keep bytes of buf
// hold the current message head and never move while it is in use; body
// bytes are read behind it.
type connReader struct {
	c    net.Conn
	buf  []byte
	r, w int
	keep int
	max  int // the buffer never grows beyond this
	// flushFirst, when set, is flushed before the reader waits for the
	// peer, so relayed bytes never sit in a buffer while the proxy blocks.
	flushFirst *wbuf
}

var errBufferFull = errors.New("buffer full")

func (b *connReader) buffered() []byte { return b.buf[b.r:b.w] }

// fill reads at least one more byte, making room first.
func (b *connReader) fill() error {
	if b.w == len(b.buf) {
		if b.r > b.keep {
			n := copy(b.buf[b.keep:], b.buf[b.r:b.w])
			b.r, b.w = b.keep, b.keep+n
		}
		if b.w == len(b.buf) {
			if len(b.buf) >= b.max {
				return errBufferFull
			}
			nb := make([]byte, min(2*len(b.buf), b.max))
			copy(nb, b.buf[:b.w])
			b.buf = nb
		}
	}
	if f := b.flushFirst; f != nil && len(f.b) > 0 {
		if err := f.flush(); err != nil {
			return err
		}
	}
	n, err := b.c.Read(b.buf[b.w:])
	b.w += n
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// reset moves unread bytes to the front, ending the current message.
func (b *connReader) reset() {
	b.keep = 0
	if b.r == b.w {
		b.r, b.w = 0, 0
		return
	}
	if b.r > 0 {
		n := copy(b.buf, b.buf[b.r:b.w])
		b.r, b.w = 0, n
	}
}

// readHead reads until the buffer holds a complete head (CRLF CRLF) and
// returns its length. tooBig is returned when max bytes do not hold one.
func (b *connReader) readHead(limit int) (int, error) {
	searched := 0
	for {
		data := b.buf[b.r:b.w]
		from := max(searched-3, 0)
		if i := bytes.Index(data[from:], crlfcrlf); i >= 0 {
			return from + i + 4, nil
		}
		searched = len(data)
		if len(data) >= limit {
			return 0, errHeadTooBig
		}
		if err := b.fill(); err != nil {
			if errors.Is(err, errBufferFull) {
				return 0, errHeadTooBig
			}
			return 0, err
		}
	}
}

var (
	crlfcrlf      = []byte("\r\n\r\n")
	errHeadTooBig = errors.New("head too big")
)

// line returns the next CRLF-terminated line (without CRLF), consuming it,
// reading more as needed. A line longer than limit is an error.
func (b *connReader) line(limit int) ([]byte, error) {
	for {
		data := b.buf[b.r:b.w]
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			if i == 0 || data[i-1] != '\r' || i-1 > limit {
				return nil, errBadChunk
			}
			b.r += i + 1
			l := data[:i-1]
			if bytes.IndexByte(l, '\r') >= 0 {
				return nil, errBadChunk
			}
			return l, nil
		}
		if len(data) > limit+1 {
			return nil, errBadChunk
		}
		if err := b.fill(); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}

var errBadChunk = errors.New("malformed chunked body")

// parseChunkSize parses a chunk-size line: hex digits, then optionally
// extensions, which are checked and dropped.
func parseChunkSize(l []byte) (int64, error) {
	var n int64
	i := 0
	for ; i < len(l); i++ {
		c := l[i]
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			goto ext
		}
		if i >= 15 {
			return 0, errBadChunk
		}
		n = n<<4 | int64(d)
	}
ext:
	if i == 0 {
		return 0, errBadChunk
	}
	rest := l[i:]
	if len(rest) > 0 {
		// chunk-ext: *( BWS ";" BWS name [ BWS "=" BWS value ] )
		rest = trimOWS(rest)
		if len(rest) == 0 || rest[0] != ';' || !validValue(rest) {
			return 0, errBadChunk
		}
	}
	return n, nil
}

// chunkWriter receives a relayed chunked body: header(size) before each
// chunk's data (0 for the last chunk), chunk with the data (in pieces),
// endChunk after it, trailer for each trailer field, end at the end.
type chunkWriter interface {
	header(size int64) error
	chunk(p []byte) error
	endChunk() error
	trailer(name, value []byte) error
	end() error
}

// relayChunked reads a chunked body from src and hands it to dst with
// canonical chunk headers, validating sizes, CRLFs and trailers. It returns
// the number of data bytes.
func relayChunked(src *connReader, dst chunkWriter, maxTrailer int) (int64, error) {
	var total int64
	for {
		l, err := src.line(4096)
		if err != nil {
			return total, err
		}
		size, err := parseChunkSize(l)
		if err != nil {
			return total, err
		}
		if err := dst.header(size); err != nil {
			return total, err
		}
		if size == 0 {
			break
		}
		for size > 0 {
			if src.r == src.w {
				if err := src.fill(); err != nil {
					if errors.Is(err, io.EOF) {
						err = io.ErrUnexpectedEOF
					}
					return total, err
				}
			}
			n := int(min(int64(src.w-src.r), size))
			if err := dst.chunk(src.buf[src.r : src.r+n]); err != nil {
				return total, err
			}
			src.r += n
			size -= int64(n)
			total += int64(n)
		}
		l, err = src.line(0)
		if err != nil || len(l) != 0 {
			return total, errBadChunk
		}
		if err := dst.endChunk(); err != nil {
			return total, err
		}
	}
	seen := 0
	for {
		l, err := src.line(maxTrailer)
		if err != nil {
			return total, err
		}
		if len(l) == 0 {
			break
		}
		seen += len(l)
		if seen > maxTrailer || l[0] == ' ' || l[0] == '\t' {
			return total, errBadChunk
		}
		colon := bytes.IndexByte(l, ':')
		if colon <= 0 || !isToken(l[:colon]) || !validValue(l[colon+1:]) {
			return total, errBadChunk
		}
		if err := dst.trailer(l[:colon], trimOWS(l[colon+1:])); err != nil {
			return total, err
		}
	}
	return total, dst.end()
}
