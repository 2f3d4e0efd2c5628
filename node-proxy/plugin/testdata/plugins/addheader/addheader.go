// Package addheader sets request and response headers from its config. It
// counts the requests each instance served, to show instances are reused.
package addheader

import (
	"context"
	"net/http"
	"strconv"
	"sync/atomic"
)

// Config is the plugin configuration.
type Config struct {
	Request  map[string]string `json:"request,omitempty"`
	Response map[string]string `json:"response,omitempty"`
	Limit    int               `json:"limit,omitempty"`
	Nested   struct {
		Enabled bool `json:"enabled"`
	} `json:"nested"`
}

// CreateConfig returns the default configuration.
func CreateConfig() *Config {
	return &Config{Request: map[string]string{}, Response: map[string]string{"X-Default": "yes"}}
}

var instances int64

type addHeader struct {
	next   http.Handler
	cfg    *Config
	name   string
	id     int64
	served int64
}

// New creates the middleware.
func New(ctx context.Context, next http.Handler, cfg *Config, name string) (http.Handler, error) {
	return &addHeader{next: next, cfg: cfg, name: name, id: atomic.AddInt64(&instances, 1)}, nil
}

func (a *addHeader) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	for k, v := range a.cfg.Request {
		r.Header.Set(k, v)
	}
	for k, v := range a.cfg.Response {
		w.Header().Set(k, v)
	}
	n := atomic.AddInt64(&a.served, 1)
	w.Header().Set("X-Instance", strconv.FormatInt(a.id, 10)+"/"+strconv.FormatInt(n, 10))
	w.Header().Set("X-Plugin-Name", a.name)
	if a.cfg.Nested.Enabled {
		w.Header().Set("X-Nested", "on")
	}
	a.next.ServeHTTP(w, r)
}
