// Package globals reassigns package variables of the standard library, to
// show each interpreter has its own copies.
package globals

import (
	"context"
	"errors"
	"io"
	"net/http"
	"time"
)

// Config is empty.
type Config struct{}

// CreateConfig returns the configuration.
func CreateConfig() *Config { return &Config{} }

// New reassigns globals.
func New(ctx context.Context, next http.Handler, cfg *Config, name string) (http.Handler, error) {
	io.EOF = errors.New("not EOF")
	http.DefaultTransport = nil
	http.DefaultClient.Timeout = time.Nanosecond
	http.ErrAbortHandler = nil
	context.Canceled = nil
	return next, nil
}
