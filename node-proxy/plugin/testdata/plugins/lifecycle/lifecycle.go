// Package lifecycle reports, over HTTP, when the context New received ends.
package lifecycle

import (
	"context"
	"net/http"
)

// Config names where to report.
type Config struct {
	Report string `json:"report"`
}

// CreateConfig returns the configuration.
func CreateConfig() *Config { return &Config{} }

// New starts a goroutine that lives as long as ctx.
func New(ctx context.Context, next http.Handler, cfg *Config, name string) (http.Handler, error) {
	go func() {
		<-ctx.Done()
		resp, err := http.Get(cfg.Report)
		if err == nil {
			resp.Body.Close()
		}
	}()
	return next, nil
}
