package otlptest

import (
	"compress/gzip"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// Span is one received span with its resource and scope.
type Span struct {
	*tracepb.Span
	Resource map[string]string
	Scope    string
}

// TraceID is the span's trace id in hex.
func (s Span) TraceID() string { return hex.EncodeToString(s.GetTraceId()) }

// SpanID is the span's id in hex.
func (s Span) SpanID() string { return hex.EncodeToString(s.GetSpanId()) }

// ParentID is the parent span id in hex ("" for a root span).
func (s Span) ParentID() string { return hex.EncodeToString(s.GetParentSpanId()) }

// Attr returns attribute key as a string (ints in decimal).
func (s Span) Attr(key string) (string, bool) { return attr(s.GetAttributes(), key) }

// Attrs returns every attribute as a string.
func (s Span) Attrs() map[string]string {
	m := map[string]string{}
	for _, kv := range s.GetAttributes() {
		m[kv.GetKey()], _ = attr([]*commonpb.KeyValue{kv}, kv.GetKey())
	}
	return m
}

func attr(kvs []*commonpb.KeyValue, key string) (string, bool) {
	for _, kv := range kvs {
		if kv.GetKey() != key {
			continue
		}
		switch v := kv.GetValue().GetValue().(type) {
		case *commonpb.AnyValue_StringValue:
			return v.StringValue, true
		case *commonpb.AnyValue_IntValue:
			return strconv.FormatInt(v.IntValue, 10), true
		case *commonpb.AnyValue_BoolValue:
			return strconv.FormatBool(v.BoolValue), true
		case *commonpb.AnyValue_DoubleValue:
			return strconv.FormatFloat(v.DoubleValue, 'g', -1, 64), true
		}
		return kv.GetValue().String(), true
	}
	return "", false
}

// Answer is what the receiver says to one export request.
type Answer struct {
	Status int
	Header http.Header
	Body   []byte
}

// Receiver is an OTLP/HTTP trace collector on a real socket.
type Receiver struct {
	// URL is the base URL (http://127.0.0.1:port); exporters add /v1/traces.
	URL string

	answer func(n int) Answer

	mu       sync.Mutex
	spans    []Span
	requests int
	paths    []string
	header   http.Header
	errs     []string
	changed  chan struct{} // closed and replaced on every request
}

// NewReceiver starts a receiver. answer, if not nil, chooses the answer to
// the n-th request (from 1); spans are kept only from requests answered
// with 2xx. By default every request gets 200 and an empty response.
func NewReceiver(t testing.TB, answer func(n int) Answer) *Receiver {
	t.Helper()
	r := &Receiver{answer: answer, changed: make(chan struct{})}
	srv := httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(srv.Close)
	r.URL = srv.URL
	return r
}

func (r *Receiver) serve(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	r.requests++
	n := r.requests
	r.paths = append(r.paths, req.URL.Path)
	r.header = req.Header.Clone()
	r.mu.Unlock()
	defer r.notify()
	spans, err := decode(req)
	if err != nil {
		r.mu.Lock()
		r.errs = append(r.errs, err.Error())
		r.mu.Unlock()
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	a := Answer{Status: http.StatusOK}
	if r.answer != nil {
		a = r.answer(n)
	}
	if a.Status >= 200 && a.Status < 300 {
		r.mu.Lock()
		r.spans = append(r.spans, spans...)
		r.mu.Unlock()
	}
	for k, vv := range a.Header {
		w.Header()[k] = vv
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.WriteHeader(a.Status)
	_, _ = w.Write(a.Body)
}

func (r *Receiver) notify() {
	r.mu.Lock()
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
}

// decode checks an export request the way a collector does and returns
// its spans.
func decode(req *http.Request) ([]Span, error) {
	if req.Method != http.MethodPost {
		return nil, fmt.Errorf("method %s, want POST", req.Method)
	}
	if ct := req.Header.Get("Content-Type"); ct != "application/x-protobuf" {
		return nil, fmt.Errorf("content-type %q, want application/x-protobuf", ct)
	}
	var body io.Reader = req.Body
	switch enc := req.Header.Get("Content-Encoding"); enc {
	case "":
	case "gzip":
		zr, err := gzip.NewReader(req.Body)
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		body = zr
	default:
		return nil, fmt.Errorf("content-encoding %q", enc)
	}
	b, err := io.ReadAll(body)
	if err != nil {
		return nil, fmt.Errorf("read body: %w", err)
	}
	var msg coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(b, &msg); err != nil {
		return nil, fmt.Errorf("decode ExportTraceServiceRequest: %w", err)
	}
	var out []Span
	for _, rs := range msg.GetResourceSpans() {
		res := map[string]string{}
		for _, kv := range rs.GetResource().GetAttributes() {
			res[kv.GetKey()], _ = attr([]*commonpb.KeyValue{kv}, kv.GetKey())
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				out = append(out, Span{Span: s, Resource: res, Scope: ss.GetScope().GetName()})
			}
		}
	}
	return out, nil
}

// Spans returns the spans received so far.
func (r *Receiver) Spans() []Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Span(nil), r.spans...)
}

// Requests returns how many export requests arrived, and their paths.
func (r *Receiver) Requests() (int, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.requests, append([]string(nil), r.paths...)
}

// LastHeader returns the header of the latest export request.
func (r *Receiver) LastHeader() http.Header {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.header.Clone()
}

// WaitRequests waits until at least n export requests arrived (whatever
// the answer), failing the test at the deadline.
func (r *Receiver) WaitRequests(t testing.TB, n int, timeout time.Duration) {
	t.Helper()
	r.wait(t, timeout, fmt.Sprintf("%d export requests", n), func() bool { return r.requests >= n })
}

// WaitSpans waits until at least n spans were accepted and returns all
// received, failing the test at the deadline or if a request was
// malformed.
func (r *Receiver) WaitSpans(t testing.TB, n int, timeout time.Duration) []Span {
	t.Helper()
	r.wait(t, timeout, fmt.Sprintf("%d spans", n), func() bool { return len(r.spans) >= n })
	return r.Spans()
}

func (r *Receiver) wait(t testing.TB, timeout time.Duration, what string, done func() bool) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		ok, errs, ch := done(), r.errs, r.changed
		got, reqs := len(r.spans), r.requests
		r.mu.Unlock()
		if len(errs) > 0 {
			t.Fatalf("malformed export request: %v", errs)
		}
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("waited %v for %s; got %d spans in %d requests", timeout, what, got, reqs)
		}
	}
}

// PartialSuccess is the body of a collector answer that rejected some
// spans.
func PartialSuccess(rejected int64, message string) []byte {
	b, err := proto.Marshal(&coltracepb.ExportTraceServiceResponse{PartialSuccess: &coltracepb.ExportTracePartialSuccess{
		RejectedSpans: rejected, ErrorMessage: message}})
	if err != nil {
		panic(err)
	}
	return b
}

// BlackHole returns the URL of a collector that accepts connections and
// never answers (a hung collector). Connections are closed at cleanup.
func BlackHole(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return "http://" + l.Addr().String()
}

// Refused returns the URL of a port where nothing listens.
func Refused(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}
