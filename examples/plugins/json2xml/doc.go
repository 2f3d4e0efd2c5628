// Package json2xml is a middleware plugin that turns a JSON response into
// XML for clients that ask for XML (a legacy client in front of a JSON
// service). The status is kept; Content-Type and Content-Length are set
// for the XML; validators of the JSON representation (ETag, Digest) are
// dropped. Responses it cannot transform (not JSON, compressed, partial,
// larger than maxBytes, invalid JSON) pass through unchanged, streamed.
//
// It follows Traefik's plugin contract (CreateConfig, New) and imports
// only packages on Trellis's plugin allow-list, so the same source runs
// compiled (go test) and interpreted by the mesh.
//
// Stage: a middleware plugin, run by the node proxy's plugin loader
// (node-proxy/plugin) or compiled like any package. Imports: the plugin
// allow-list of standard-library packages only (docs/plugins.md).
package json2xml
