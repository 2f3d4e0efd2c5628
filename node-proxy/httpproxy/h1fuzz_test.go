package httpproxy

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"testing"
)

// FuzzParseRequestHead: the fast path's request parser never panics, and
// whatever it accepts net/http reads the same way (method, target, Host
// and body framing), so the proxy and a net/http upstream can never
// disagree about where a request ends. What it forwards (the fields that
// are not connection-specific) parses back to the same fields.
func FuzzParseRequestHead(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a.shop.mesh\r\n\r\n",
		"POST /x?y=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\nTE: trailers\r\n\r\n",
		"GET / HTTP/1.0\r\n\r\n",
		"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
		"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 01\r\n\r\nx",
		"GET / HTTP/1.1\nHost: a\n\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		end := bytes.Index(data, crlfcrlf)
		if end < 0 {
			return
		}
		head := data[:end+4]
		var h reqHead
		if herr := parseRequestHead(head, &h, 100); herr != nil {
			if herr.status != 400 && herr.status != 431 && herr.status != 501 && herr.status != 505 {
				t.Fatalf("status %d for %q", herr.status, head)
			}
			return
		}
		if h.length != len(head) {
			t.Fatalf("length %d, head is %d bytes", h.length, len(head))
		}
		if h.chunked && h.contentLength >= 0 {
			t.Fatal("accepted both Content-Length and chunked")
		}
		if h.minor == 1 && len(h.host) == 0 && !bytes.Contains(bytes.ToLower(head), []byte("\r\nhost:")) {
			t.Fatal("accepted an HTTP/1.1 request without Host")
		}
		for _, fl := range h.fields {
			if !isToken(fl.name) || bytes.ContainsAny(fl.value, "\r\n\x00") {
				t.Fatalf("accepted field %q: %q", fl.name, fl.value)
			}
		}
		// net/http must read the same request (the empty lines a client may
		// send before one are not forwarded).
		for len(data) >= 2 && data[0] == '\r' && data[1] == '\n' {
			data = data[2:]
		}
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(data)))
		if err != nil {
			if h.unusual() {
				return // handed to net/http, which refuses it itself
			}
			t.Fatalf("fast path accepted what net/http refuses (%v): %q", err, head)
		}
		if req.Method != string(h.method) || req.RequestURI != string(h.target) {
			t.Fatalf("disagree on request line: %s %s vs %s %s", req.Method, req.RequestURI, h.method, h.target)
		}
		if h.minor == 1 && req.Host != string(h.host) && !h.unusual() {
			t.Fatalf("disagree on Host: %q vs %q", req.Host, h.host)
		}
		switch {
		case h.chunked:
			if len(req.TransferEncoding) != 1 || req.TransferEncoding[0] != "chunked" {
				t.Fatalf("net/http framing %v, fast path chunked", req.TransferEncoding)
			}
		case h.contentLength > 0:
			if req.ContentLength != h.contentLength {
				t.Fatalf("Content-Length %d vs net/http %d", h.contentLength, req.ContentLength)
			}
		default:
			if req.ContentLength > 0 || len(req.TransferEncoding) > 0 {
				t.Fatalf("net/http sees a body (%d %v), fast path none", req.ContentLength, req.TransferEncoding)
			}
		}
		// What is forwarded parses back to the same fields.
		var fwd bytes.Buffer
		fwd.WriteString("GET / HTTP/1.1\r\n")
		var want []hfield
		for _, fl := range h.fields {
			if !fl.hop {
				fwd.Write(fl.name)
				fwd.WriteString(": ")
				fwd.Write(fl.value)
				fwd.WriteString("\r\n")
				want = append(want, fl)
			}
		}
		hasHost := false
		for _, fl := range want {
			hasHost = hasHost || eqFold(fl.name, "host")
		}
		if !hasHost {
			fwd.WriteString("Host: x\r\n")
		}
		fwd.WriteString("\r\n")
		var h2 reqHead
		if herr := parseRequestHead(fwd.Bytes(), &h2, 1000); herr != nil {
			t.Fatalf("forwarded head refused: %v\n%q", herr, fwd.Bytes())
		}
		for i, fl := range want {
			if !bytes.Equal(fl.name, h2.fields[i].name) || !bytes.Equal(fl.value, h2.fields[i].value) {
				t.Fatalf("field %d changed: %q: %q", i, h2.fields[i].name, h2.fields[i].value)
			}
			if eqFold(fl.name, "connection") || eqFold(fl.name, "transfer-encoding") || eqFold(fl.name, "upgrade") {
				t.Fatalf("connection-specific field %q forwarded", fl.name)
			}
		}
	})
}

// FuzzChunkedRelay: a chunked body the fast path accepts decodes, with
// net/http's chunked reader, to the same bytes before and after the relay,
// and the relayed encoding is canonical.
func FuzzChunkedRelay(f *testing.F) {
	for _, s := range []string{
		"5\r\nhello\r\n0\r\n\r\n",
		"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: v\r\n\r\n",
		"0\r\n\r\n",
		"A\r\n0123456789\r\n0\r\n\r\n",
		"5\r\nhelloXX0\r\n\r\n",
		"fffffffffffffffff\r\n",
		"-1\r\nx\r\n0\r\n\r\n",
		"5 \r\nhello\r\n0\r\n\r\n",
		"5\nhello\n0\n\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		in := bytes.NewReader(data)
		var out bytes.Buffer
		// A tiny buffer, so lines and chunks straddle reads.
		src := &connReader{c: fakeConn{r: in}, buf: make([]byte, 16), max: 1 << 20}
		w := &wbuf{c: fakeConn{w: &out}}
		n, err := relayChunked(src, &chunkOut{w: w}, maxTrailer)
		if err != nil {
			return
		}
		if err := w.flush(); err != nil {
			t.Fatal(err)
		}
		consumed := data[:len(data)-in.Len()-len(src.buffered())]
		want, werr := io.ReadAll(httputil.NewChunkedReader(bytes.NewReader(consumed)))
		if werr != nil {
			// net/http's reader is stricter about chunk extensions; what the
			// proxy accepts it re-encodes canonically anyway.
			if !bytes.Contains(consumed, []byte(";")) {
				t.Fatalf("accepted a body net/http refuses (%v): %q", werr, consumed)
			}
		} else if int64(len(want)) != n {
			t.Fatalf("relayed %d data bytes, net/http reads %d", n, len(want))
		}
		got, gerr := io.ReadAll(httputil.NewChunkedReader(bytes.NewReader(out.Bytes())))
		if gerr != nil || int64(len(got)) != n {
			t.Fatalf("relayed encoding does not decode (%v, %d of %d bytes): %q", gerr, len(got), n, out.Bytes())
		}
		if werr == nil && !bytes.Equal(got, want) {
			t.Fatalf("data changed in the relay")
		}
		// Chunk-size lines go out bare: hex digits only.
		rest := out.Bytes()
		for {
			line, after, ok := bytes.Cut(rest, crlf)
			if !ok {
				t.Fatalf("relayed body does not end in CRLF: %q", out.Bytes())
			}
			size, perr := strconv.ParseInt(string(line), 16, 64)
			if perr != nil {
				t.Fatalf("chunk-size line %q relayed", line)
			}
			if size == 0 {
				break
			}
			rest = after[size+2:]
		}
	})
}

// fakeConn is a net.Conn over a reader or a writer.
type fakeConn struct {
	net.Conn
	r io.Reader
	w io.Writer
}

func (c fakeConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c fakeConn) Write(p []byte) (int, error) { return c.w.Write(p) }
