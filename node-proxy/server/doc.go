// Package server runs a node proxy: it receives whole configs from a Source,
// builds each aside (runtime.Build) and binds any new listener ports before
// swapping it in atomically, so a config that fails to build or bind is
// rejected whole and the old one keeps serving; an unchanged version is a
// no-op. Removed listeners stop accepting while their connections finish.
// On shutdown it fails readiness first, keeps serving for the drain period,
// then closes idle connections and waits for in-flight ones.
//
// Stage: top of node-proxy; wires config → runtime → listeners → forward.
// Imports: every node-proxy package, zap, the standard library.
package server
