package telemetry

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Why not the OpenTelemetry Go SDK: linked into the proxy, sdk/trace and
// the API it pulls in (attribute, trace, global, slog, logr, auto/sdk,
// semconv) add about 0.9 MB of code and read-only data, and the proxy
// starts with about 1 MB more RSS with tracing off: the kernel maps a
// binary's pages around every page touched (package inits touch them all),
// so code costs memory whether it runs or not. This exporter does what the
// proxy needs from the SDK's BatchSpanProcessor (a bounded queue that drops
// rather than blocks, batches by size and time, an export timeout, a flush
// at shutdown) in one goroutine, and encodes the OTLP protobuf messages
// itself, straight into reused buffers (otlpenc.go): a batch costs no
// message objects.

// TracerOptions configure span export.
type TracerOptions struct {
	// Endpoint is the collector's OTLP/HTTP URL (see ParseOTLPEndpoint).
	Endpoint string
	// Headers are sent with every export (e.g. an API key); see
	// OTLPHeadersFromEnv.
	Headers map[string]string
	// SampleRatio is the share of requests arriving without a traceparent
	// that start a sampled trace, 0..1. Requests with one follow its
	// sampled flag.
	SampleRatio float64
	// Node is this node's name (resource attribute k8s.node.name).
	Node string

	// QueueSize bounds the spans waiting for export; past it new spans are
	// dropped, never waited for. Default 2048.
	QueueSize int
	// BatchSize is the most spans per export request. Default 512.
	BatchSize int
	// BatchTimeout is how long a span may wait for its batch to fill.
	// Default 2s.
	BatchTimeout time.Duration
	// ExportTimeout bounds one export, retries included. Default 10s.
	ExportTimeout time.Duration

	Metrics *Metrics
	Log     *zap.Logger
}

// Defaults of TracerOptions.
const (
	DefaultSpanQueueSize     = 2048
	DefaultSpanBatchSize     = 512
	DefaultSpanBatchTimeout  = 2 * time.Second
	DefaultSpanExportTimeout = 10 * time.Second
)

// InstrumentationScope names the spans' instrumentation scope.
const InstrumentationScope = "github.com/trellis-mesh/trellis/node-proxy"

// Tracer records one SERVER span per sampled HTTP request, after the
// fact, and exports them in batches over OTLP/HTTP. Record never waits on
// the collector: it hands a plain value to a bounded queue, or drops and
// counts it when the queue is full. One goroutine batches, converts and
// sends. Export failures are counted and logged at most once a minute.
type Tracer struct {
	ratio    float64
	queue    chan *HTTPSpan // pointers: the ring stays small, memory follows the spans held
	client   *otlpClient
	enc      *otlpEncoder
	batch    int
	wait     time.Duration // batch timeout
	timeout  time.Duration // export timeout
	endpoint string

	mu      sync.RWMutex // Record holds it shared; Shutdown takes it to close
	closing bool
	stop    chan struct{}   // closed by Shutdown: export what is queued, then exit
	done    chan struct{}   // closed when the export goroutine has exited
	ctx     context.Context // ends exports; cancelled when Shutdown's deadline passes
	cancel  context.CancelFunc
	once    sync.Once

	exported, queueFull, failed, rejected, atShutdown prometheus.Counter
	panics                                            prometheus.Counter
	log                                               *zap.Logger // sampled: one line per message per minute
}

// NewTracer returns a Tracer exporting to o.Endpoint and starts its export
// goroutine (Shutdown stops it). No connection is opened until there is
// something to export.
func NewTracer(o TracerOptions) (*Tracer, error) {
	u, err := ParseOTLPEndpoint(o.Endpoint)
	if err != nil {
		return nil, err
	}
	if err := CheckSampleRatio(o.SampleRatio); err != nil {
		return nil, err
	}
	if o.Metrics == nil {
		return nil, errors.New("tracer: no metrics registry")
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.QueueSize <= 0 {
		o.QueueSize = DefaultSpanQueueSize
	}
	if o.BatchSize <= 0 {
		o.BatchSize = DefaultSpanBatchSize
	}
	if o.BatchTimeout <= 0 {
		o.BatchTimeout = DefaultSpanBatchTimeout
	}
	if o.ExportTimeout <= 0 {
		o.ExportTimeout = DefaultSpanExportTimeout
	}
	m := o.Metrics
	t := &Tracer{
		ratio:      o.SampleRatio,
		queue:      make(chan *HTTPSpan, o.QueueSize),
		client:     newOTLPClient(u, o.Headers),
		enc:        newOTLPEncoder(proxyResource(o.Node, os.Getenv("OTEL_RESOURCE_ATTRIBUTES")), InstrumentationScope),
		batch:      o.BatchSize,
		wait:       o.BatchTimeout,
		timeout:    o.ExportTimeout,
		endpoint:   u.Redacted(), // for logs
		stop:       make(chan struct{}),
		done:       make(chan struct{}),
		exported:   m.SpansExported,
		queueFull:  m.SpansDropped.WithLabelValues("queue_full"),
		failed:     m.SpansDropped.WithLabelValues("export_failed"),
		rejected:   m.SpansDropped.WithLabelValues("rejected"),
		atShutdown: m.SpansDropped.WithLabelValues("shutdown"),
		panics:     m.Panics,
		log:        sampledLogger(o.Log.Named("otlp")),
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	go t.run()
	return t, nil
}

func sampledLogger(l *zap.Logger) *zap.Logger {
	return l.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return zapcore.NewSamplerWithOptions(c, time.Minute, 1, 0)
	}))
}

// proxyResource describes the exporting process: service.name
// trellis-proxy and k8s.node.name, plus what OTEL_RESOURCE_ATTRIBUTES
// (key=value,... URL-encoded values) adds; the proxy's own keys win.
func proxyResource(node, env string) map[string]string {
	attrs := map[string]string{}
	_ = parseOTLPHeaders(env, attrs) // pairs after a malformed one are ignored
	attrs["service.name"] = "trellis-proxy"
	attrs["telemetry.sdk.language"] = "go"
	attrs["telemetry.sdk.name"] = "trellis"
	if node != "" {
		attrs["k8s.node.name"] = node
	}
	return attrs
}

// CheckSampleRatio accepts 0..1.
func CheckSampleRatio(r float64) error {
	if math.IsNaN(r) || r < 0 || r > 1 {
		return fmt.Errorf("sample ratio must be between 0 and 1, got %v", r)
	}
	return nil
}

// SampleNew reports whether a request that arrived without a (valid)
// traceparent starts a sampled trace: true for a SampleRatio share.
func (t *Tracer) SampleNew() bool {
	switch {
	case t.ratio <= 0:
		return false
	case t.ratio >= 1:
		return true
	}
	return rand.Float64() < t.ratio
}

// Record queues the span of a finished sampled request for export. It
// never blocks: when QueueSize spans are already waiting, the span is
// dropped and counted. Its strings must not be reused by the caller.
func (t *Tracer) Record(s HTTPSpan) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.closing {
		t.atShutdown.Inc()
		return
	}
	select {
	case t.queue <- &s:
	default:
		t.queueFull.Inc()
		t.log.Warn("span export queue full; spans dropped (the collector is slow or unreachable)", zap.String("endpoint", t.endpoint))
	}
}

// Shutdown stops taking spans and exports those queued, until ctx ends;
// what is left then is dropped and counted.
func (t *Tracer) Shutdown(ctx context.Context) error {
	t.once.Do(func() {
		t.mu.Lock()
		t.closing = true
		t.mu.Unlock()
		close(t.stop)
	})
	var err error
	select {
	case <-t.done:
	case <-ctx.Done():
		err = fmt.Errorf("flush spans to %s: %w", t.endpoint, ctx.Err())
		t.cancel() // the export in flight ends now; the rest is counted as dropped
		<-t.done
	}
	t.cancel()
	t.client.close()
	return err
}

// run is the export goroutine: it sends a batch when it is full or its
// oldest span has waited BatchTimeout, and everything queued at Shutdown.
func (t *Tracer) run() {
	defer close(t.done)
	batch := make([]*HTTPSpan, 0, min(t.batch, 64))
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case s := <-t.queue:
			if len(batch) == 0 {
				timer.Reset(t.wait)
			}
			if batch = append(batch, s); len(batch) >= t.batch {
				timer.Stop()
				batch = t.export(batch)
			}
		case <-timer.C:
			batch = t.export(batch)
		case <-t.stop:
			for drained := false; !drained; {
				select {
				case s := <-t.queue:
					if batch = append(batch, s); len(batch) >= t.batch {
						batch = t.export(batch)
					}
				default:
					drained = true
				}
			}
			t.export(batch)
			return
		}
	}
}

// export sends batch and counts the outcome; it returns batch emptied. A
// panic loses the batch, not the exporter.
func (t *Tracer) export(batch []*HTTPSpan) []*HTTPSpan {
	n := len(batch)
	if n == 0 {
		return batch
	}
	defer clear(batch) // let the spans go
	defer func() {
		if v := recover(); v != nil {
			t.panics.Inc()
			t.failed.Add(float64(n))
			t.log.Error("panic exporting spans; batch dropped", zap.Any("panic", v), zap.Stack("stack"))
		}
	}()
	if t.ctx.Err() != nil {
		t.atShutdown.Add(float64(n))
		return batch[:0]
	}
	ctx, cancel := context.WithTimeout(t.ctx, t.timeout)
	defer cancel()
	err := t.client.upload(ctx, t.enc.encode(batch))
	var partial *partialSuccessError
	switch {
	case err == nil:
		t.exported.Add(float64(n))
	case errors.As(err, &partial):
		r := min(partial.rejected, int64(n))
		t.exported.Add(float64(int64(n) - r))
		t.rejected.Add(float64(r))
		t.log.Warn("collector rejected spans", zap.Int64("spans", r), zap.String("message", partial.message), zap.String("endpoint", t.endpoint))
	case t.ctx.Err() != nil:
		t.atShutdown.Add(float64(n))
	default:
		t.failed.Add(float64(n))
		t.log.Warn("span export failed; spans dropped", zap.Int("spans", n), zap.String("endpoint", t.endpoint), zap.Error(err))
	}
	return batch[:0]
}

// knownMethods are the methods of RFC 9110 and PATCH (RFC 5789); others
// are reported as "_OTHER", as the HTTP semantic conventions ask.
var knownMethods = map[string]bool{"GET": true, "HEAD": true, "POST": true, "PUT": true, "DELETE": true,
	"CONNECT": true, "OPTIONS": true, "TRACE": true, "PATCH": true}

func normalizeMethod(m string) (method, original string, known bool) {
	if knownMethods[m] {
		return m, "", true
	}
	return "_OTHER", m, false
}

// protocolVersion maps "HTTP/1.1" to "1.1" and "HTTP/2.0" to "2".
func protocolVersion(proto string) string {
	v, ok := strings.CutPrefix(proto, "HTTP/")
	if !ok {
		return ""
	}
	if v == "2.0" || v == "3.0" {
		v = v[:1]
	}
	return v
}

// splitHost splits a Host header into name and port (80 when absent).
func splitHost(h string) (string, int) {
	if h == "" {
		return "", 0
	}
	if host, p, err := net.SplitHostPort(h); err == nil {
		if n, err := strconv.Atoi(p); err == nil {
			return host, n
		}
		return host, 80
	}
	return strings.TrimSuffix(strings.TrimPrefix(h, "["), "]"), 80
}
