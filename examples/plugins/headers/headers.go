package headers

import (
	"context"
	"fmt"
	"net/http"
	"strings"
)

// Config is the plugin's configuration, decoded from the plugin object's
// config (JSON or YAML).
type Config struct {
	// SetRequestHeaders are set on the request before it goes on (any
	// value the client sent is replaced).
	SetRequestHeaders map[string]string `json:"setRequestHeaders,omitempty"`
	// RemoveRequestHeaders are deleted from the request.
	RemoveRequestHeaders []string `json:"removeRequestHeaders,omitempty"`
	// SetResponseHeaders are set on the response (any value the upstream
	// sent is replaced).
	SetResponseHeaders map[string]string `json:"setResponseHeaders,omitempty"`
	// RemoveResponseHeaders are deleted from the response.
	RemoveResponseHeaders []string `json:"removeResponseHeaders,omitempty"`
}

// CreateConfig returns the default configuration: no changes.
func CreateConfig() *Config {
	return &Config{}
}

// change is one header edit, its name canonicalised once in New.
type change struct {
	name  string
	value string
	del   bool
}

// Headers is the middleware.
type Headers struct {
	next     http.Handler
	name     string
	request  []change
	response []change
}

// New checks the configuration and returns the middleware.
func New(ctx context.Context, next http.Handler, config *Config, name string) (http.Handler, error) {
	h := &Headers{next: next, name: name}
	var err error
	if h.request, err = changes("setRequestHeaders", config.SetRequestHeaders, "removeRequestHeaders", config.RemoveRequestHeaders); err != nil {
		return nil, err
	}
	if h.response, err = changes("setResponseHeaders", config.SetResponseHeaders, "removeResponseHeaders", config.RemoveResponseHeaders); err != nil {
		return nil, err
	}
	return h, nil
}

// changes validates and orders edits: removals first, then sets, each
// sorted by name so the outcome does not depend on map order.
func changes(setField string, set map[string]string, delField string, del []string) ([]change, error) {
	var out []change
	for i, n := range del {
		if !validName(n) {
			return nil, fmt.Errorf("%s[%d]: %q is not a valid header name", delField, i, n)
		}
		out = append(out, change{name: http.CanonicalHeaderKey(n), del: true})
	}
	var sets []change
	for n, v := range set {
		if !validName(n) {
			return nil, fmt.Errorf("%s: %q is not a valid header name", setField, n)
		}
		if strings.ContainsAny(v, "\r\n\x00") {
			return nil, fmt.Errorf("%s[%s]: the value contains CR, LF or NUL", setField, n)
		}
		sets = append(sets, change{name: http.CanonicalHeaderKey(n), value: v})
	}
	for i := 1; i < len(sets); i++ { // insertion sort: a handful of headers
		for j := i; j > 0 && sets[j].name < sets[j-1].name; j-- {
			sets[j], sets[j-1] = sets[j-1], sets[j]
		}
	}
	return append(out, sets...), nil
}

// validName reports whether n is an HTTP field name (an RFC 9110 token).
func validName(n string) bool {
	if n == "" {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0 {
			continue
		}
		return false
	}
	return true
}

func apply(h http.Header, cs []change) {
	for _, c := range cs {
		if c.del {
			delete(h, c.name)
		} else {
			h[c.name] = []string{c.value}
		}
	}
}

func (h *Headers) ServeHTTP(rw http.ResponseWriter, req *http.Request) {
	apply(req.Header, h.request)
	if len(h.response) == 0 {
		h.next.ServeHTTP(rw, req)
		return
	}
	h.next.ServeHTTP(&responseWriter{ResponseWriter: rw, changes: h.response}, req)
}

// responseWriter applies the response edits when the header is written,
// after the upstream's headers are in place.
type responseWriter struct {
	http.ResponseWriter
	changes []change
	wrote   bool
}

func (w *responseWriter) WriteHeader(code int) {
	if !w.wrote && code >= 200 {
		w.wrote = true
		apply(w.ResponseWriter.Header(), w.changes)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *responseWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

// Flush keeps streamed responses streaming.
func (w *responseWriter) Flush() {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
