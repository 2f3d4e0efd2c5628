// Package compile turns a Topology into one node-proxy/config.Config per
// node: every meshed Service with its endpoints, proxy ports, split and
// resilience settings; access rules narrowed to the identities of the pods
// on that node (the only sources the node's proxy ever sees); the node's
// own pods; and a content hash as Version (exactly config.Hash()).
//
// Each Service is encoded once and the encoding is shared by every node
// whose variant of it is the same, so a thousand services on a hundred
// nodes cost a thousand encodings, not a hundred thousand; the per-node
// hash streams over the shared pieces. Anything the proxy's own validation
// would reject is dropped and reported, so one bad Service never costs a
// node its whole config.
//
// Stage: pure function between controller/topology and controller/serve.
// Deterministic: equal inputs give byte-identical configs.
//
// Imports: controller/topology, node-proxy/config, smi (Problem), the
// standard library.
package compile
