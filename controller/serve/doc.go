// Package serve delivers configs to node proxies over long-lived HTTP/2
// streams (see protocol.go for the wire format): a full snapshot on
// connect (or "current" when the proxy already holds the version), then a
// delta or snapshot whenever the node's version changes, with keep-alive
// pings. Proxies authenticate with their pod-bound ServiceAccount token
// (TokenReview); the node they get is the node of the pod the token is
// bound to, so a proxy can only ever read its own node's config. The debug
// API (/debug/...) needs a token whose user RBAC allows `get` on the
// non-resource URL /trellis/debug (SubjectAccessReview), so arbitrary pods
// cannot read it. Because the apiserver's pods/proxy subresource (the way
// kubectl-trellis reaches a controller pod) drops the Authorization header,
// the debug API also takes the token in X-Trellis-Authorization, with the
// same checks; config streams and acks take Authorization only. Every
// replica serves streams from its own caches.
//
// Stage: output of the controller, after compile. Imports: controller/compile,
// client-go (TokenReview, SubjectAccessReview, pod lookup), prometheus, zap,
// the standard library.
package serve
