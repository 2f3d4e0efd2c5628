// Package app wires one controller replica: watch → (debounced) topology →
// shadow plan → compile → publish to the stream hub, the DNS responder's
// table and the problem reporter; leader election (a Lease) decides which
// replica writes shadow Services, the CoreDNS block and Events, while every
// replica serves config streams and DNS from its own caches, so a leader
// change disconnects nobody. It owns every goroutine it starts (panics are
// recovered and end Run with an error) and exposes the metrics.
//
// The conversion webhook of the SMI CRDs (controller/webhook) runs on every
// replica; the leader keeps the CRDs' caBundle equal to its CA.
//
// Stage: top of the controller. Imports: every controller package,
// manifests/crds, smi, internal/version, client-go, the apiextensions client,
// prometheus, zap, the standard library.
package app
