// Package source delivers configs to the proxy, whole and validated, through
// one shape: Run(ctx, apply). File reads a static JSON file (for debugging
// and benchmarks) and re-reads it on demand (SIGHUP). Stream is the
// controller's config stream client: an HTTP/2 stream authenticated with the
// pod's ServiceAccount token, a snapshot on connect and deltas after it,
// each delta verified against its version from the digests of the pieces
// (config.Config.Hash is a two-level hash, so verifying costs the changed
// Services plus 32 bytes per Service), acks, and reconnects with jittered
// exponential backoff that keep the last config serving meanwhile.
//
// Stage: input of the proxy. Imports: node-proxy/config,
// github.com/hashicorp/go-retryablehttp (backoff and retry policy), the
// standard library.
package source
