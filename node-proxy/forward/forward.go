package forward

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/trellis-mesh/trellis/node-proxy/balance"
	"github.com/trellis-mesh/trellis/node-proxy/config"
)

// Destination is where one attempt goes and on whose behalf.
type Destination struct {
	Endpoint       *balance.Endpoint
	Scheme         config.Scheme
	TLS            *tls.Config // https only
	ConnectTimeout time.Duration
	// Source is the client identity (SourceKnown false: none). Direct
	// forwarding ignores it; mTLS forwarding will present it.
	Source      config.Identity
	SourceKnown bool
}

// HTTP sends one request attempt. The caller owns req; RoundTrip sets its
// URL scheme and host for the destination.
type HTTP interface {
	RoundTrip(req *http.Request, d *Destination) (*http.Response, error)
}

// Dialer opens a TCP connection or a connected UDP socket to a destination.
type Dialer interface {
	DialContext(ctx context.Context, network string, d *Destination) (net.Conn, error)
}

// Options tune Direct.
type Options struct {
	MaxIdleConnsPerHost   int
	IdleConnTimeout       time.Duration
	DefaultConnectTimeout time.Duration
	MaxResponseHeaderSize int64
}

// Direct forwards straight to the pod address.
type Direct struct {
	opts  Options
	h1    *http.Transport
	h2c   *http.Transport
	https sync.Map // *tls.Config → *http.Transport
}

var (
	_ HTTP   = (*Direct)(nil)
	_ Dialer = (*Direct)(nil)
)

type connectTimeoutKey struct{}

// NewDirect returns a direct forwarder.
func NewDirect(o Options) *Direct {
	if o.MaxIdleConnsPerHost == 0 {
		o.MaxIdleConnsPerHost = 256
	}
	if o.IdleConnTimeout == 0 {
		o.IdleConnTimeout = 90 * time.Second
	}
	if o.DefaultConnectTimeout == 0 {
		o.DefaultConnectTimeout = 2 * time.Second
	}
	if o.MaxResponseHeaderSize == 0 {
		o.MaxResponseHeaderSize = 1 << 20
	}
	d := &Direct{opts: o}
	d.h1 = d.transport(nil)
	d.h1.Protocols = new(http.Protocols)
	d.h1.Protocols.SetHTTP1(true)
	d.h2c = d.transport(nil)
	d.h2c.Protocols = new(http.Protocols)
	d.h2c.Protocols.SetUnencryptedHTTP2(true)
	return d
}

func (d *Direct) transport(tc *tls.Config) *http.Transport {
	return &http.Transport{
		DialContext:            d.dial,
		TLSClientConfig:        tc,
		ForceAttemptHTTP2:      tc != nil,
		MaxIdleConns:           0, // no global cap; per host below
		MaxIdleConnsPerHost:    d.opts.MaxIdleConnsPerHost,
		IdleConnTimeout:        d.opts.IdleConnTimeout,
		TLSHandshakeTimeout:    5 * time.Second,
		DisableCompression:     true, // never add Accept-Encoding on the client's behalf
		MaxResponseHeaderBytes: d.opts.MaxResponseHeaderSize,
		WriteBufferSize:        16 << 10,
		ReadBufferSize:         16 << 10,
	}
}

func (d *Direct) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	to := d.opts.DefaultConnectTimeout
	if v, ok := ctx.Value(connectTimeoutKey{}).(time.Duration); ok && v > 0 {
		to = v
	}
	nd := net.Dialer{Timeout: to, KeepAlive: 30 * time.Second}
	return nd.DialContext(ctx, network, addr)
}

// RoundTrip implements HTTP.
func (d *Direct) RoundTrip(req *http.Request, dst *Destination) (*http.Response, error) {
	req.URL.Host = dst.Endpoint.HostPort
	var t *http.Transport
	switch dst.Scheme {
	case config.SchemeH2C:
		req.URL.Scheme = "http"
		t = d.h2c
	case config.SchemeHTTPS:
		req.URL.Scheme = "https"
		v, ok := d.https.Load(dst.TLS)
		if !ok {
			v, _ = d.https.LoadOrStore(dst.TLS, d.transport(dst.TLS))
		}
		t = v.(*http.Transport)
	default:
		req.URL.Scheme = "http"
		t = d.h1
	}
	if dst.ConnectTimeout > 0 && dst.ConnectTimeout != d.opts.DefaultConnectTimeout {
		req = req.WithContext(context.WithValue(req.Context(), connectTimeoutKey{}, dst.ConnectTimeout))
	}
	return t.RoundTrip(req)
}

// DialContext implements Dialer.
func (d *Direct) DialContext(ctx context.Context, network string, dst *Destination) (net.Conn, error) {
	to := dst.ConnectTimeout
	if to == 0 {
		to = d.opts.DefaultConnectTimeout
	}
	nd := net.Dialer{Timeout: to, KeepAlive: 30 * time.Second}
	return nd.DialContext(ctx, network, dst.Endpoint.HostPort)
}

// CloseIdle closes idle upstream connections (drain, reload of TLS configs).
func (d *Direct) CloseIdle() {
	d.h1.CloseIdleConnections()
	d.h2c.CloseIdleConnections()
	d.https.Range(func(_, v any) bool {
		v.(*http.Transport).CloseIdleConnections()
		return true
	})
}
