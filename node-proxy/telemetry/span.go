package telemetry

import (
	"net/netip"
	"time"
)

// HTTPSpan is what the data path knows about one finished, sampled HTTP
// request: plain values, filled after the fact, so that recording a span
// threads nothing through the request path. A Tracer turns it into one
// SERVER span.
type HTTPSpan struct {
	// Trace is this hop's context: the trace id and span id the proxy
	// sent upstream in traceparent (or would have, for a request it
	// answered itself). Parent is the caller's span id; zero when the
	// proxy started the trace.
	Trace  TraceContext
	Parent [8]byte

	Start, End time.Time

	// The request as received. Proto is "HTTP/1.1", "HTTP/2.0", ...
	Proto, Method, Host, Path string
	// Status is the status sent to the client; 0 when none was (the
	// client went away first).
	Status   int
	BytesOut int64
	ClientIP netip.Addr

	// Source workload, when the client address is a pod on this node.
	SourceNamespace, SourceServiceAccount, SourcePod, SourceService string

	// Destination: the Service addressed, the backend the split chose
	// ("namespace/name"), the pod address forwarded to, and how many
	// attempts were made.
	DestNamespace, DestService string
	Backend                    string
	Upstream                   string
	Attempts                   int

	// ErrorClass is the proxy's failure class ("denied", "timeout", ...;
	// "" when the request went through), Reason its explanation.
	// ProxyFailure is set for failures of the request as a whole
	// (everything but the client going away), which mark the span as an
	// error even below 500 (a 403 denial, a 429 rate limit).
	ErrorClass   string
	Reason       string
	ProxyFailure bool
}
