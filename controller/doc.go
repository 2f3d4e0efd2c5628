// Package controller is the Trellis control plane: it turns Services,
// EndpointSlices, Pods, Nodes, Namespaces, annotations and SMI objects into
// one node-proxy/config.Config per node and streams it to the node proxies.
//
// Data flows one way through the subpackages:
//
//	watch     informers; handlers only nudge; a debounced worker takes a Snapshot from the listers
//	topology  pure: Snapshot → graph of meshed services, ports, endpoints, identities, splits, rules
//	compile   pure: Topology + port assignments → per-node configs, encoded once, content-hashed
//	serve     authenticated, versioned config streams to proxies; debug view
//	shadow    pure planning of shadow Services + the leader's writer
//	dns       the mesh DNS responder and the CoreDNS stub-domain integration
//	report    Events and the trellis_config_errors metric for bad objects
//	app       wiring: leader election, the rebuild loop, metrics
//
// This package holds no code; see docs/controller.md.
package controller
