package telemetry

import (
	"encoding/hex"
	"net/netip"
	"strings"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/protobuf/proto"
)

func attrString(kvs []*commonpb.KeyValue, key string) (string, bool) {
	for _, kv := range kvs {
		if kv.GetKey() == key {
			return kv.GetValue().GetStringValue(), true
		}
	}
	return "", false
}

// FuzzSpanEncoding: whatever a request carries, the encoded request
// decodes with the collector's own types, and says what was recorded
// (invalid UTF-8 replaced, as protobuf strings must be UTF-8).
func FuzzSpanEncoding(f *testing.F) {
	f.Add("GET", "api.shop.mesh", "/items/7", "", 200, int64(42), true)
	f.Add("PURGE", "[fd00::1]:8080", "/a%ffb\xff", "no access rule allows shop/web", 403, int64(0), false)
	f.Add("", "", "", "timeout", 0, int64(-1), true)
	f.Fuzz(func(t *testing.T, method, host, path, reason string, status int, bytesOut int64, parent bool) {
		tc, _, _ := Child("")
		tc.Flags = FlagSampled
		s := &HTTPSpan{Trace: tc, Start: time.Unix(1, 2), End: time.Unix(3, 4), Proto: "HTTP/1.1", Method: method, Host: host, Path: path,
			Status: status, BytesOut: bytesOut, ClientIP: netip.MustParseAddr("10.0.0.1"), Reason: reason, ProxyFailure: reason != ""}
		if reason != "" {
			s.ErrorClass = "denied"
		}
		if parent {
			s.Parent = [8]byte{1, 2, 3, 4, 5, 6, 7, 8}
		}
		enc := newOTLPEncoder(map[string]string{"service.name": "trellis-proxy", "bad\xff": "v\xfe"}, InstrumentationScope)
		raw := enc.encode([]*HTTPSpan{s, s})
		var req coltracepb.ExportTraceServiceRequest
		if err := proto.Unmarshal(raw, &req); err != nil {
			t.Fatalf("collector types cannot decode the request: %v", err)
		}
		rs := req.GetResourceSpans()
		if len(rs) != 1 || len(rs[0].GetScopeSpans()) != 1 || len(rs[0].GetScopeSpans()[0].GetSpans()) != 2 {
			t.Fatalf("shape: %v", &req)
		}
		if rs[0].GetScopeSpans()[0].GetScope().GetName() != InstrumentationScope {
			t.Fatalf("scope %v", rs[0].GetScopeSpans()[0].GetScope())
		}
		got := rs[0].GetScopeSpans()[0].GetSpans()[1]
		if hex.EncodeToString(got.GetTraceId()) != tc.TraceIDString() || hex.EncodeToString(got.GetSpanId()) != hex.EncodeToString(tc.SpanID[:]) {
			t.Fatalf("ids %x/%x", got.GetTraceId(), got.GetSpanId())
		}
		if parent != (len(got.GetParentSpanId()) == 8) || got.GetStartTimeUnixNano() != 1e9+2 || got.GetEndTimeUnixNano() != 3e9+4 {
			t.Fatalf("parent %x times %d %d", got.GetParentSpanId(), got.GetStartTimeUnixNano(), got.GetEndTimeUnixNano())
		}
		if v, _ := attrString(got.GetAttributes(), "url.path"); v != strings.ToValidUTF8(path, "\uFFFD") {
			t.Fatalf("url.path %q for %q", v, path)
		}
		if wantErr := reason != "" || status >= 500; wantErr != (got.GetStatus().GetCode() == 2) {
			t.Fatalf("status %v for reason %q status %d", got.GetStatus(), reason, status)
		}
	})
}

// TestEncodingAllocations: encoding a batch reuses the encoder's buffers.
func TestEncodingAllocations(t *testing.T) {
	tc, _, _ := Child("")
	s := &HTTPSpan{Trace: tc, Start: time.Now(), End: time.Now(), Proto: "HTTP/1.1", Method: "GET", Host: "api.shop.mesh:80", Path: "/items",
		Status: 200, ClientIP: netip.MustParseAddr("10.0.0.1"), SourceNamespace: "shop", DestService: "api", Attempts: 1}
	batch := []*HTTPSpan{s, s, s, s}
	enc := newOTLPEncoder(map[string]string{"service.name": "trellis-proxy"}, InstrumentationScope)
	enc.encode(batch)
	if n := testing.AllocsPerRun(100, func() { enc.encode(batch) }); n > 4 {
		t.Fatalf("%v allocations per batch of 4, want at most 4 (client.address)", n)
	}
}
