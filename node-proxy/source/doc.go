// Package source delivers configs to the proxy. File reads a static JSON
// file (for debugging and benchmarks) and re-reads it on demand (SIGHUP).
// The controller stream client will be another implementation of the same
// shape: Run(ctx, apply) delivering whole configs.
//
// Stage: input of the proxy. Imports: node-proxy/config, the standard library.
package source
