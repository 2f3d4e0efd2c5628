// Package report tells users what is wrong where they look: every problem
// found by topology, shadow planning or compile becomes a Kubernetes Event
// on the object that has it (emitted by the leader, once per appearance),
// a series of the trellis_config_errors gauge, and an entry in the debug
// view.
//
// Stage: side output of the rebuild. Imports: smi (Problem), client-go
// (events), prometheus, the standard library.
package report
