// Package cluster is Trellis's one-machine Kubernetes cluster made of the
// real upstream components: etcd, kube-apiserver (TLS, RBAC,
// service-account keys), kube-controller-manager, kube-scheduler, one
// network namespace per node with kube-proxy in nftables mode, one network
// namespace per pod, CoreDNS as cluster DNS, and a built-in kubelet stand-in
// that runs pods' containers as processes.
//
// Stage: test infrastructure. It imports client-go, e2e/toolchain and
// internal/kube; nothing in the product imports it.
package cluster
