package telemetry

import (
	"maps"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// The OTLP protobuf encoding of spans (opentelemetry/proto/trace/v1,
// common/v1, resource/v1, collector/trace/v1), written straight into
// reused buffers: no message objects per span, so a fully sampled proxy
// does not hold a batch's worth of them. Field numbers are the .proto's;
// the tests decode the output with the generated collector types.

// Field numbers.
const (
	fReqResourceSpans = 1 // ExportTraceServiceRequest.resource_spans

	fRSResource   = 1 // ResourceSpans.resource
	fRSScopeSpans = 2 // ResourceSpans.scope_spans
	fResAttrs     = 1 // Resource.attributes
	fSSScope      = 1 // ScopeSpans.scope
	fSSSpans      = 2 // ScopeSpans.spans
	fScopeName    = 1 // InstrumentationScope.name

	fSpanTraceID = 1
	fSpanSpanID  = 2
	fSpanParent  = 4
	fSpanName    = 5
	fSpanKind    = 6
	fSpanStart   = 7
	fSpanEnd     = 8
	fSpanAttrs   = 9
	fSpanStatus  = 15
	fSpanFlags   = 16

	fStatusMessage = 2
	fStatusCode    = 3

	fKVKey   = 1
	fKVValue = 2
	fAnyStr  = 1
	fAnyInt  = 3

	spanKindServer  = 2 // Span.SpanKind SPAN_KIND_SERVER
	statusCodeError = 2 // Status.StatusCode STATUS_CODE_ERROR

	// SpanFlags: the low byte is the W3C trace flags; these say the
	// parent's remoteness is known, and that it is remote.
	spanFlagsHasIsRemote = 0x100
	spanFlagsIsRemote    = 0x200
)

// otlpEncoder builds ExportTraceServiceRequests. One goroutine uses it.
type otlpEncoder struct {
	resource []byte // ResourceSpans.resource field, encoded once
	scope    []byte // ScopeSpans.scope field, encoded once
	spans    []byte // the spans of the request being built
	span     []byte // one span
	req      []byte // the request
}

// newOTLPEncoder encodes the resource (attributes sorted by key) and the
// instrumentation scope once.
func newOTLPEncoder(resource map[string]string, scope string) *otlpEncoder {
	var res []byte
	for _, k := range slices.Sorted(maps.Keys(resource)) {
		res = appendStrAttr(res, fResAttrs, k, resource[k])
	}
	e := &otlpEncoder{}
	e.resource = protowire.AppendBytes(protowire.AppendTag(nil, fRSResource, protowire.BytesType), res)
	sc := protowire.AppendString(protowire.AppendTag(nil, fScopeName, protowire.BytesType), scope)
	e.scope = protowire.AppendBytes(protowire.AppendTag(nil, fSSScope, protowire.BytesType), sc)
	return e
}

// encode returns the ExportTraceServiceRequest for batch. The result is
// valid until the next call.
func (e *otlpEncoder) encode(batch []*HTTPSpan) []byte {
	e.spans = e.spans[:0]
	for _, s := range batch {
		e.span = appendSpan(e.span[:0], s)
		e.spans = protowire.AppendTag(e.spans, fSSSpans, protowire.BytesType)
		e.spans = protowire.AppendBytes(e.spans, e.span)
	}
	scopeSpans := len(e.scope) + len(e.spans)
	resourceSpans := len(e.resource) + protowire.SizeTag(fRSScopeSpans) + protowire.SizeBytes(scopeSpans)
	b := e.req[:0]
	b = protowire.AppendTag(b, fReqResourceSpans, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(resourceSpans))
	b = append(b, e.resource...)
	b = protowire.AppendTag(b, fRSScopeSpans, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(scopeSpans))
	b = append(b, e.scope...)
	b = append(b, e.spans...)
	e.req = b
	// Keep the buffers of a large batch from pinning memory forever.
	if cap(e.spans) > 1<<20 {
		e.spans = nil
	}
	return b
}

// appendSpan encodes one SERVER span following the OpenTelemetry HTTP
// server span conventions, plus trellis.* attributes for what the mesh
// decided.
func appendSpan(b []byte, s *HTTPSpan) []byte {
	method, original, known := normalizeMethod(s.Method)
	name := method
	if !known {
		name = "HTTP"
	}
	b = appendBytesField(b, fSpanTraceID, s.Trace.TraceID[:])
	b = appendBytesField(b, fSpanSpanID, s.Trace.SpanID[:])
	flags := uint32(s.Trace.Flags) | spanFlagsHasIsRemote
	if s.Parent != ([8]byte{}) {
		b = appendBytesField(b, fSpanParent, s.Parent[:])
		flags |= spanFlagsIsRemote
	}
	b = appendStringField(b, fSpanName, name)
	b = protowire.AppendTag(b, fSpanKind, protowire.VarintType)
	b = protowire.AppendVarint(b, spanKindServer)
	b = protowire.AppendTag(b, fSpanStart, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, uint64(s.Start.UnixNano()))
	b = protowire.AppendTag(b, fSpanEnd, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, uint64(s.End.UnixNano()))
	b = appendSpanAttributes(b, s, method, original)
	if s.ProxyFailure || s.Status >= 500 {
		msg := validUTF8(s.Reason)
		if msg == "" && s.ErrorClass == "" {
			msg = "upstream answered " + strconv.Itoa(s.Status)
		}
		st := protowire.SizeTag(fStatusMessage) + protowire.SizeBytes(len(msg)) +
			protowire.SizeTag(fStatusCode) + protowire.SizeVarint(statusCodeError)
		b = protowire.AppendTag(b, fSpanStatus, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(st))
		b = appendStringField(b, fStatusMessage, msg)
		b = protowire.AppendTag(b, fStatusCode, protowire.VarintType)
		b = protowire.AppendVarint(b, statusCodeError)
	}
	b = protowire.AppendTag(b, fSpanFlags, protowire.Fixed32Type)
	return protowire.AppendFixed32(b, flags)
}

func appendSpanAttributes(b []byte, s *HTTPSpan, method, original string) []byte {
	str := func(k, v string) {
		if v != "" {
			b = appendStrAttr(b, fSpanAttrs, k, v)
		}
	}
	num := func(k string, v int64) { b = appendIntAttr(b, fSpanAttrs, k, v) }
	str("http.request.method", method)
	str("http.request.method_original", original)
	str("url.scheme", "http")
	str("url.path", s.Path)
	str("network.protocol.name", "http")
	str("network.protocol.version", protocolVersion(s.Proto))
	if host, port := splitHost(s.Host); host != "" {
		str("server.address", host)
		num("server.port", int64(port))
	}
	if s.ClientIP.IsValid() {
		var ip [64]byte
		str("client.address", string(s.ClientIP.AppendTo(ip[:0])))
	}
	if s.Status > 0 {
		num("http.response.status_code", int64(s.Status))
		num("http.response.body.size", s.BytesOut)
	}
	switch {
	case s.ErrorClass != "":
		str("error.type", s.ErrorClass)
	case s.Status >= 500:
		str("error.type", strconv.Itoa(s.Status))
	}
	str("trellis.source.namespace", s.SourceNamespace)
	str("trellis.source.service_account", s.SourceServiceAccount)
	str("trellis.source.pod", s.SourcePod)
	str("trellis.source.service", s.SourceService)
	str("trellis.destination.namespace", s.DestNamespace)
	str("trellis.destination.service", s.DestService)
	str("trellis.backend", s.Backend)
	str("trellis.upstream.address", s.Upstream)
	if s.Attempts > 0 {
		num("trellis.attempts", int64(s.Attempts))
	}
	str("trellis.error.class", s.ErrorClass)
	str("trellis.error.reason", s.Reason)
	return b
}

func appendBytesField(b []byte, num protowire.Number, v []byte) []byte {
	return protowire.AppendBytes(protowire.AppendTag(b, num, protowire.BytesType), v)
}

// appendStringField appends a string field. Protobuf strings must be
// UTF-8 (decoders reject the whole message otherwise), and a request path
// or header need not be: invalid bytes become U+FFFD.
func appendStringField(b []byte, num protowire.Number, v string) []byte {
	return protowire.AppendString(protowire.AppendTag(b, num, protowire.BytesType), validUTF8(v))
}

func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// appendStrAttr appends field num: KeyValue{key, AnyValue{string_value}}.
func appendStrAttr(b []byte, num protowire.Number, k, v string) []byte {
	k, v = validUTF8(k), validUTF8(v)
	anyLen := protowire.SizeTag(fAnyStr) + protowire.SizeBytes(len(v))
	kvLen := protowire.SizeTag(fKVKey) + protowire.SizeBytes(len(k)) + protowire.SizeTag(fKVValue) + protowire.SizeBytes(anyLen)
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(kvLen))
	b = appendStringField(b, fKVKey, k)
	b = protowire.AppendTag(b, fKVValue, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(anyLen))
	return appendStringField(b, fAnyStr, v)
}

// appendIntAttr appends field num: KeyValue{key, AnyValue{int_value}}.
func appendIntAttr(b []byte, num protowire.Number, k string, v int64) []byte {
	k = validUTF8(k)
	anyLen := protowire.SizeTag(fAnyInt) + protowire.SizeVarint(uint64(v))
	kvLen := protowire.SizeTag(fKVKey) + protowire.SizeBytes(len(k)) + protowire.SizeTag(fKVValue) + protowire.SizeBytes(anyLen)
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(kvLen))
	b = appendStringField(b, fKVKey, k)
	b = protowire.AppendTag(b, fKVValue, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(anyLen))
	b = protowire.AppendTag(b, fAnyInt, protowire.VarintType)
	return protowire.AppendVarint(b, uint64(v))
}
