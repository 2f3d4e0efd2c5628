// Package webhook serves the conversion webhook of the SMI CRDs Trellis
// ships (manifests/crds point at Service trellis-system/trellis-controller,
// port 443, path /convert): smi/conversion's handler over TLS, with a
// serving certificate kept in a Secret so that every replica presents one
// from the same CA, and the CRDs' caBundle kept equal to that CA (the
// leader calls SyncCABundle).
//
// Stage: adapter between the apiserver and smi/conversion, wired by
// controller/app. Imports: manifests/crds, smi/conversion, client-go and
// the apiextensions client, the standard library.
package webhook
