// Package match holds the semantics of SMI route matching (HTTPRouteGroup
// matches and TCPRoute/UDPRoute port lists) as pure functions over plain
// data.
//
// Stage: shared leaf. The controller (to validate and explain), the kubectl
// plugin (to answer "why") and the node proxy (to decide each request) all
// call this package, so they mean exactly the same thing by a match.
//
// Imports: the standard library only. Matching does not allocate.
package match
