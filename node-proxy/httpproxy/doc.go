// Package httpproxy is the HTTP data path: one handler for the shared
// HTTP listener (HTTP/1.1, h2c and HTTP/2 with prior knowledge) that routes
// by Host/:authority, identifies the client by its source address, enforces
// access control and rate limits, splits, retries within budget and
// timeouts, forwards to one pod, and streams the response back with
// trailers (so gRPC works end to end). Every proxy-made error goes through
// proxyerr, so each failure class has exactly one status.
//
// FastServer owns the listener. Plain HTTP/1.1 keep-alive requests to
// services with an http upstream take its fast path (h1*.go): a strict
// RFC 9112 parser over pooled per-connection buffers (conflicting or
// duplicate Content-Length, Transfer-Encoding other than chunked, obs-fold,
// bare CR/LF and bad chunk sizes get 400/501 and the connection is
// closed), pooled upstream connections opened through forward.Dialer, and
// one goroutine per client connection doing the whole exchange. Everything
// else (HTTP/2 prior knowledge, upgrades, Expect, HTTP/1.0, CONNECT,
// absolute-form targets, h2c and https upstreams) is handed with its bytes
// to net/http serving Handler. Both paths run the same policy steps
// (lookup, authorize, pick, finish) and the same retry decision
// (resilience.Retry.Decide).
//
// Stage: listener → route → balance → middleware → forward, for HTTP.
// Imports: runtime, balance, resilience, forward, proxyerr, telemetry,
// config, zap, prometheus, the standard library.
package httpproxy
