// Package tokencheck is a middleware plugin that lets a request through
// only with a bearer token whose SHA-256 hash is configured: the config
// holds hashes, never tokens. Tokens are compared in constant time
// (crypto/subtle), against every configured hash, so the time taken says
// nothing about which hash, or how much of one, matched. Other requests
// get 401 with a WWW-Authenticate challenge (RFC 6750). The token is
// removed before the request goes on, so the upstream never sees it.
//
// It follows Traefik's plugin contract (CreateConfig, New) and imports
// only packages on Trellis's plugin allow-list, so the same source runs
// compiled (go test) and interpreted by the mesh.
//
// Stage: a middleware plugin, run by the node proxy's plugin loader
// (node-proxy/plugin) or compiled like any package. Imports: the plugin
// allow-list of standard-library packages only (docs/plugins.md).
package tokencheck
