// Package base embeds the plain-YAML installation of the Trellis control
// and data plane: namespace, least-privilege RBAC (the controller's, and
// cli-rbac.yaml's for people using the plugin), settings ConfigMap,
// controller Deployment with leader election and a PodDisruptionBudget,
// proxy DaemonSet. Apply it with `kubectl apply --server-side -k
// manifests/base` after manifests/crds; `kubectl trellis install` applies
// the files kustomization.yaml lists, and the Helm chart in
// manifests/helm/trellis renders the same objects.
//
// Stage: data. Imports: the standard library, Kubernetes API types and
// controller/settings (its test checks the ConfigMap parses).
package base
