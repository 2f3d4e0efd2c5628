// Package manifests holds the installation of Trellis in three forms that
// must agree: the SMI CRDs (crds/), the kustomize base (base/) and the Helm
// chart (helm/trellis). Its tests render the chart with the Helm SDK and the
// base with kustomize and compare the objects.
//
// Stage: data. Imports: none outside its tests (which use the Helm SDK,
// kustomize and controller/settings).
package manifests
