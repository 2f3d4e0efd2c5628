// Package schemacheck validates SMI objects locally against the schemas and
// CEL rules of the CRDs Trellis ships (manifests/crds), with the apiserver's
// own validation code, so an object read from a cluster that has other SMI
// CRDs (or from a file) gets exactly the checks our CRDs would apply.
//
// Stage: helper of package smi. Imports manifests/crds and apiextensions.
package schemacheck
