package telemetry

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// The OTLP/HTTP transport (OTLP specification, "OTLP/HTTP"): binary
// protobuf, gzip, POST to .../v1/traces, retry on 429/502/503/504 and
// network errors with backoff and Retry-After.
//
// It is written here rather than taken from otlptracehttp because that
// package imports go.opentelemetry.io/proto/otlp/collector/trace/v1, whose
// generated gRPC and grpc-gateway code links google.golang.org/grpc and
// grpc-gateway into the proxy: +7.7 MB of binary and about +4 MB RSS for
// every proxy, tracing on or off, which breaks the proxy's 20 MB budget.
// The request is encoded in otlpenc.go; the answer's partial_success and
// an error answer's google.rpc.Status message are read here, with
// protowire, the same way.

// DefaultOTLPTracesPath is appended to an endpoint URL that has no path.
const DefaultOTLPTracesPath = "/v1/traces"

// ParseOTLPEndpoint checks a collector URL: http or https, a host, no
// query or fragment. A URL without a path (http://collector:4318) gets
// /v1/traces; a URL with one is used as given.
func ParseOTLPEndpoint(s string) (*url.URL, error) {
	if s == "" {
		return nil, errors.New("empty URL; give the collector's OTLP/HTTP address, e.g. http://otel-collector.observability:4318")
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("%q is not a URL: %w", s, err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("%q: scheme must be http or https (OTLP/HTTP, port 4318 by default; OTLP/gRPC is not supported)", s)
	case u.Host == "" || u.Hostname() == "":
		return nil, fmt.Errorf("%q: no host; e.g. http://otel-collector.observability:4318", s)
	case u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		return nil, fmt.Errorf("%q: a query or fragment is not allowed", s)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("%q: port must be 1-65535", s)
		}
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = DefaultOTLPTracesPath
	}
	return u, nil
}

// OTLPHeadersFromEnv reads the export headers of the OpenTelemetry
// environment variables OTEL_EXPORTER_OTLP_HEADERS and (taking precedence)
// OTEL_EXPORTER_OTLP_TRACES_HEADERS: comma-separated key=value pairs,
// values URL-encoded.
func OTLPHeadersFromEnv() (map[string]string, error) {
	h := map[string]string{}
	for _, name := range []string{"OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"} {
		if err := parseOTLPHeaders(os.Getenv(name), h); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	return h, nil
}

func parseOTLPHeaders(s string, into map[string]string) error {
	for pair := range strings.SplitSeq(s, ",") {
		if strings.TrimSpace(pair) == "" {
			continue
		}
		k, v, ok := strings.Cut(pair, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return fmt.Errorf("%q is not key=value", pair)
		}
		val, err := url.PathUnescape(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("value of %q: %w", k, err)
		}
		if !validHeaderName(k) || strings.ContainsAny(val, "\r\n\x00") {
			return fmt.Errorf("%q is not a valid header", k)
		}
		into[k] = val
	}
	return nil
}

func validHeaderName(k string) bool {
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

// otlpClient sends ExportTraceServiceRequests to one collector URL.
type otlpClient struct {
	url     string
	headers http.Header
	tr      *http.Transport
	hc      *http.Client
	gz      *gzip.Writer // reused; upload is called by one goroutine
}

// Retry backoff between export attempts (doubling), within the export's
// deadline.
const (
	otlpFirstBackoff = 250 * time.Millisecond
	otlpMaxBackoff   = 5 * time.Second
	otlpMaxRespBody  = 64 << 10
)

func newOTLPClient(u *url.URL, headers map[string]string) *otlpClient {
	tr := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:     &tls.Config{MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout: 5 * time.Second,
		MaxIdleConnsPerHost: 2,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   true,
	}
	h := http.Header{}
	for k, v := range headers {
		h.Set(k, v)
	}
	h.Set("Content-Type", "application/x-protobuf")
	h.Set("Content-Encoding", "gzip")
	h.Set("User-Agent", "trellis-proxy (OTLP/HTTP trace exporter)")
	return &otlpClient{url: u.String(), headers: h, tr: tr, hc: &http.Client{Transport: tr}}
}

func (c *otlpClient) close() { c.tr.CloseIdleConnections() }

// partialSuccessError is a collector's answer that it accepted only part
// of a request (ExportTracePartialSuccess).
type partialSuccessError struct {
	rejected int64
	message  string
}

func (e *partialSuccessError) Error() string {
	return fmt.Sprintf("collector rejected %d spans: %s", e.rejected, e.message)
}

// upload sends one encoded ExportTraceServiceRequest, retrying what the
// specification says may be retried, until ctx ends. One goroutine calls it.
func (c *otlpClient) upload(ctx context.Context, raw []byte) error {
	body, err := c.compress(raw)
	if err != nil {
		return fmt.Errorf("compress spans: %w", err)
	}
	backoff := otlpFirstBackoff
	for {
		retryAfter, err := c.post(ctx, body)
		if err == nil || retryAfter < 0 {
			return err
		}
		wait := max(backoff, retryAfter)
		backoff = min(2*backoff, otlpMaxBackoff)
		if d, ok := ctx.Deadline(); ok && time.Until(d) < wait {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}

// compress gzips an encoded request into a new buffer (the transport may
// still read a request body after the round trip returns).
func (c *otlpClient) compress(raw []byte) ([]byte, error) {
	buf := bytes.NewBuffer(make([]byte, 0, len(raw)/4+64))
	if c.gz == nil {
		// Fastest level: its tables are a fraction of the default level's.
		c.gz, _ = gzip.NewWriterLevel(buf, gzip.BestSpeed)
	} else {
		c.gz.Reset(buf)
	}
	if _, err := c.gz.Write(raw); err != nil {
		return nil, err
	}
	if err := c.gz.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// post sends one request. retryAfter is < 0 when the outcome is final,
// otherwise the least wait before another try (0: use the backoff).
func (c *otlpClient) post(ctx context.Context, body []byte) (retryAfter time.Duration, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		return -1, err
	}
	req.Header = c.headers.Clone()
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return -1, err
		}
		return 0, err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, otlpMaxRespBody))
	switch code := resp.StatusCode; {
	case code >= 200 && code < 300:
		if rejected, msg := partialSuccess(data); rejected > 0 || msg != "" {
			return -1, &partialSuccessError{rejected: rejected, message: msg}
		}
		return -1, nil
	case code == http.StatusTooManyRequests || code == http.StatusBadGateway ||
		code == http.StatusServiceUnavailable || code == http.StatusGatewayTimeout:
		return parseRetryAfter(resp.Header.Get("Retry-After")), fmt.Errorf("collector answered %s%s", resp.Status, statusMessage(data))
	default:
		return -1, fmt.Errorf("collector answered %s%s", resp.Status, statusMessage(data))
	}
}

func parseRetryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil && n >= 0 {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}

// partialSuccess reads ExportTraceServiceResponse.partial_success
// (field 1: rejected_spans = 1, error_message = 2).
func partialSuccess(b []byte) (rejected int64, msg string) {
	ps := protoField(b, 1)
	if ps == nil {
		return 0, ""
	}
	for len(ps) > 0 {
		num, typ, n := protowire.ConsumeTag(ps)
		if n < 0 {
			return rejected, msg
		}
		ps = ps[n:]
		switch {
		case num == 1 && typ == protowire.VarintType:
			v, m := protowire.ConsumeVarint(ps)
			if m < 0 {
				return rejected, msg
			}
			rejected, ps = int64(v), ps[m:]
		case num == 2 && typ == protowire.BytesType:
			v, m := protowire.ConsumeBytes(ps)
			if m < 0 {
				return rejected, msg
			}
			msg, ps = string(v), ps[m:]
		default:
			m := protowire.ConsumeFieldValue(num, typ, ps)
			if m < 0 {
				return rejected, msg
			}
			ps = ps[m:]
		}
	}
	return rejected, msg
}

// statusMessage reads google.rpc.Status.message (field 2) from an error
// answer, for the log.
func statusMessage(b []byte) string {
	if m := protoField(b, 2); len(m) > 0 {
		s := string(m)
		if len(s) > 200 {
			s = s[:200]
		}
		return ": " + strconv.Quote(s)
	}
	return ""
}

// protoField returns the last length-delimited field num of message b.
func protoField(b []byte, num protowire.Number) []byte {
	var out []byte
	for len(b) > 0 {
		n, typ, m := protowire.ConsumeTag(b)
		if m < 0 {
			return out
		}
		b = b[m:]
		if n == num && typ == protowire.BytesType {
			v, k := protowire.ConsumeBytes(b)
			if k < 0 {
				return out
			}
			out, b = v, b[k:]
			continue
		}
		k := protowire.ConsumeFieldValue(n, typ, b)
		if k < 0 {
			return out
		}
		b = b[k:]
	}
	return out
}
