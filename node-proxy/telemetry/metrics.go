package telemetry

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Label names.
var (
	srcLabels  = []string{"source_namespace", "source_service_account", "source_service"}
	dstLabels  = []string{"destination_namespace", "destination_service"}
	reqLabels  = append(append(append([]string{}, srcLabels...), dstLabels...), "code_class", "error_class")
	histLabels = append(append([]string{"source_namespace", "source_service"}, dstLabels...), "code_class")
	l4Labels   = append(append(append([]string{}, srcLabels...), dstLabels...), "error_class")
)

// Metrics is every metric the proxy exports.
type Metrics struct {
	Registry *prometheus.Registry

	HTTPRequests  *prometheus.CounterVec
	HTTPDuration  *prometheus.HistogramVec
	Retries       *prometheus.CounterVec
	Ejections     *prometheus.CounterVec
	BreakerOpen   *prometheus.GaugeVec
	OpenConns     *prometheus.GaugeVec
	TCPConns      *prometheus.CounterVec
	UDPFlows      *prometheus.CounterVec
	L4Bytes       *prometheus.CounterVec
	ConfigInfo    *prometheus.GaugeVec
	ConfigReloads *prometheus.CounterVec
	Panics        prometheus.Counter
	BadRequests   *prometheus.CounterVec
	// Span export (only moves when --otlp-endpoint is set).
	SpansExported prometheus.Counter
	SpansDropped  *prometheus.CounterVec
}

// NewMetrics registers the proxy's metrics (and Go/process collectors) on a
// fresh registry.
func NewMetrics() *Metrics {
	r := prometheus.NewRegistry()
	m := &Metrics{
		Registry: r,
		HTTPRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_proxy_http_requests_total",
			Help: "HTTP requests handled, by source, destination, response code class (2xx...) and failure class (ok, denied, timeout, ...).",
		}, reqLabels),
		HTTPDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "trellis_proxy_http_request_duration_seconds",
			Help:    "Time from request received to response body finished.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, histLabels),
		Retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_proxy_http_retries_total",
			Help: "Retried HTTP attempts.",
		}, dstLabels),
		Ejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_proxy_outlier_ejections_total",
			Help: "Endpoints ejected by passive outlier detection.",
		}, dstLabels),
		BreakerOpen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "trellis_proxy_circuit_breaker_open",
			Help: "1 while the circuit breaker of a destination port is open or half-open.",
		}, append(append([]string{}, dstLabels...), "port")),
		OpenConns: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "trellis_proxy_open_connections",
			Help: "Open client connections (http, tcp) and UDP flows (udp).",
		}, []string{"protocol"}),
		TCPConns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_proxy_tcp_connections_total",
			Help: "TCP connections accepted, by source, destination and failure class.",
		}, l4Labels),
		UDPFlows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_proxy_udp_flows_total",
			Help: "UDP flows started, by source, destination and failure class.",
		}, l4Labels),
		L4Bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_proxy_l4_bytes_total",
			Help: "Bytes relayed by TCP and UDP listeners, by direction (to_upstream, to_client).",
		}, append(append([]string{"protocol"}, dstLabels...), "direction")),
		ConfigInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "trellis_proxy_config_info",
			Help: "1 for the version of the config being served.",
		}, []string{"version"}),
		ConfigReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_proxy_config_reloads_total",
			Help: "Config applications by result (applied, unchanged, rejected).",
		}, []string{"result"}),
		Panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "trellis_proxy_panics_recovered_total",
			Help: "Panics recovered while serving a request or connection.",
		}),
		BadRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_proxy_http_rejected_requests_total",
			Help: "Requests rejected before routing (header limits, smuggling attempts, unknown host).",
		}, []string{"reason"}),
		SpansExported: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "trellis_proxy_trace_spans_exported_total",
			Help: "Spans of sampled HTTP requests accepted by the OTLP collector.",
		}),
		SpansDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_proxy_trace_spans_dropped_total",
			Help: "Spans of sampled HTTP requests not exported, by reason (queue_full, export_failed, rejected by the collector, shutdown).",
		}, []string{"reason"}),
	}
	r.MustRegister(m.HTTPRequests, m.HTTPDuration, m.Retries, m.Ejections, m.BreakerOpen, m.OpenConns,
		m.TCPConns, m.UDPFlows, m.L4Bytes, m.ConfigInfo, m.ConfigReloads, m.Panics, m.BadRequests,
		m.SpansExported, m.SpansDropped,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// SetConfigVersion makes version the only config_info series.
func (m *Metrics) SetConfigVersion(version string) {
	m.ConfigInfo.Reset()
	m.ConfigInfo.WithLabelValues(version).Set(1)
}

// CodeClass returns "1xx".."5xx".
func CodeClass(code int) string {
	switch {
	case code < 200:
		return "1xx"
	case code < 300:
		return "2xx"
	case code < 400:
		return "3xx"
	case code < 500:
		return "4xx"
	}
	return "5xx"
}
