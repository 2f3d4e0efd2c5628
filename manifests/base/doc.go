// Package base embeds the plain-YAML installation of the Trellis control
// and data plane (namespace, least-privilege RBAC, settings ConfigMap,
// controller Deployment with leader election, proxy DaemonSet), applied
// with `kubectl apply -k manifests/base` after manifests/crds.
//
// Stage: data. Imports: the standard library, Kubernetes API types and
// controller/settings (its test checks the ConfigMap parses).
package base
