// Package shadow manages shadow Services: one per meshed Service, in the
// mesh namespace, selecting the node proxies with internalTrafficPolicy
// Local, its ports pointing at the proxy's listeners. Plan is pure: from
// the topology and the existing shadows it computes the desired ones and
// the proxy port of every TCP/UDP port, keeping the ports already recorded
// in existing shadows (so assignments survive restarts and agree across
// replicas). Writer applies a plan (leader only) and removes shadows whose
// Service left the mesh, by a label sweep (owner references cannot cross
// namespaces).
//
// Stage: beside compile, after topology. Imports: controller/topology,
// node-proxy/config, smi (Problem), client-go, zap, the standard library.
package shadow
