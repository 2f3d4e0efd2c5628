// Package bench measures how fast a config change reaches the proxies: a
// synthetic mesh (Generate) goes through the controller's real topology,
// shadow planning, compile and serve code, and simulated proxies (the real
// node-proxy/source.Stream client) report when they hold the new version.
// BenchmarkConvergence runs it in one process; cmd/convergence runs the
// controller side in a child process to also report its RSS.
//
// Not a stage: a measurement harness. Imports: every controller package and
// node-proxy/source (as the simulated proxy).
package bench
