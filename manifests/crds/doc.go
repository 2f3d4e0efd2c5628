// Package crds embeds the SMI CustomResourceDefinitions that Trellis ships
// (apiextensions.k8s.io/v1, every SMI version served, the newest stored,
// structural schemas with CEL validation rules).
//
// Stage: data. The smi package validates objects locally against these
// schemas (so a cluster with other CRDs gets the same checks), tests apply
// them to a real apiserver, and the installer applies them to clusters.
//
// Imports: the standard library and Kubernetes API types only.
package crds
