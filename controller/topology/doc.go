// Package topology turns a Snapshot of cluster objects into the mesh's
// graph: the meshed Services with their ports (traffic type and scheme from
// annotations), endpoints (from EndpointSlices, with node, zone, readiness
// and the ServiceAccount of each pod), traffic splits and access rules (from
// SMI, via package smi), and the pods on each node. Every problem found is
// returned against the object that has it; a bad object disables only
// itself (or only the broken part of it).
//
// Stage: pure function between controller/watch and controller/compile. No
// I/O, no clocks, no map-order leaks: equal snapshots give equal topologies.
// Cached objects are only read, never modified.
//
// Imports: smi, smi/annotations, smi/match, node-proxy/config (leaf types),
// Kubernetes API types, the standard library.
package topology
