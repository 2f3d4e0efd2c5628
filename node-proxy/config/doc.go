// Package config is the contract between the Trellis controller and the node
// proxy: the complete, self-contained description of what one node's proxy
// must serve. The controller produces it (controller/compile), the proxy
// consumes it (node-proxy/runtime), and nothing else is shared between them.
//
// Stage: shared leaf data. A Config is plain JSON-serialisable data with no
// behaviour beyond decoding, hashing and validation; it carries no live state.
//
// Imports: the standard library and smi/match (for the HTTP match spec type and
// its compile-time validation, so controller and proxy agree on semantics).
package config
