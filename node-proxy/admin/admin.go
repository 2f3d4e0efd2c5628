package admin

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/trellis-mesh/trellis/internal/version"
	"github.com/trellis-mesh/trellis/node-proxy/config"
)

// State is what the admin endpoints report.
type State interface {
	// Ready explains why the proxy is not ready ("" = ready).
	Ready() string
	// Live returns the served config (nil before the first) and when it was applied.
	Live() (*config.Config, time.Time)
	// LastRejection returns the error of the last rejected config, if any.
	LastRejection() (string, time.Time)
}

// Debug is the /debug/config document.
type Debug struct {
	// ProxyVersion is the build of this proxy binary (internal/version).
	ProxyVersion string `json:"proxyVersion"`
	// Version is the served config's version.
	Version        string    `json:"version"`
	AppliedAt      time.Time `json:"appliedAt,omitzero"`
	Ready          bool      `json:"ready"`
	NotReadyReason string    `json:"notReadyReason,omitempty"`
	LastRejection  string    `json:"lastRejection,omitempty"`
	RejectedAt     time.Time `json:"rejectedAt,omitzero"`
	// PluginErrors are the plugins of the served config that could not be
	// loaded (their Services apply the plugin's failure policy).
	PluginErrors []string       `json:"pluginErrors,omitempty"`
	Config       *config.Config `json:"config"`
}

// PluginState is implemented by a State that loads plugins.
type PluginState interface {
	PluginErrors() []string
}

// Handler returns the admin mux.
func Handler(s State, reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /live", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n")) // a failed write means the prober hung up; nothing to report to
	})
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) {
		if why := s.Ready(); why != "" {
			http.Error(w, "not ready: "+why, http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /debug/config", func(w http.ResponseWriter, _ *http.Request) {
		c, at := s.Live()
		why := s.Ready()
		rej, rejAt := s.LastRejection()
		d := Debug{ProxyVersion: version.Get(), AppliedAt: at, Ready: why == "", NotReadyReason: why, LastRejection: rej, RejectedAt: rejAt, Config: c}
		if c != nil {
			d.Version = c.Version
		}
		if ps, ok := s.(PluginState); ok {
			d.PluginErrors = ps.PluginErrors()
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		// Headers are already sent, so an encode error (client gone) cannot be reported.
		_ = enc.Encode(d)
	})
	return mux
}
