// Package resilience holds the per-service protections of the data path:
// the retry policy (go-retryablehttp CheckRetry/Backoff shapes, plus a retry
// budget so retries cannot amplify an outage), the circuit breaker
// (consecutive-failure and failure-ratio modes) and the rate limiter
// (golang.org/x/time/rate token bucket). Whether to retry is decided here
// and nowhere else.
//
// Stage: leaf of the data path (used by runtime and httpproxy).
// Imports: standard library, go-retryablehttp (types and backoff shape),
// golang.org/x/time/rate, node-proxy/config, node-proxy/proxyerr.
package resilience
