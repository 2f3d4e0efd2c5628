// Command gen writes the symbol tables of node-proxy/plugin/symbols: one
// file per standard-library package named on the command line, produced by
// yaegi's own extractor (github.com/traefik/yaegi/extract, what `yaegi
// extract` runs), and a registry listing them.
//
// The extractor writes a file whose init function stores the package's
// table into a package variable. gen turns that function into one that
// stores into the Table it is given, so that nothing runs at program start
// and the package keeps no state: symbols.Build calls the functions, and
// node-proxy/plugin calls Build once, on the first plugin load. gen also
// drops the extractor's Go-version build constraint: the registry refers
// to every file, so they must all build, and it records the Go release
// instead (symbols.GoVersion).
//
// Usage, from node-proxy/plugin/symbols (see its go:generate line):
//
//	go run ./internal/gen [-o dir] package...
//
// Files of packages no longer listed are removed.
//
// Stage: build time only (go generate). Imports: yaegi's extract package,
// the standard library.
package main
