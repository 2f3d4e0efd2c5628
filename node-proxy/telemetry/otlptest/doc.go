// Package otlptest is a real OTLP/HTTP trace receiver for tests: an
// httptest server that accepts POST /v1/traces, decodes the protobuf
// ExportTraceServiceRequest (gzip or not) with the OpenTelemetry proto
// types, and keeps the spans for assertions. It also offers collectors
// that never answer and that answer with chosen statuses. Tests only:
// nothing in the proxy binary imports it (it links gRPC through the
// collector proto package).
//
// Stage: test support for node-proxy/telemetry and its users.
// Imports: go.opentelemetry.io/proto/otlp, protobuf, the standard library.
package otlptest
