// Package watch keeps the controller's caches: shared informers for
// Services, EndpointSlices, Pods, Namespaces and Nodes, and dynamic
// informers for the SMI kinds at the newest version the apiserver serves
// (asked of package smi, re-asked periodically so CRDs installed or
// upgraded later are picked up). Informer handlers only nudge a Debouncer;
// a worker then takes a Snapshot from the listers. Cached objects are
// slimmed by transforms on the way in (managed fields, pod specs and node
// statuses are dropped) and never modified afterwards.
//
// Stage: input of the controller, feeding controller/topology.
// Imports: client-go, smi (discovery), controller/topology (Snapshot), zap,
// prometheus, the standard library.
package watch
