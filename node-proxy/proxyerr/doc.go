// Package proxyerr classifies every failure the proxy can meet into one
// Class, and maps each Class to exactly one HTTP status. It is the only place
// that decides which status a failure gets (timeout 504, no endpoint 503,
// refused/reset 502, rate limited 429, denied 403, ...).
//
// Stage: leaf used by the HTTP and L4 data paths and by telemetry.
// Imports: the standard library only.
package proxyerr
