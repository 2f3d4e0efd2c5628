// Package telemetry holds what the proxy tells operators: Prometheus
// metrics (one registry, names following Prometheus conventions, labelled by
// source and destination service and namespace), sampled zap access logs,
// and W3C trace context (traceparent) parsing and propagation.
//
// Stage: leaf used by the data path and the admin server.
// Imports: prometheus client_golang, zap, the standard library.
package telemetry
