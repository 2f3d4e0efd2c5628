// Package admin serves the proxy's operator endpoints on their own port:
// /live (the process runs), /ready (a config is served and the proxy is not
// draining), /metrics (Prometheus) and /debug/config (the live config, its
// version, the proxy's own build version and the last rejected config's
// error).
//
// Stage: side channel; reads state through the State interface it declares.
// Imports: prometheus client_golang, node-proxy/config, internal/version, the
// standard library.
package admin
