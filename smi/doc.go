// Package smi is the one place where Trellis understands the Service Mesh
// Interface: it discovers which SMI versions a cluster serves, decodes every
// served version of TrafficSplit, TrafficTarget, HTTPRouteGroup, TCPRoute and
// UDPRoute into one internal model, validates objects with messages that name
// the object, the field and the fix, and answers the two policy questions as
// pure functions: Policy.Allowed (access control) and Policy.Split (traffic
// split).
//
// Stage: model, between controller/watch (which hands it unstructured
// objects and Services) and controller/topology/compile, the kubectl plugin
// and the node proxy (which ask it for decisions). It does no I/O except
// Discover, which only reads discovery.
//
// Imports: the standard library, smi/match, manifests/crds (the schemas),
// smi-sdk-go types and Kubernetes API machinery. It must not import
// controller/, node-proxy/ or cmd/.
package smi
