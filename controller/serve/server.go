package serve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"reflect"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/trellis-mesh/trellis/controller/compile"
)

// Options configure a Server.
type Options struct {
	Hub   *Hub
	Auth  Authenticator
	Authz Authorizer
	Pods  PodGetter
	// ProxyNamespace and ProxyServiceAccount name the identity allowed to
	// open streams.
	ProxyNamespace      string
	ProxyServiceAccount string
	// Ping is the keep-alive frame interval (default 10s).
	Ping time.Duration
	// WriteTimeout bounds writing one frame (default 30s): a proxy that
	// stops reading is disconnected instead of holding memory.
	WriteTimeout time.Duration
	// Ready reports whether caches have synced and a config was compiled.
	Ready func() bool
	// Debug adds read-only JSON views under /debug/ (name -> producer).
	Debug   map[string]func(r *http.Request) (any, error)
	Metrics *Metrics
	Log     *zap.Logger
	// Replica names this controller replica in logs and the debug view.
	Replica string
	// OnPluginErrors, when set, is called (without locks held) when a
	// proxy's ack changes the plugins it reports it could not load.
	OnPluginErrors func()
}

// Server serves config streams, acks, health and the debug API.
type Server struct {
	o     Options
	log   *zap.Logger
	m     *Metrics
	mu    sync.Mutex
	live  map[uint64]*streamState
	seq   atomic.Uint64
	proxy string
}

type streamState struct {
	Node        string    `json:"node"`
	Pod         string    `json:"pod"`
	Remote      string    `json:"remote"`
	Connected   time.Time `json:"connected"`
	SentVersion string    `json:"sentVersion,omitempty"`
	SentAt      time.Time `json:"sentAt,omitzero"`
	AckVersion  string    `json:"ackVersion,omitempty"`
	AckApplied  bool      `json:"ackApplied"`
	AckError    string    `json:"ackError,omitempty"`
	// AckPlugins are the plugins the proxy could not load in AckVersion.
	AckPlugins []PluginError `json:"ackPlugins,omitempty"`
}

// Metrics of the serve stage.
type Metrics struct {
	Streams      prometheus.Gauge
	Behind       prometheus.Gauge
	PushLatency  prometheus.Histogram
	Frames       *prometheus.CounterVec
	Bytes        prometheus.Counter
	Rejected     *prometheus.CounterVec
	Acks         *prometheus.CounterVec
	ProxyVersion *prometheus.GaugeVec
}

// NewMetrics registers the serve metrics with reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Streams: prometheus.NewGauge(prometheus.GaugeOpts{Name: "trellis_connected_proxies", Help: "Config streams open on this replica."}),
		Behind:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "trellis_proxies_behind", Help: "Streams whose last sent config is not their node's current one."}),
		PushLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "trellis_push_latency_seconds",
			Help:    "From publishing a new compile result to a stream having written its node's new version.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}}),
		Frames:       prometheus.NewCounterVec(prometheus.CounterOpts{Name: "trellis_stream_frames_total", Help: "Frames sent, by type."}, []string{"type"}),
		Bytes:        prometheus.NewCounter(prometheus.CounterOpts{Name: "trellis_stream_bytes_total", Help: "Bytes sent on config streams."}),
		Rejected:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "trellis_stream_rejected_total", Help: "Stream and ack requests refused, by HTTP status."}, []string{"code"}),
		Acks:         prometheus.NewCounterVec(prometheus.CounterOpts{Name: "trellis_proxy_acks_total", Help: "Versions proxies reported, by result."}, []string{"result"}),
		ProxyVersion: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "trellis_proxy_config_lag_seconds", Help: "Per node: 0 when its proxy has applied the current version, otherwise how long the current version has waited."}, []string{"node"}),
	}
	if reg != nil {
		reg.MustRegister(m.Streams, m.Behind, m.PushLatency, m.Frames, m.Bytes, m.Rejected, m.Acks, m.ProxyVersion)
	}
	return m
}

// New returns a server.
func New(o Options) *Server {
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
	if o.Ping == 0 {
		o.Ping = 10 * time.Second
	}
	if o.WriteTimeout == 0 {
		o.WriteTimeout = 30 * time.Second
	}
	if o.Ready == nil {
		o.Ready = func() bool { return true }
	}
	return &Server{o: o, log: o.Log, m: o.Metrics, live: map[uint64]*streamState{},
		proxy: "system:serviceaccount:" + o.ProxyNamespace + ":" + o.ProxyServiceAccount}
}

// Handler returns the HTTP handler.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+StreamPath, s.stream)
	mux.HandleFunc("POST "+AckPath, s.ack)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { s.wrote(io.WriteString(w, "ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !s.o.Ready() {
			http.Error(w, "not ready: caches syncing or no config compiled yet", http.StatusServiceUnavailable)
			return
		}
		s.wrote(io.WriteString(w, "ok\n"))
	})
	mux.HandleFunc("GET /debug/{view}", s.debug)
	return mux
}

// HTTPServer wraps Handler in an HTTP/1.1 + HTTP/2 (h2c or TLS) server.
func (s *Server) HTTPServer() *http.Server {
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetHTTP2(true)
	p.SetUnencryptedHTTP2(true)
	return &http.Server{Handler: s.Handler(), Protocols: &p, ReadHeaderTimeout: 10 * time.Second,
		HTTP2: &http.HTTP2Config{PingTimeout: 20 * time.Second, SendPingTimeout: 30 * time.Second}}
}

type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

func (s *Server) fail(w http.ResponseWriter, err error) {
	var he *httpError
	if !errors.As(err, &he) {
		he = &httpError{http.StatusInternalServerError, err.Error()}
	}
	if he.code == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="trellis"`)
	}
	if he.code == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	s.m.Rejected.WithLabelValues(fmt.Sprint(he.code)).Inc()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(he.code)
	s.wrote(0, json.NewEncoder(w).Encode(map[string]string{"error": he.msg}))
}

// wrote logs a failed response write: the client went away; there is
// nobody left to tell.
func (s *Server) wrote(_ int, err error) {
	if err != nil {
		s.log.Debug("response not written", zap.Error(err))
	}
}

// DebugAuthHeader carries the bearer token of a debug API request when
// Authorization cannot: the kubectl plugin reaches the controller through
// the apiserver's pods/proxy subresource, and the apiserver removes the
// Authorization header (it holds the caller's apiserver credentials) before
// proxying. The token in it is checked exactly like one in Authorization
// (TokenReview, then SubjectAccessReview on DebugPath), so it grants nothing
// more. It is accepted on /debug/ only: config streams and acks come
// straight from proxies, which always send Authorization, and a second way
// in would only widen what a stream's authentication has to get right.
const DebugAuthHeader = "X-Trellis-Authorization"

func bearer(r *http.Request, header string) (string, bool) {
	h := r.Header.Get(header)
	tok, ok := strings.CutPrefix(h, "Bearer ")
	tok = strings.TrimSpace(tok)
	return tok, ok && tok != ""
}

// authenticate checks the Authorization bearer token.
func (s *Server) authenticate(r *http.Request) (*Caller, error) {
	tok, ok := bearer(r, "Authorization")
	if !ok {
		return nil, &httpError{http.StatusUnauthorized, "missing `Authorization: Bearer <ServiceAccount token>`"}
	}
	return s.review(r, tok)
}

// authenticateDebug checks the bearer token of a debug request: from
// Authorization, or else from DebugAuthHeader.
func (s *Server) authenticateDebug(r *http.Request) (*Caller, error) {
	tok, ok := bearer(r, "Authorization")
	if !ok {
		if tok, ok = bearer(r, DebugAuthHeader); !ok {
			return nil, &httpError{http.StatusUnauthorized, "missing `Authorization: Bearer <token>` (or `" + DebugAuthHeader + ": Bearer <token>` through the apiserver's pods/proxy)"}
		}
	}
	return s.review(r, tok)
}

func (s *Server) review(r *http.Request, tok string) (*Caller, error) {
	c, err := s.o.Auth.Authenticate(r.Context(), tok)
	if errors.Is(err, ErrUnauthenticated) {
		return nil, &httpError{http.StatusUnauthorized, err.Error()}
	}
	if err != nil {
		return nil, &httpError{http.StatusServiceUnavailable, "cannot check the token now: " + err.Error()}
	}
	return c, nil
}

// proxyNode authenticates a node proxy and returns its node and pod.
func (s *Server) proxyNode(r *http.Request) (node, pod string, err error) {
	c, err := s.authenticate(r)
	if err != nil {
		return "", "", err
	}
	if c.User != s.proxy {
		return "", "", &httpError{http.StatusForbidden, fmt.Sprintf("%s may not receive proxy configs; only %s may", c.User, s.proxy)}
	}
	podName, podUID := c.extra(ExtraPodName), c.extra(ExtraPodUID)
	if podName == "" {
		return "", "", &httpError{http.StatusForbidden, "the token is not bound to a pod, so its node is unknown; use the pod's projected ServiceAccount token"}
	}
	p, err := s.o.Pods.GetPod(r.Context(), s.o.ProxyNamespace, podName)
	if apierrors.IsNotFound(err) {
		return "", "", &httpError{http.StatusForbidden, fmt.Sprintf("pod %s/%s the token is bound to does not exist", s.o.ProxyNamespace, podName)}
	}
	if err != nil {
		return "", "", &httpError{http.StatusServiceUnavailable, fmt.Sprintf("cannot look up pod %s/%s: %v", s.o.ProxyNamespace, podName, err)}
	}
	if podUID != "" && string(p.UID) != podUID {
		return "", "", &httpError{http.StatusForbidden, fmt.Sprintf("pod %s/%s was replaced; the token belongs to a deleted pod", s.o.ProxyNamespace, podName)}
	}
	if p.DeletionTimestamp != nil {
		// A terminating proxy keeps serving during its drain period; it may
		// keep receiving its node's config.
		s.log.Debug("terminating proxy pod connected", zap.String("pod", podName))
	}
	node = c.extra(ExtraNodeName)
	switch {
	case node == "":
		node = p.Spec.NodeName
	case p.Spec.NodeName != "" && p.Spec.NodeName != node:
		return "", "", &httpError{http.StatusForbidden, fmt.Sprintf("token names node %s but pod %s runs on %s", node, podName, p.Spec.NodeName)}
	}
	if node == "" {
		return "", "", &httpError{http.StatusForbidden, fmt.Sprintf("pod %s/%s is not scheduled to a node", s.o.ProxyNamespace, podName)}
	}
	return node, podName, nil
}

func (s *Server) stream(w http.ResponseWriter, r *http.Request) {
	if !s.o.Ready() {
		s.fail(w, &httpError{http.StatusServiceUnavailable, "controller caches are still syncing"})
		return
	}
	node, pod, err := s.proxyNode(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	log := s.log.With(zap.String("node", node), zap.String("pod", pod))
	id := s.seq.Add(1)
	st := &streamState{Node: node, Pod: pod, Remote: r.RemoteAddr, Connected: time.Now()}
	s.mu.Lock()
	s.live[id] = st
	s.mu.Unlock()
	s.m.Streams.Inc()
	behind := false
	setBehind := func(b bool) {
		if b != behind {
			behind = b
			if b {
				s.m.Behind.Inc()
			} else {
				s.m.Behind.Dec()
			}
		}
	}
	defer func() {
		setBehind(false)
		s.m.Streams.Dec()
		s.mu.Lock()
		delete(s.live, id)
		s.mu.Unlock()
		log.Info("config stream closed")
	}()
	log.Info("config stream opened")

	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", ContentType)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return
	}
	have := r.Header.Get(HaveHeader)
	var sent *compile.Node // what this stream delivered last
	ping := time.NewTicker(s.o.Ping)
	defer ping.Stop()
	write := func(kind string, f func(io.Writer) error) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(s.o.WriteTimeout))
		cw := &countingWriter{w: w}
		if err := f(cw); err != nil {
			log.Info("config stream write failed", zap.Error(err))
			return false
		}
		if err := rc.Flush(); err != nil {
			log.Info("config stream flush failed", zap.Error(err))
			return false
		}
		_ = rc.SetWriteDeadline(time.Time{})
		s.m.Frames.WithLabelValues(kind).Inc()
		s.m.Bytes.Add(float64(cw.n))
		return true
	}
	for {
		res, at, changed := s.o.Hub.Current()
		cur := res.Node(node)
		if cur != nil && (sent == nil || cur.Version != sent.Version) {
			setBehind(true)
			var ok bool
			kind := FrameSnapshot
			switch {
			case sent == nil && have == cur.Version:
				kind = FrameCurrent
				ok = write(kind, func(w io.Writer) error {
					_, err := io.WriteString(w, `{"type":"current","version":"`+cur.Version+`"}`+"\n")
					return err
				})
			case sent != nil:
				if frame, small := delta(sent, cur); small {
					kind = FrameDelta
					ok = write(kind, func(w io.Writer) error { _, err := w.Write(frame); return err })
					break
				}
				fallthrough
			default:
				ok = write(kind, func(w io.Writer) error { return writeSnapshot(w, cur) })
			}
			if !ok {
				return
			}
			sent = cur
			s.m.PushLatency.Observe(time.Since(at).Seconds())
			s.mu.Lock()
			st.SentVersion, st.SentAt = cur.Version, time.Now()
			s.mu.Unlock()
			log.Debug("config sent", zap.String("frame", kind), zap.String("version", cur.Version))
			setBehind(false)
		}
		select {
		case <-r.Context().Done():
			return
		case <-changed:
		case <-ping.C:
			if !write(FramePing, func(w io.Writer) error { _, err := io.WriteString(w, `{"type":"ping"}`+"\n"); return err }) {
				return
			}
		}
	}
}

type countingWriter struct {
	w io.Writer
	n int
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += n
	return n, err
}

func (s *Server) ack(w http.ResponseWriter, r *http.Request) {
	node, pod, err := s.proxyNode(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	var a Ack
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&a); err != nil || a.Version == "" {
		s.fail(w, &httpError{http.StatusBadRequest, fmt.Sprintf("ack body must be {\"version\":...,\"applied\":bool,\"error\":...}: %v", err)})
		return
	}
	if len(a.Error) > 4096 {
		a.Error = a.Error[:4096]
	}
	if len(a.Plugins) > 64 {
		a.Plugins = a.Plugins[:64]
	}
	for i := range a.Plugins {
		if len(a.Plugins[i].Error) > 2048 {
			a.Plugins[i].Error = a.Plugins[i].Error[:2048]
		}
	}
	result := "applied"
	if !a.Applied {
		result = "rejected"
		s.log.Warn("proxy rejected its config", zap.String("node", node), zap.String("pod", pod), zap.String("version", a.Version), zap.String("error", a.Error))
	}
	s.m.Acks.WithLabelValues(result).Inc()
	s.mu.Lock()
	changed := false
	for _, st := range s.live {
		if st.Node == node && st.Pod == pod {
			changed = changed || !reflect.DeepEqual(st.AckPlugins, a.Plugins)
			st.AckVersion, st.AckApplied, st.AckError, st.AckPlugins = a.Version, a.Applied, a.Error, a.Plugins
		}
	}
	s.mu.Unlock()
	if changed && s.o.OnPluginErrors != nil {
		s.o.OnPluginErrors()
	}
	w.WriteHeader(http.StatusNoContent)
}

// ReportedPluginError is a plugin load error and the node that reported it.
type ReportedPluginError struct {
	Node  string
	Error string
}

// PluginErrors returns, by plugin name, the error a connected proxy
// reported for it (the first by node name).
func (s *Server) PluginErrors() map[string]ReportedPluginError {
	out := map[string]ReportedPluginError{}
	for _, st := range s.Streams() {
		for _, pe := range st.AckPlugins {
			if _, ok := out[pe.Name]; !ok {
				out[pe.Name] = ReportedPluginError{Node: st.Node, Error: pe.Error}
			}
		}
	}
	return out
}

// Streams lists the open streams, by node then pod.
func (s *Server) Streams() []streamState {
	s.mu.Lock()
	out := make([]streamState, 0, len(s.live))
	for _, st := range s.live {
		out = append(out, *st)
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Node != out[j].Node {
			return out[i].Node < out[j].Node
		}
		return out[i].Pod < out[j].Pod
	})
	return out
}

// UpdateLag refreshes the per-node lag gauge: 0 when the node's proxy
// acked the current version, else the time since it was published.
func (s *Server) UpdateLag() {
	res, at, _ := s.o.Hub.Current()
	if res == nil {
		return
	}
	acked := map[string]bool{}
	for _, st := range s.Streams() {
		if n := res.Node(st.Node); n != nil && st.AckVersion == n.Version && st.AckApplied {
			acked[st.Node] = true
		}
	}
	s.m.ProxyVersion.Reset()
	for _, node := range res.Nodes() {
		if acked[node] {
			s.m.ProxyVersion.WithLabelValues(node).Set(0)
		} else {
			s.m.ProxyVersion.WithLabelValues(node).Set(time.Since(at).Seconds())
		}
	}
}

func (s *Server) debug(w http.ResponseWriter, r *http.Request) {
	c, err := s.authenticateDebug(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	if s.o.Authz == nil {
		s.fail(w, &httpError{http.StatusForbidden, "the debug API is disabled"})
		return
	}
	ok, why, err := s.o.Authz.AllowedDebug(r.Context(), c)
	if err != nil {
		s.fail(w, &httpError{http.StatusServiceUnavailable, err.Error()})
		return
	}
	if !ok {
		msg := fmt.Sprintf("%s may not read the debug API: RBAC must allow get on the non-resource URL %s", c.User, DebugPath)
		if why != "" {
			msg += " (" + why + ")"
		}
		s.fail(w, &httpError{http.StatusForbidden, msg})
		return
	}
	view := r.PathValue("view")
	var v any
	switch view {
	case "streams":
		v = map[string]any{"replica": s.o.Replica, "streams": s.Streams()}
	case "config":
		node := r.URL.Query().Get("node")
		res, _, _ := s.o.Hub.Current()
		n := res.Node(node)
		if n == nil {
			s.fail(w, &httpError{http.StatusNotFound, fmt.Sprintf("no config for node %q; ?node=<name> picks one of %v", node, res.Nodes())})
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, err := n.WriteTo(w)
		s.wrote(0, err)
		return
	default:
		f, ok := s.o.Debug[view]
		if !ok {
			names := []string{"config", "streams"}
			for k := range s.o.Debug {
				names = append(names, k)
			}
			sort.Strings(names)
			s.fail(w, &httpError{http.StatusNotFound, fmt.Sprintf("no debug view %q; views: %s", view, strings.Join(names, ", "))})
			return
		}
		if v, err = f(r); err != nil {
			s.fail(w, err)
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	s.wrote(0, enc.Encode(v))
}

// Serve runs srv on l until ctx ends, then shuts it down gracefully
// (streams are cut after grace; proxies reconnect elsewhere).
func Serve(ctx context.Context, srv *http.Server, l net.Listener, grace time.Duration) error {
	// Requests (streams included) end when ctx does, so Shutdown does not
	// wait for streams that would never go idle.
	srv.BaseContext = func(net.Listener) context.Context { return ctx }
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
