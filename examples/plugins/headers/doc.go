// Package headers is a middleware plugin that sets and removes request and
// response headers. It follows Traefik's plugin contract (CreateConfig,
// New) and imports only packages on Trellis's plugin allow-list, so the
// same source runs compiled (go test) and interpreted by the mesh.
//
// Stage: a middleware plugin, run by the node proxy's plugin loader
// (node-proxy/plugin) or compiled like any package. Imports: the plugin
// allow-list of standard-library packages only (docs/plugins.md).
package headers
