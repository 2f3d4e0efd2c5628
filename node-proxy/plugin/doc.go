// Package plugin loads middleware plugins written in Go and runs them with
// the yaegi interpreter, under Traefik's plugin contract:
//
//	func CreateConfig() *Config
//	func New(ctx context.Context, next http.Handler, config *Config, name string) (http.Handler, error)
//
// NewSet compiles each plugin of a config from the source the config
// carries (served to the interpreter from memory, laid out as a GOPATH),
// once per source: the next runtime's Set reuses what did not change. The
// source is checked first: only allow-listed standard-library packages
// (allow.go), the plugin's own module and its vendor/ directory may be
// imported, and go statements are rewritten to run under a recover. Each
// interpreter gets its own copy of package variables and its own HTTP
// client, so a plugin cannot swap what the proxy uses. The interpreter sees
// the allowed packages through tables generated for exactly the allow-list
// (package symbols), built on the first plugin load: a proxy without
// plugins never runs or pages in that code.
//
// Set.Chains instantiates a Service's plugins, once per runtime (reused
// while unchanged), as one Chain per stage. Chain.Serve runs a request
// through it: plugin code runs on its own goroutine, a panic becomes a
// 500, code running past the timeout (time in next excluded) becomes a 504
// and its goroutine is abandoned behind a ResponseWriter that no longer
// writes. A plugin that fails to load, or whose New fails, is skipped or
// refuses the Service with 503, by its failure policy (Decide).
//
// Stage: config → middleware (plugins), used by runtime and the HTTP
// listener. Imports: node-proxy/config, node-proxy/proxyerr,
// node-proxy/plugin/symbols, yaegi's interp and stdlib/generic (the source
// of cmp, maps and slices, compiled only into plugins importing them), never
// yaegi's stdlib package; prometheus client_golang, zap, the standard
// library.
package plugin
