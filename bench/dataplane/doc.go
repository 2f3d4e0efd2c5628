// Command dataplane is the data-plane benchmark: it builds the Trellis node
// proxy, a backend, a fortio-based load generator and a plain
// httputil.ReverseProxy, starts them and Debian's HAProxy and nginx as
// separate processes on loopback, and measures them side by side in one
// run: closed-loop maximum req/s, open-loop latency at fixed rates without
// coordinated omission, CPU per request and peak RSS per process, over
// repeated rounds. It writes a markdown report with plots (docs/benchmarks.md
// by default) and the raw measurements as JSON next to it.
//
//	go run ./bench/dataplane [-quick] [-out docs/benchmarks.md]
//
// Stage: tooling outside the data path. Imports: node-proxy/config (to
// generate a valid proxy config), smi/match, gonum/plot, the standard library;
// its loadgen imports fortio.
package main
