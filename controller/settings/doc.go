// Package settings holds the controller's static, mesh-wide settings (the
// trellis-controller ConfigMap): mesh domain, ACL mode, port ranges, the
// proxy selector, CoreDNS integration. It parses and validates them with
// messages that name the key and the fix.
//
// Stage: input, read once at start. Imports: the standard library,
// sigs.k8s.io/yaml, smi/annotations (for the traffic type values).
package settings
