// Package traffic holds the kubectl-trellis commands about live traffic and
// its policy: stat (per-Service request rate, success rate and latency
// quantiles), top (the busiest source→destination pairs) and why (why a
// request from a pod to a Service is allowed or denied, and which split
// backends it would reach).
//
// stat and top read every node proxy's Prometheus /metrics (admin port
// 15000, through the apiserver's pods/proxy subresource) twice, an interval
// apart, and compute rates and quantiles from the difference, as
// Prometheus's rate() and histogram_quantile() would. why reads the objects
// the controller reads and runs them through the controller's own pure
// stages (controller/topology, which uses smi's decoder and policy), so the
// explanation is computed by the same code that compiles the proxies'
// config.
//
// Stage: CLI. It may import client-go, apimachinery, cobra, prometheus's
// expfmt, internal/cli/clienv, the smi packages, and the controller's pure
// packages controller/settings and controller/topology (no I/O). It must not
// import the node proxy (its tests do, to scrape the proxy's real metrics
// registry).
package traffic
