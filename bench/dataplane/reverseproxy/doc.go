// Command reverseproxy is the "plain httputil.ReverseProxy" peer of the
// data-plane benchmark: net/http's server and the standard library reverse
// proxy to one upstream, with enough idle upstream connections per host for
// keep-alive to work under load (the default of 2 would measure connection
// churn, not the proxy), and nothing else.
//
// Stage: tooling (bench/dataplane). Imports: the standard library only.
package main
