// Command trellis-proxy is the Trellis node proxy. It is a thin main: it
// parses flags, builds the logger, picks a config Source (a static file,
// --config, or the controller stream, --controller) and runs node-proxy/server
// until SIGTERM/SIGINT, reloading the file on SIGHUP.
//
// Imports: node-proxy/server, node-proxy/source, node-proxy/telemetry,
// node-proxy/httpproxy, zap, the standard library.
package main
