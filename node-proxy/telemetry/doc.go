// Package telemetry holds what the proxy tells operators: Prometheus
// metrics (one registry, names following Prometheus conventions, labelled by
// source and destination service and namespace), sampled zap access logs,
// W3C trace context (traceparent) parsing and propagation, and span export:
// a Tracer takes each sampled request (HTTPSpan, filled after the fact by
// the data path) and exports it as one OTLP SERVER span carrying the exact
// ids the proxy sent upstream, batched over OTLP/HTTP, encoded here
// (otlp.go says why not with the OpenTelemetry SDK, otlphttp.go why not
// otlptracehttp).
//
// Stage: leaf used by the data path and the admin server.
// Imports: prometheus client_golang, zap, protobuf's protowire, the
// standard library. Never the OpenTelemetry SDK or API, the generated OTLP
// types or the OTLP collector package (gRPC): linked code costs the proxy
// RSS even unused. Tests and their receiver, otlptest, decode with the
// generated OTLP types.
package telemetry
