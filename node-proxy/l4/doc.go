// Package l4 is the TCP and UDP data path: one listener per TCP/UDP
// service port. Each connection (TCP) or flow (UDP, tracked by client
// address with an idle timeout) is identified by its source address,
// checked against access rules and the rate limit, split by weight, and
// relayed to one pod. A TCP connection on which no byte moves either way
// for its service's TCPIdleTimeout is closed. A connection keeps the config
// it started with until it ends.
//
// Stage: listener → route → balance → forward, for TCP and UDP.
// Imports: runtime, balance, forward, proxyerr, telemetry, zap, stdlib.
package l4
