package httpproxy

import (
	"log"
	"net"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/trellis-mesh/trellis/node-proxy/telemetry"
)

// ServerOptions are the hardening limits of the shared HTTP listener.
type ServerOptions struct {
	MaxHeaderBytes       int           // request line + headers, default 32KiB
	ReadHeaderTimeout    time.Duration // slowloris guard, default 10s
	IdleTimeout          time.Duration // keep-alive idle, default 120s
	MaxConcurrentStreams int           // HTTP/2 streams per connection, default 250

	// DisableFastPath serves every connection with net/http (server
	// package); the fast path is on by default.
	DisableFastPath bool
	// Fast path only (FastServer).
	MaxIdleUpstreamPerHost int           // idle upstream connections kept per pod, default 256
	UpstreamIdleTimeout    time.Duration // idle upstream connections are closed after, default 90s
}

func (o ServerOptions) withDefaults() ServerOptions {
	if o.MaxHeaderBytes == 0 {
		o.MaxHeaderBytes = 32 << 10
	}
	if o.ReadHeaderTimeout == 0 {
		o.ReadHeaderTimeout = 10 * time.Second
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = 120 * time.Second
	}
	if o.MaxConcurrentStreams == 0 {
		o.MaxConcurrentStreams = 250
	}
	if o.MaxIdleUpstreamPerHost == 0 {
		o.MaxIdleUpstreamPerHost = 256
	}
	if o.UpstreamIdleTimeout == 0 {
		o.UpstreamIdleTimeout = 90 * time.Second
	}
	return o
}

// NewServer returns the http.Server for the shared listener: HTTP/1.1 and
// unencrypted HTTP/2 (prior knowledge; gRPC clients use it) on one port.
// NewFastServer wraps it with the HTTP/1.1 fast path.
func NewServer(h http.Handler, m *telemetry.Metrics, logger *zap.Logger, o ServerOptions) *http.Server {
	if o.MaxHeaderBytes == 0 {
		o.MaxHeaderBytes = 32 << 10
	}
	if o.ReadHeaderTimeout == 0 {
		o.ReadHeaderTimeout = 10 * time.Second
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = 120 * time.Second
	}
	if o.MaxConcurrentStreams == 0 {
		o.MaxConcurrentStreams = 250
	}
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	open := m.OpenConns.WithLabelValues("http")
	errLog, _ := zap.NewStdLogAt(logger.Named("http-server"), zap.DebugLevel)
	if errLog == nil {
		errLog = log.Default()
	}
	return &http.Server{
		Handler:           h,
		Protocols:         p,
		MaxHeaderBytes:    o.MaxHeaderBytes,
		ReadHeaderTimeout: o.ReadHeaderTimeout,
		IdleTimeout:       o.IdleTimeout,
		ErrorLog:          errLog,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams: o.MaxConcurrentStreams,
			// Bound what one HTTP/2 client can make the proxy buffer.
			MaxReceiveBufferPerConnection: 1 << 20,
			MaxReceiveBufferPerStream:     256 << 10,
			MaxDecoderHeaderTableSize:     4096,
			MaxEncoderHeaderTableSize:     4096,
		},
		ConnState: func(_ net.Conn, s http.ConnState) {
			switch s {
			case http.StateNew:
				open.Inc()
			case http.StateClosed, http.StateHijacked:
				open.Dec()
			}
		},
	}
}
