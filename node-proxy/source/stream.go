package source

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/trellis-mesh/trellis/node-proxy/config"
)

// Stream receives this node's config from the controller over one
// long-lived HTTP/2 stream (the protocol is described in the controller's
// serve package): a snapshot on connect, then deltas or snapshots as the
// version changes. It reconnects with jittered exponential backoff,
// telling the controller which version it holds so a reconnect costs one
// small frame. While disconnected the proxy keeps serving its last config.
type Stream struct {
	// URL is the controller's base URL, e.g.
	// http://trellis-controller.trellis-system.svc:9000 (h2c) or https://...
	URL string
	// TokenFile holds the pod's ServiceAccount token; it is re-read on
	// every connection attempt (tokens rotate).
	TokenFile string
	// CAFile, for https URLs, holds the CA bundle to trust (default: system).
	CAFile string
	// Client overrides the HTTP client (tests); it must speak HTTP/2.
	Client *http.Client
	// MinBackoff and MaxBackoff bound reconnect waits (default 250ms, 5s:
	// a proxy is back on a surviving controller replica within seconds of
	// losing one; the jitter spreads a whole fleet's reconnects).
	MinBackoff, MaxBackoff time.Duration
	// IdleTimeout ends a stream that sent nothing (not even a ping) for this
	// long (default 30s; the controller pings every 10s).
	IdleTimeout time.Duration
	// DialTimeout bounds one connection attempt (default 3s) and
	// HeaderTimeout the wait for the controller's answer once connected
	// (default 10s). Without them, a reconnect aimed at a replica that just
	// vanished (its pod IP still in the node's Service rules for a moment)
	// waits out the kernel's SYN retries, about two minutes, instead of
	// moving on to a live replica.
	DialTimeout, HeaderTimeout time.Duration
	// NoAck disables reporting applied/rejected versions to the controller.
	NoAck bool
	// PluginErrors, when set, returns the plugins of the applied config
	// that could not be loaded (name -> error); they are reported with the
	// ack, so the controller can put an Event on the plugin's object.
	PluginErrors func() map[string]string
	// OnEvent, when set, is told about connections, frames and failures
	// (for logs). It must not block.
	OnEvent func(StreamEvent)
}

// StreamEvent describes something that happened on the stream.
type StreamEvent struct {
	Kind    string // connecting, connected, refused, frame, applied, rejected, disconnected, ack (an ack failed)
	Frame   string // snapshot, delta, current (for frame/applied/rejected)
	Version string
	Err     error
	Wait    time.Duration // for disconnected/refused: the backoff before retrying
}

const (
	streamPath = "/v1/stream"
	ackPath    = "/v1/ack"
	haveHeader = "X-Trellis-Have"
	maxFrame   = config.MaxSize + 1<<20
)

func (s *Stream) event(e StreamEvent) {
	if s.OnEvent != nil {
		s.OnEvent(e)
	}
}

func (s *Stream) httpClient() (*http.Client, error) {
	if s.Client != nil {
		return s.Client, nil
	}
	var p http.Protocols
	p.SetHTTP2(true)
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{
		Protocols:             &p,
		ForceAttemptHTTP2:     true,
		DialContext:           (&net.Dialer{Timeout: s.DialTimeout, KeepAlive: 15 * time.Second}).DialContext,
		TLSHandshakeTimeout:   s.DialTimeout,
		ResponseHeaderTimeout: s.HeaderTimeout,
		// A connection that goes silent (the controller's node lost, no
		// FIN or RST ever arriving) is detected by an HTTP/2 ping within
		// 20s; the controller's own pings every 10s keep healthy ones quiet.
		HTTP2: &http.HTTP2Config{SendPingTimeout: 15 * time.Second, PingTimeout: 5 * time.Second},
	}
	if s.CAFile != "" {
		pem, err := os.ReadFile(s.CAFile)
		if err != nil {
			return nil, fmt.Errorf("controller CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("controller CA file %s: no PEM certificate in it", s.CAFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: tr}, nil
}

func (s *Stream) token() (string, error) {
	if s.TokenFile == "" {
		return "", nil
	}
	b, err := os.ReadFile(s.TokenFile)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// backoff is exponential with equal jitter, honouring Retry-After.
func (s *Stream) backoff(attempt int, resp *http.Response) time.Duration {
	d := retryablehttp.DefaultBackoff(s.MinBackoff, s.MaxBackoff, attempt, resp)
	if d <= 0 {
		return s.MinBackoff
	}
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

// Run implements the proxy's Source: it delivers configs to apply until
// ctx ends. It only returns an error for a setup mistake (bad URL or CA
// file); connection problems are retried forever.
func (s *Stream) Run(ctx context.Context, apply func(context.Context, *config.Config) error) error {
	if s.MinBackoff <= 0 {
		s.MinBackoff = 250 * time.Millisecond
	}
	if s.MaxBackoff <= 0 {
		s.MaxBackoff = 5 * time.Second
	}
	if s.IdleTimeout <= 0 {
		s.IdleTimeout = 30 * time.Second
	}
	if s.DialTimeout <= 0 {
		s.DialTimeout = 3 * time.Second
	}
	if s.HeaderTimeout <= 0 {
		s.HeaderTimeout = 10 * time.Second
	}
	if !strings.HasPrefix(s.URL, "http://") && !strings.HasPrefix(s.URL, "https://") {
		return fmt.Errorf("controller URL %q: must start with http:// or https://", s.URL)
	}
	base := strings.TrimSuffix(s.URL, "/")
	hc, err := s.httpClient()
	if err != nil {
		return err
	}
	rc := &retryablehttp.Client{
		HTTPClient:   hc,
		RetryWaitMin: s.MinBackoff,
		RetryWaitMax: s.MaxBackoff,
		RetryMax:     math.MaxInt32,
		Backoff:      func(_, _ time.Duration, n int, resp *http.Response) time.Duration { return s.backoff(n, resp) },
		CheckRetry: func(ctx context.Context, resp *http.Response, err error) (bool, error) {
			if ctx.Err() != nil {
				return false, ctx.Err()
			}
			if err == nil && resp.StatusCode == http.StatusOK {
				return false, nil
			}
			// HTTP/2 keeps a connection pooled after a stream on it timed
			// out; drop it so the retry dials afresh (and the node's Service
			// rules can pick a live replica) instead of queueing behind a
			// replica that stopped answering.
			hc.CloseIdleConnections()
			if err == nil {
				body, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
				err = fmt.Errorf("controller answered %s: %s", resp.Status, strings.TrimSpace(string(body)))
			}
			s.event(StreamEvent{Kind: "refused", Err: err})
			return true, nil // any failure is worth retrying: tokens, RBAC and pods get fixed
		},
		ErrorHandler: retryablehttp.PassthroughErrorHandler,
	}
	var have *held // the last config the controller sent us
	attempt := 0
	for ctx.Err() == nil {
		req, err := retryablehttp.NewRequestWithContext(ctx, http.MethodGet, base+streamPath, nil)
		if err != nil {
			return fmt.Errorf("controller URL %q: %w", s.URL, err)
		}
		prepare := func(r *http.Request) error {
			tok, err := s.token()
			if err != nil {
				return err
			}
			r.Header.Set("Authorization", "Bearer "+tok)
			if have != nil {
				r.Header.Set(haveHeader, have.cfg.Version)
			} else {
				r.Header.Del(haveHeader)
			}
			return nil
		}
		rc.PrepareRetry = prepare
		if err := prepare(req.Request); err != nil {
			wait := s.backoff(attempt, nil)
			attempt++
			s.event(StreamEvent{Kind: "refused", Err: err, Wait: wait})
			if !sleep(ctx, wait) {
				return nil
			}
			continue
		}
		s.event(StreamEvent{Kind: "connecting"})
		resp, err := rc.Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			if resp != nil {
				resp.Body.Close()
			}
			if stopped(ctx) {
				return nil // ctx ended: Run's normal end
			}
			continue
		}
		s.event(StreamEvent{Kind: "connected"})
		start := time.Now()
		err = s.consume(ctx, base, hc, resp.Body, &have, apply)
		resp.Body.Close()
		hc.CloseIdleConnections() // reconnect on a fresh connection, as above
		if stopped(ctx) {
			return nil
		}
		if time.Since(start) > time.Minute {
			attempt = 0
		}
		wait := s.backoff(attempt, nil)
		attempt++
		s.event(StreamEvent{Kind: "disconnected", Err: err, Wait: wait})
		if !sleep(ctx, wait) {
			return nil
		}
	}
	return nil
}

// stopped reports whether ctx has ended.
func stopped(ctx context.Context) bool {
	select {
	case <-ctx.Done():
		return true
	default:
		return false
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

type frame struct {
	Type      string          `json:"type"`
	Version   string          `json:"version"`
	Base      string          `json:"base"`
	Config    json.RawMessage `json:"config"`
	Header    json.RawMessage `json:"header"`
	LocalPods json.RawMessage `json:"localPods"`
	Upsert    json.RawMessage `json:"upsert"`
	Remove    []string        `json:"remove"`
}

// errResync means our copy no longer matches the controller's: reconnect
// without claiming a version.
var errResync = errors.New("config stream out of sync")

// held is the config we hold plus the digests of its pieces (see
// config.Config.Hash), so a delta is verified by hashing only the pieces it
// carries plus 32 bytes per Service.
type held struct {
	cfg       *config.Config
	header    config.Digest
	services  []config.Digest // aligned with cfg.Services
	localPods config.Digest
}

// newHeld takes the digests of a snapshot from the bytes received when they
// hash to the snapshot's version (the controller sends canonical encodings),
// and from a re-encoding of the decoded config otherwise.
func newHeld(c *config.Config, raw []byte) *held {
	h := &held{cfg: c, header: config.DigestOf(c.HeaderJSON())}
	var pieces struct {
		Services  []json.RawMessage `json:"services"`
		LocalPods json.RawMessage   `json:"localPods"`
	}
	if json.Unmarshal(raw, &pieces) == nil && len(pieces.Services) == len(c.Services) {
		h.services = make([]config.Digest, len(pieces.Services))
		for i, s := range pieces.Services {
			h.services[i] = config.DigestOf(s)
		}
		h.localPods = localPodsDigest(pieces.LocalPods)
		if h.hash() == c.Version {
			return h
		}
	}
	h.services = make([]config.Digest, len(c.Services))
	for i := range c.Services {
		b, _ := json.Marshal(&c.Services[i])
		h.services[i] = config.DigestOf(b)
	}
	h.localPods = config.DigestOf(config.LocalPodsJSON(c.LocalPods))
	return h
}

func localPodsDigest(raw json.RawMessage) config.Digest {
	if len(raw) == 0 || string(raw) == "null" {
		raw = config.LocalPodsJSON(nil)
	}
	return config.DigestOf(raw)
}

// hash is Config.Hash() computed from the digests.
func (h *held) hash() string {
	return config.HashParts(h.header, h.services, h.localPods)
}

func (s *Stream) consume(ctx context.Context, base string, hc *http.Client, body io.Reader, have **held,
	apply func(context.Context, *config.Config) error) error {
	// End the stream when the controller goes silent.
	idle := time.AfterFunc(s.IdleTimeout, func() {
		if c, ok := body.(io.Closer); ok {
			c.Close()
		}
	})
	defer idle.Stop()
	r := bufio.NewReaderSize(body, 64<<10)
	for {
		line, err := readLine(r)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return errors.New("controller closed the stream")
			}
			return err
		}
		idle.Reset(s.IdleTimeout)
		var f frame
		if err := json.Unmarshal(line, &f); err != nil {
			*have = nil
			return fmt.Errorf("%w: unreadable frame: %w", errResync, err)
		}
		var next *held
		switch f.Type {
		case "ping":
			continue
		case "current":
			if *have == nil || (*have).cfg.Version != f.Version {
				*have = nil
				return fmt.Errorf("%w: controller says we hold %s", errResync, f.Version)
			}
			s.event(StreamEvent{Kind: "frame", Frame: f.Type, Version: f.Version})
			continue
		case "snapshot":
			c, err := config.DecodeBytes(f.Config)
			if err != nil {
				*have = nil
				s.ack(ctx, base, hc, f.Version, err)
				s.event(StreamEvent{Kind: "rejected", Frame: f.Type, Version: f.Version, Err: err})
				continue
			}
			if c.Version != f.Version {
				*have = nil
				return fmt.Errorf("%w: snapshot frame version %s but config version %s", errResync, f.Version, c.Version)
			}
			next = newHeld(c, f.Config)
		case "delta":
			c, err := applyDelta(*have, &f)
			if err != nil {
				*have = nil
				return fmt.Errorf("%w: %w", errResync, err)
			}
			next = c
		default:
			continue // a newer controller's frame type: ignore
		}
		*have = next
		v := next.cfg.Version
		s.event(StreamEvent{Kind: "frame", Frame: f.Type, Version: v})
		err = apply(ctx, next.cfg)
		s.ack(ctx, base, hc, v, err)
		if err != nil {
			s.event(StreamEvent{Kind: "rejected", Frame: f.Type, Version: v, Err: err})
		} else {
			s.event(StreamEvent{Kind: "applied", Frame: f.Type, Version: v})
		}
	}
}

func readLine(r *bufio.Reader) ([]byte, error) {
	var buf []byte
	for {
		chunk, err := r.ReadSlice('\n')
		if len(buf)+len(chunk) > maxFrame {
			return nil, fmt.Errorf("frame larger than %d bytes", maxFrame)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			buf = append(buf, chunk...)
			continue
		}
		if err != nil {
			return nil, err
		}
		if buf == nil {
			return chunk, nil // valid until the next read; callers copy what they keep
		}
		return append(buf, chunk...), nil
	}
}

func strict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// applyDelta builds the next config from have; the result must hash to
// the frame's version.
func applyDelta(have *held, f *frame) (*held, error) {
	if have == nil || have.cfg.Version != f.Base {
		var v *config.Config
		if have != nil {
			v = have.cfg
		}
		return nil, fmt.Errorf("delta from %s but we hold %v", f.Base, versionOf(v))
	}
	cfg := *have.cfg
	next := &held{cfg: &cfg, header: have.header, services: have.services, localPods: have.localPods}
	if len(f.Header) > 0 {
		var h config.Config
		if err := strict(f.Header, &h); err != nil {
			return nil, fmt.Errorf("delta header: %w", err)
		}
		cfg.Node, cfg.Zone, cfg.MeshDomain, cfg.Listeners, cfg.ACL, cfg.Plugins = h.Node, h.Zone, h.MeshDomain, h.Listeners, h.ACL, h.Plugins
		next.header = config.DigestOf(cfg.HeaderJSON())
	}
	if len(f.LocalPods) > 0 {
		var lp []config.LocalPod
		if err := strict(f.LocalPods, &lp); err != nil {
			return nil, fmt.Errorf("delta localPods: %w", err)
		}
		cfg.LocalPods = lp
		next.localPods = localPodsDigest(f.LocalPods)
	}
	if len(f.Upsert) > 0 || len(f.Remove) > 0 {
		var up []config.Service
		var upRaw []json.RawMessage
		if len(f.Upsert) > 0 {
			if err := strict(f.Upsert, &up); err != nil {
				return nil, fmt.Errorf("delta upsert: %w", err)
			}
			if err := json.Unmarshal(f.Upsert, &upRaw); err != nil {
				return nil, fmt.Errorf("delta upsert: %w", err)
			}
			if len(upRaw) != len(up) {
				return nil, fmt.Errorf("delta upsert: %d raw services for %d decoded", len(upRaw), len(up))
			}
		}
		gone := make(map[string]bool, len(f.Remove)+len(up))
		for _, k := range f.Remove {
			gone[k] = true
		}
		for i := range up {
			gone[up[i].Key()] = true
		}
		// Upserts sorted, then merged with the (sorted) services we hold.
		order := make([]int, len(up))
		for i := range order {
			order[i] = i
		}
		less := func(a, b *config.Service) bool {
			if a.Namespace != b.Namespace {
				return a.Namespace < b.Namespace
			}
			return a.Name < b.Name
		}
		sort.Slice(order, func(i, j int) bool { return less(&up[order[i]], &up[order[j]]) })
		cfg.Services = make([]config.Service, 0, len(have.cfg.Services)+len(up))
		digests := make([]config.Digest, 0, cap(cfg.Services))
		old := have.cfg.Services
		i, k := 0, 0
		for i < len(old) || k < len(order) {
			if i < len(old) && gone[old[i].Key()] {
				i++
				continue
			}
			if k < len(order) && (i >= len(old) || less(&up[order[k]], &old[i])) {
				cfg.Services = append(cfg.Services, up[order[k]])
				digests = append(digests, config.DigestOf(upRaw[order[k]]))
				k++
				continue
			}
			cfg.Services = append(cfg.Services, old[i])
			digests = append(digests, have.services[i])
			i++
		}
		next.services = digests
	}
	cfg.Version = ""
	if h := next.hash(); h != f.Version {
		return nil, fmt.Errorf("delta to %s produced content %s", f.Version, h)
	}
	cfg.Version = f.Version
	return next, nil
}

func versionOf(c *config.Config) string {
	if c == nil {
		return "nothing"
	}
	return c.Version
}

// ack reports the outcome to the controller (best effort, short timeout).
func (s *Stream) ack(ctx context.Context, base string, hc *http.Client, version string, applyErr error) {
	if s.NoAck {
		return
	}
	a := map[string]any{"version": version, "applied": applyErr == nil}
	if applyErr != nil {
		a["error"] = applyErr.Error()
	} else if s.PluginErrors != nil {
		type pluginError struct {
			Name  string `json:"name"`
			Error string `json:"error"`
		}
		var ps []pluginError
		for name, e := range s.PluginErrors() {
			ps = append(ps, pluginError{name, e})
		}
		sort.Slice(ps, func(i, j int) bool { return ps[i].Name < ps[j].Name })
		if len(ps) > 0 {
			a["plugins"] = ps
		}
	}
	body, _ := json.Marshal(a)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+ackPath, bytes.NewReader(body))
	if err != nil {
		return
	}
	tok, err := s.token()
	if err != nil {
		return
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return
	}
	// Drain so the connection is reused; an error here changes nothing.
	if _, err := io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)); err != nil {
		s.event(StreamEvent{Kind: "ack", Version: version, Err: err})
	}
	resp.Body.Close()
}
