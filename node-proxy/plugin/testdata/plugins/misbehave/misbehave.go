// Package misbehave does, per request path, what a broken plugin does.
package misbehave

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Config is empty.
type Config struct{}

// CreateConfig returns the configuration.
func CreateConfig() *Config { return &Config{} }

type misbehave struct{ next http.Handler }

// New creates the middleware.
func New(ctx context.Context, next http.Handler, cfg *Config, name string) (http.Handler, error) {
	return &misbehave{next: next}, nil
}

type panicReader struct{}

func (panicReader) Read(p []byte) (int, error) { panic("reader exploded") }
func (panicReader) Close() error               { return nil }

func (m *misbehave) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/panic":
		var cfg map[string]int
		cfg["boom"]++ // nil map write
	case "/panic-after-write":
		w.WriteHeader(http.StatusOK)
		w.Write([]byte("partial"))
		w.(http.Flusher).Flush()
		panic("after write")
	case "/abort":
		panic(http.ErrAbortHandler)
	case "/block":
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		time.Sleep(time.Duration(ms) * time.Millisecond)
		w.Header().Set("X-Late", "yes")
		w.WriteHeader(http.StatusTeapot)
		fmt.Fprint(w, "late")
	case "/spin":
		for i := 0; ; i++ {
			if i < 0 {
				break
			}
		}
	case "/after-next":
		m.next.ServeHTTP(w, r)
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		time.Sleep(time.Duration(ms) * time.Millisecond)
	case "/go-panic":
		go explode("goroutine", 1)
		m.next.ServeHTTP(w, r)
	case "/afterfunc":
		time.AfterFunc(time.Millisecond, func() { panic("timer exploded") })
		m.next.ServeHTTP(w, r)
	case "/next-twice":
		m.next.ServeHTTP(w, r)
		m.next.ServeHTTP(w, r)
	case "/drop-context":
		m.next.ServeHTTP(w, r.WithContext(context.Background()))
	case "/body-panic":
		r.Body = panicReader{}
		r.ContentLength = -1
		m.next.ServeHTTP(w, r)
	case "/wrap-flush":
		m.next.ServeHTTP(&counting{w: w}, r)
	default:
		m.next.ServeHTTP(w, r)
	}
}

// counting is a ResponseWriter wrapper of the usual kind, with Flush.
type counting struct {
	w     http.ResponseWriter
	bytes int
}

func (c *counting) Header() http.Header  { return c.w.Header() }
func (c *counting) WriteHeader(code int) { c.w.WriteHeader(code) }
func (c *counting) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.bytes += n
	return n, err
}
func (c *counting) Flush() {
	if f, ok := c.w.(http.Flusher); ok {
		f.Flush()
	}
}

func explode(what string, n uint) {
	panic(fmt.Sprint(what, " exploded ", n))
}
