// Package runtime compiles a config.Config into an immutable, ready-to-serve
// routing table (Runtime): host and port lookup, split choice, access
// decisions, endpoint pools, breakers, limiters and retry policies. A new
// Runtime is built aside from the live one (reusing its live state: endpoint
// health, breakers, buckets, budgets, where the settings did not change) and
// swapped atomically by Holder; in-flight work keeps the Runtime it started
// with. Routing decisions do not allocate. Identical HTTP match specs are
// compiled once and shared (across rules, services and reloads). Plugins
// are compiled once per source (node-proxy/plugin) and each HTTP route of
// a Service with plugins carries its instantiated chains (Route.Plugins);
// a plugin that does not load is recorded (PluginErrors), never a failed
// Build.
//
// Stage: config → runtime. Used by the listeners (httpproxy, l4).
// Imports: node-proxy/config, balance, resilience, plugin, proxyerr,
// smi/match, golang.org/x/time/rate, the standard library.
package runtime
