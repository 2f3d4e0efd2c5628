package telemetry

import (
	"encoding/hex"
	"math/rand/v2"
)

// TraceContext is a parsed W3C traceparent.
type TraceContext struct {
	TraceID [16]byte
	SpanID  [8]byte // the parent-id field
	Flags   byte
}

// FlagSampled is the sampled bit of the trace-flags field.
const FlagSampled byte = 0x01

// Sampled reports whether the sampled flag is set.
func (tc TraceContext) Sampled() bool { return tc.Flags&FlagSampled != 0 }

// ParseTraceparent parses a traceparent header value (W3C Trace Context
// level 1). Version 00 must be exactly 55 characters; higher versions may
// carry more fields after a '-'. Version ff, all-zero ids and upper-case hex
// are invalid.
func ParseTraceparent(s string) (TraceContext, bool) {
	var tc TraceContext
	if len(s) < 55 || s[2] != '-' || s[35] != '-' || s[52] != '-' {
		return tc, false
	}
	ver, ok := hexByte(s[0], s[1])
	if !ok || ver == 0xff {
		return tc, false
	}
	if ver == 0 && len(s) != 55 {
		return tc, false
	}
	if len(s) > 55 && s[55] != '-' {
		return tc, false
	}
	if !decodeLower(tc.TraceID[:], s[3:35]) || !decodeLower(tc.SpanID[:], s[36:52]) {
		return tc, false
	}
	f, ok := hexByte(s[53], s[54])
	if !ok {
		return tc, false
	}
	tc.Flags = f
	if tc.TraceID == ([16]byte{}) || tc.SpanID == ([8]byte{}) {
		return tc, false
	}
	return tc, true
}

func hexVal(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

func hexByte(a, b byte) (byte, bool) {
	x, ok1 := hexVal(a)
	y, ok2 := hexVal(b)
	return x<<4 | y, ok1 && ok2
}

func decodeLower(dst []byte, s string) bool {
	for i := range dst {
		v, ok := hexByte(s[2*i], s[2*i+1])
		if !ok {
			return false
		}
		dst[i] = v
	}
	return true
}

// String formats tc as a version-00 traceparent.
func (tc TraceContext) String() string {
	var b [55]byte
	return string(tc.AppendTo(b[:0]))
}

// AppendTo appends tc as a version-00 traceparent to b.
func (tc TraceContext) AppendTo(b []byte) []byte {
	n := len(b)
	b = append(b, "00-00000000000000000000000000000000-0000000000000000-00"...)
	hex.Encode(b[n+3:n+35], tc.TraceID[:])
	hex.Encode(b[n+36:n+52], tc.SpanID[:])
	hex.Encode(b[n+53:n+55], []byte{tc.Flags})
	return b
}

// TraceIDString returns the trace id in hex.
func (tc TraceContext) TraceIDString() string { return hex.EncodeToString(tc.TraceID[:]) }

// Child returns the context to send upstream: same trace and flags, a new
// span id for the proxy's hop. When in is not valid a new trace is started
// (not sampled), so the backend can still correlate logs.
func Child(in string) (out TraceContext, parent [8]byte, continued bool) {
	tc, ok := ParseTraceparent(in)
	if ok {
		parent = tc.SpanID
	} else {
		tc = TraceContext{}
		for tc.TraceID == ([16]byte{}) {
			putU64(tc.TraceID[:8], rand.Uint64())
			putU64(tc.TraceID[8:], rand.Uint64())
		}
	}
	for {
		putU64(tc.SpanID[:], rand.Uint64())
		if tc.SpanID != ([8]byte{}) {
			break
		}
	}
	return tc, parent, ok
}

func putU64(b []byte, v uint64) {
	for i := 0; i < 8; i++ {
		b[i] = byte(v >> (56 - 8*i))
	}
}
