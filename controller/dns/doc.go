// Package dns makes mesh names resolve: a small authoritative responder
// (miekg/dns) answers <service>.<namespace>.<domain> with the cluster IPs
// of the Service's shadow Service, and the CoreDNS integration adds a
// marked stub-domain block to the Corefile ConfigMap that forwards the
// mesh domains to the responders. The edit is idempotent (an equal block is
// left alone), reversible (Uninstall removes exactly the block) and refuses
// Corefiles it does not understand with an explanation instead of
// patching blindly.
//
// Stage: output of the controller, beside shadow. Imports: miekg/dns,
// client-go (ConfigMap edits), zap, the standard library.
package dns
