package plugin

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the plugin metrics. NewMetrics creates them unregistered:
// the proxy registers Collectors on its registry next to its own metrics
// (same trellis_proxy_ prefix and conventions).
type Metrics struct {
	// Compiles counts compilations by result (ok, error). A plugin version
	// already compiled by a previous runtime is not compiled again.
	Compiles *prometheus.CounterVec
	// Loaded is 1 while a plugin is loaded and 0 while it failed to load
	// (compile, config or New error); the series goes when the plugin
	// leaves the config.
	Loaded *prometheus.GaugeVec
	// Panics counts panics recovered in plugin code: requests (answered
	// 500 or cut), goroutines the plugin started, and loading.
	Panics *prometheus.CounterVec
	// Timeouts counts requests a plugin did not finish in time (504).
	Timeouts *prometheus.CounterVec
	// Abandoned is the number of goroutines still running plugin code
	// after their request timed out.
	Abandoned *prometheus.GaugeVec
}

// NewMetrics returns unregistered plugin metrics.
func NewMetrics() *Metrics {
	return &Metrics{
		Compiles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_proxy_plugin_compiles_total",
			Help: "Plugin compilations (yaegi) by plugin and result (ok, error); a version is compiled once.",
		}, []string{"plugin", "result"}),
		Loaded: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "trellis_proxy_plugin_loaded",
			Help: "1 while the plugin is loaded, 0 while it fails to load (see /debug/config for the error).",
		}, []string{"plugin"}),
		Panics: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_proxy_plugin_panics_total",
			Help: "Panics recovered in plugin code (requests, the plugin's goroutines, loading).",
		}, []string{"plugin"}),
		Timeouts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_proxy_plugin_timeouts_total",
			Help: "Requests abandoned because plugin code did not finish within the timeout (answered 504).",
		}, []string{"plugin"}),
		Abandoned: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "trellis_proxy_plugin_abandoned_goroutines",
			Help: "Goroutines still running plugin code after their request timed out.",
		}, []string{"plugin"}),
	}
}

// Collectors returns the metrics to register.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.Compiles, m.Loaded, m.Panics, m.Timeouts, m.Abandoned}
}
