// Command backend is the upstream of the data-plane benchmark: a small, fast
// net/http server that answers every request with a short fixed body naming
// the port it was reached on ("v1" or "v2"), so the harness can check how a
// proxy split the traffic. It listens on each address given in -listen.
//
// Stage: tooling (bench/dataplane). Imports: the standard library only.
package main
