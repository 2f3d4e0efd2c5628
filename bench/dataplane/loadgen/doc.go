// Command loadgen drives one measurement of the data-plane benchmark with
// fortio's periodic runner and fast HTTP/1.1 keep-alive client, and prints
// the result as one JSON object (bench/dataplane/internal/result.Run).
//
// With -qps 0 it runs a closed loop (each connection sends its next request
// as soon as the previous answer arrived). With -qps N it runs an open loop:
// every request has a scheduled send time, and its latency is measured from
// that time, not from when it was actually sent. A stalled connection
// therefore charges the wait to every request it delayed (no coordinated
// omission). fortio's runner reports each call's start and duration through
// its AccessLogger hook; loadgen recomputes the schedule fortio follows and
// corrects each sample with it.
//
// Stage: tooling (bench/dataplane). Imports: fortio (periodic, fhttp, log),
// bench/dataplane/internal/result, the standard library.
package main
