// Package toolchain builds the upstream binaries the local cluster runs
// (kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy,
// kubectl, etcd, CoreDNS) from the pinned wrapper modules under tools/, and
// Trellis's own binaries from this repository, into a cache keyed by the pin.
//
// A pinned set is rebuilt only when its wrapper module (go.mod, go.sum) or the
// Go version changes; the key is a hash of those, so two checkouts on the same
// machine share one build. It imports only the standard library.
package toolchain
