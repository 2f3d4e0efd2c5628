package json2xml

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
)

// Config is the plugin's configuration.
type Config struct {
	// Root names the document element. Default "response".
	Root string `json:"root,omitempty"`
	// Item names the elements of array items. Default "item".
	Item string `json:"item,omitempty"`
	// Accept lists the media types that, in the request's Accept header,
	// ask for XML. Empty: transform every JSON response. Default
	// application/xml and text/xml.
	Accept []string `json:"accept"`
	// MaxBytes bounds the JSON body held for transformation; a larger one
	// passes through as JSON. Default 1 MiB.
	MaxBytes int `json:"maxBytes,omitempty"`
}

// CreateConfig returns the default configuration.
func CreateConfig() *Config {
	return &Config{Root: "response", Item: "item", Accept: []string{"application/xml", "text/xml"}, MaxBytes: 1 << 20}
}

// maxDepth bounds nesting, so a hostile body cannot exhaust the stack.
const maxDepth = 100

// JSON2XML is the middleware.
type JSON2XML struct {
	next     http.Handler
	root     string
	item     string
	accept   []string
	maxBytes int
}

// New checks the configuration and returns the middleware.
func New(ctx context.Context, next http.Handler, config *Config, name string) (http.Handler, error) {
	if !validName(config.Root) {
		return nil, fmt.Errorf("root: %q is not an XML element name", config.Root)
	}
	if !validName(config.Item) {
		return nil, fmt.Errorf("item: %q is not an XML element name", config.Item)
	}
	if config.MaxBytes <= 0 {
		return nil, fmt.Errorf("maxBytes: must be positive, got %d", config.MaxBytes)
	}
	accept := make([]string, len(config.Accept))
	for i, a := range config.Accept {
		mt, _, err := mime.ParseMediaType(a)
		if err != nil {
			return nil, fmt.Errorf("accept[%d]: %q is not a media type", i, a)
		}
		accept[i] = mt
	}
	return &JSON2XML{next: next, root: config.Root, item: config.Item, accept: accept, maxBytes: config.MaxBytes}, nil
}

func (j *JSON2XML) ServeHTTP(rw http.ResponseWriter, req *http.Request) {
	if len(j.accept) > 0 {
		rw.Header().Add("Vary", "Accept")
	}
	if !j.wantsXML(req) || req.Method == http.MethodHead {
		j.next.ServeHTTP(rw, req)
		return
	}
	// Ask the upstream for JSON it does not compress: that is what can be
	// transformed.
	req.Header.Set("Accept", "application/json")
	req.Header.Del("Accept-Encoding")
	w := &bufferWriter{rw: rw, j: j}
	j.next.ServeHTTP(w, req)
	w.finish()
}

// wantsXML reports whether the request's Accept header lists one of the
// configured media types (with a non-zero quality).
func (j *JSON2XML) wantsXML(req *http.Request) bool {
	if len(j.accept) == 0 {
		return true
	}
	for _, line := range req.Header.Values("Accept") {
		for _, part := range strings.Split(line, ",") {
			mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err != nil {
				continue
			}
			if q, ok := params["q"]; ok {
				if f, err := strconv.ParseFloat(q, 64); err == nil && f == 0 {
					continue
				}
			}
			for _, a := range j.accept {
				if mt == a {
					return true
				}
			}
		}
	}
	return false
}

// bufferWriter holds a JSON response until it is complete, and passes
// anything else through.
type bufferWriter struct {
	rw      http.ResponseWriter
	j       *JSON2XML
	code    int
	holding bool // buffering a JSON body
	passing bool // headers sent: writes go straight through
	buf     bytes.Buffer
}

func (w *bufferWriter) Header() http.Header { return w.rw.Header() }

func (w *bufferWriter) WriteHeader(code int) {
	if w.holding || w.passing {
		return
	}
	if code < 200 {
		w.rw.WriteHeader(code) // informational: pass on, wait for the final one
		return
	}
	w.code = code
	if transformable(w.rw.Header(), code) {
		w.holding = true
		return
	}
	w.passing = true
	w.rw.WriteHeader(code)
}

func (w *bufferWriter) Write(b []byte) (int, error) {
	if !w.holding && !w.passing {
		w.WriteHeader(http.StatusOK)
	}
	if w.passing {
		return w.rw.Write(b)
	}
	if w.buf.Len()+len(b) > w.j.maxBytes {
		// Too large to hold: send what we have as it is, then stream.
		w.holding, w.passing = false, true
		w.rw.WriteHeader(w.code)
		if _, err := w.rw.Write(w.buf.Bytes()); err != nil {
			return 0, err
		}
		w.buf = bytes.Buffer{}
		return w.rw.Write(b)
	}
	return w.buf.Write(b)
}

// Flush passes through; while a JSON body is held there is nothing to
// flush yet.
func (w *bufferWriter) Flush() {
	if !w.passing {
		return
	}
	if f, ok := w.rw.(http.Flusher); ok {
		f.Flush()
	}
}

// finish transforms and writes a held JSON body.
func (w *bufferWriter) finish() {
	if !w.holding {
		return
	}
	h := w.rw.Header()
	out, err := convert(w.buf.Bytes(), w.j.root, w.j.item)
	if err != nil {
		// Not valid JSON after all: the client gets it as it is.
		w.rw.WriteHeader(w.code)
		_, _ = w.rw.Write(w.buf.Bytes())
		return
	}
	h.Set("Content-Type", "application/xml; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(out)))
	for _, k := range []string{"Etag", "Digest", "Content-Md5", "Repr-Digest", "Content-Digest"} {
		h.Del(k)
	}
	w.rw.WriteHeader(w.code)
	_, _ = w.rw.Write(out) // a client gone is the server's to notice
}

// transformable reports whether a response with this header and status
// carries a whole, uncompressed JSON body.
func transformable(h http.Header, code int) bool {
	if code == http.StatusNoContent || code == http.StatusNotModified || code == http.StatusPartialContent {
		return false
	}
	if ce := h.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		return false
	}
	mt, _, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil {
		return false
	}
	return mt == "application/json" || strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json")
}

// convert turns one JSON value into an XML document, keeping the order of
// object members: objects become elements named by their keys, arrays
// repeated item elements, scalars text, null an empty element.
func convert(data []byte, root, item string) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var buf bytes.Buffer
	buf.WriteString(xml.Header)
	if err := value(dec, &buf, root, "", item, 0); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the JSON value")
	}
	buf.WriteByte('\n')
	return buf.Bytes(), nil
}

func value(dec *json.Decoder, buf *bytes.Buffer, name, key, item string, depth int) error {
	if depth > maxDepth {
		return errors.New("JSON nested too deeply")
	}
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if tok == nil {
		open(buf, name, key, true)
		return nil
	}
	open(buf, name, key, false)
	switch t := tok.(type) {
	case json.Delim:
		if t == '{' {
			for dec.More() {
				k, err := dec.Token()
				if err != nil {
					return err
				}
				ks, _ := k.(string)
				el := elementName(ks)
				orig := ""
				if el != ks {
					orig = ks
				}
				if err := value(dec, buf, el, orig, item, depth+1); err != nil {
					return err
				}
			}
		} else {
			for dec.More() {
				if err := value(dec, buf, item, "", item, depth+1); err != nil {
					return err
				}
			}
		}
		if _, err := dec.Token(); err != nil { // the closing delimiter
			return err
		}
	case string:
		_ = xml.EscapeText(buf, []byte(t)) // a bytes.Buffer does not fail
	case json.Number:
		buf.WriteString(t.String())
	case bool:
		buf.WriteString(strconv.FormatBool(t))
	}
	buf.WriteString("</")
	buf.WriteString(name)
	buf.WriteByte('>')
	return nil
}

// open writes a start tag; key, when set, keeps a JSON key that is not an
// XML name.
func open(buf *bytes.Buffer, name, key string, empty bool) {
	buf.WriteByte('<')
	buf.WriteString(name)
	if key != "" {
		buf.WriteString(` key="`)
		_ = xml.EscapeText(buf, []byte(key))
		buf.WriteByte('"')
	}
	if empty {
		buf.WriteString("/>")
		return
	}
	buf.WriteByte('>')
}

// elementName makes an XML element name of a JSON key: characters that
// cannot appear become "_", and a key that cannot start a name gets a
// leading "_".
func elementName(key string) string {
	if validName(key) {
		return key
	}
	var b strings.Builder
	for i, r := range key {
		switch {
		case i == 0 && !nameStart(r) && nameChar(r):
			b.WriteByte('_')
			b.WriteRune(r)
		case nameChar(r):
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	if b.Len() == 0 {
		return "_"
	}
	return b.String()
}

// validName reports whether s is an XML name without a colon (colons
// would be read as namespace prefixes).
func validName(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		if i == 0 && !nameStart(r) || !nameChar(r) {
			return false
		}
	}
	return true
}

// nameStart and nameChar are XML 1.0's NameStartChar and NameChar,
// colon excluded.
func nameStart(r rune) bool {
	switch {
	case r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z':
		return true
	case r < 0xC0:
		return false
	}
	return r <= 0xD6 || r >= 0xD8 && r <= 0xF6 || r >= 0xF8 && r <= 0x2FF || r >= 0x370 && r <= 0x37D ||
		r >= 0x37F && r <= 0x1FFF || r >= 0x200C && r <= 0x200D || r >= 0x2070 && r <= 0x218F ||
		r >= 0x2C00 && r <= 0x2FEF || r >= 0x3001 && r <= 0xD7FF || r >= 0xF900 && r <= 0xFDCF ||
		r >= 0xFDF0 && r <= 0xFFFD || r >= 0x10000 && r <= 0xEFFFF
}

func nameChar(r rune) bool {
	return nameStart(r) || r == '-' || r == '.' || r >= '0' && r <= '9' || r == 0xB7 ||
		r >= 0x300 && r <= 0x36F || r >= 0x203F && r <= 0x2040
}
