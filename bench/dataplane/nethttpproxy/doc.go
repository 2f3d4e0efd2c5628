// Command nethttpproxy is the Trellis node proxy with its HTTP/1.1 fast
// path switched off (every connection served by net/http), for the
// data-plane benchmark's before/after comparison in one run. It wires the
// proxy as cmd/trellis-proxy does with its default flags (sampled access
// log to stdout, metrics on), from a static config file.
//
// Stage: tooling (bench/dataplane). Imports: node-proxy/server, httpproxy,
// source, telemetry, zap, the standard library.
package main
