package source

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/node-proxy/config"
)

func cfg(weight int32) *config.Config {
	c := &config.Config{Node: "n1", Listeners: config.Listeners{HTTP: 10000}, Services: []config.Service{
		{Namespace: "a", Name: "web", Ports: []config.ServicePort{{Name: "http", Port: 80, TargetPort: 8080, Protocol: config.ProtocolHTTP}},
			Split: &config.Split{Backends: []config.Backend{{Service: "web", Weight: weight}}}},
		{Namespace: "b", Name: "db", Ports: []config.ServicePort{{Port: 5432, TargetPort: 5432, Protocol: config.ProtocolTCP, ListenPort: 20000}}},
	}}
	c.Version = c.Hash()
	return c
}

func snapshotFrame(c *config.Config) string {
	b, _ := json.Marshal(c)
	return fmt.Sprintf(`{"type":"snapshot","version":%q,"config":%s}`+"\n", c.Version, b)
}

// script is a controller stand-in: each connection gets the next list of
// frames, then the stream stays open (pings) until the test ends.
type script struct {
	mu    sync.Mutex
	conns [][]string
	haves []string
	auth  []string
	n     int
}

func (s *script) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == ackPath {
		w.WriteHeader(204)
		return
	}
	s.mu.Lock()
	s.haves = append(s.haves, r.Header.Get(haveHeader))
	s.auth = append(s.auth, r.Header.Get("Authorization"))
	var frames []string
	if s.n < len(s.conns) {
		frames = s.conns[s.n]
	}
	s.n++
	s.mu.Unlock()
	if frames == nil {
		http.Error(w, "no more scripted connections", http.StatusServiceUnavailable)
		return
	}
	w.WriteHeader(200)
	for _, f := range frames {
		if f == "CLOSE" {
			return
		}
		if _, err := w.Write([]byte(f)); err != nil {
			return
		}
		w.(http.Flusher).Flush()
	}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-t.C:
			if _, err := w.Write([]byte(`{"type":"ping"}` + "\n")); err != nil {
				return
			}
			w.(http.Flusher).Flush()
		}
	}
}

func run(t *testing.T, sc *script, want int) ([]*config.Config, []StreamEvent) {
	t.Helper()
	return runWith(t, sc, want, nil, nil)
}

// runWith is run with the listener wrapped (to misbehave at the TCP level)
// and the client tuned.
func runWith(t *testing.T, sc *script, want int, wrap func(net.Listener) net.Listener, tune func(*Stream)) ([]*config.Config, []StreamEvent) {
	t.Helper()
	// A cleartext HTTP/2 server, as the controller runs one.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if wrap != nil {
		l = wrap(l)
	}
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	hs := &http.Server{Handler: sc, Protocols: &p}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(l) }()
	defer func() {
		hs.Close()
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("test server: %v", err)
		}
	}()
	srv := struct{ URL string }{"http://" + addr}
	tok := t.TempDir() + "/token"
	if err := os.WriteFile(tok, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []*config.Config
	var events []StreamEvent
	ctx, cancel := context.WithCancel(context.Background())
	s := &Stream{URL: srv.URL, TokenFile: tok, MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, IdleTimeout: time.Second,
		OnEvent: func(e StreamEvent) { mu.Lock(); events = append(events, e); mu.Unlock() }}
	if tune != nil {
		tune(s)
	}
	done := make(chan error, 1)
	go func() {
		done <- s.Run(ctx, func(_ context.Context, c *config.Config) error {
			mu.Lock()
			got = append(got, c)
			mu.Unlock()
			return nil
		})
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n >= want || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) < want {
		if len(events) > 10 {
			events = events[len(events)-10:]
		}
		t.Fatalf("applied %d configs, want %d; last events %+v", len(got), want, events)
	}
	return got, events
}

func TestStreamDeltaApplied(t *testing.T) {
	c1, c2 := cfg(1), cfg(2)
	up, _ := json.Marshal([]config.Service{c2.Services[0]})
	sc := &script{conns: [][]string{{
		snapshotFrame(c1),
		fmt.Sprintf(`{"type":"delta","base":%q,"version":%q,"upsert":%s}`+"\n", c1.Version, c2.Version, up),
	}}}
	got, _ := run(t, sc, 2)
	if got[1].Version != c2.Version || got[1].Services[0].Split.Backends[0].Weight != 2 {
		t.Fatalf("delta not applied: %+v", got[1])
	}
	if sc.auth[0] != "Bearer secret" {
		t.Errorf("authorization %q", sc.auth[0])
	}
}

// TestStreamResyncsOnBadDelta: a delta that does not reproduce its version
// (or names a base we do not hold) is never applied; the client reconnects
// without claiming a version and gets a snapshot.
func TestStreamResyncsOnBadDelta(t *testing.T) {
	c1, c2 := cfg(1), cfg(2)
	up, _ := json.Marshal([]config.Service{c2.Services[0]})
	bad := []string{
		fmt.Sprintf(`{"type":"delta","base":%q,"version":"sha256:bogus","upsert":%s}`+"\n", c1.Version, up),
		fmt.Sprintf(`{"type":"delta","base":"sha256:other","version":%q,"upsert":%s}`+"\n", c2.Version, up),
		fmt.Sprintf(`{"type":"delta","base":%q,"version":%q,"upsert":[{"namespace":"a","name":"web","bogus":1}]}`+"\n", c1.Version, c2.Version),
		`{"type":"current","version":"sha256:nope"}` + "\n",
		"not json\n",
	}
	for i, b := range bad {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			sc := &script{conns: [][]string{{snapshotFrame(c1), b}, {snapshotFrame(c2)}}}
			got, _ := run(t, sc, 2)
			if len(got) != 2 || got[1].Version != c2.Version {
				t.Fatalf("got %d configs", len(got))
			}
			sc.mu.Lock()
			defer sc.mu.Unlock()
			if sc.haves[0] != "" || sc.haves[1] != "" {
				t.Errorf("after a bad frame the client still claimed %q", sc.haves[1])
			}
		})
	}
}

// TestStreamReconnectClaimsVersion: after a drop the client says what it
// holds, and a "current" answer applies nothing.
func TestStreamReconnectClaimsVersion(t *testing.T) {
	c1, c2 := cfg(1), cfg(2)
	sc := &script{conns: [][]string{
		{snapshotFrame(c1), "CLOSE"},
		{fmt.Sprintf(`{"type":"current","version":%q}`+"\n", c1.Version), "CLOSE"},
		{snapshotFrame(c2)},
	}}
	got, events := run(t, sc, 2)
	if got[1].Version != c2.Version {
		t.Fatalf("got %v", got[1].Version)
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.haves[1] != c1.Version || sc.haves[2] != c1.Version {
		t.Errorf("reconnects claimed %q, %q; want %s", sc.haves[1], sc.haves[2], c1.Version)
	}
	current := 0
	for _, e := range events {
		if e.Kind == "frame" && e.Frame == "current" {
			current++
		}
	}
	if current != 1 {
		t.Errorf("current frames seen: %d", current)
	}
}

// silentFirst holds the first accepted connection open without ever
// answering: a replica whose process froze, or whose address is still in
// the Service rules after it went away.
type silentFirst struct {
	net.Listener
	once sync.Once
	held chan net.Conn
}

func (l *silentFirst) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		first := false
		l.once.Do(func() { first = true })
		if !first {
			return c, nil
		}
		l.held <- c
	}
}

// TestStreamMovesOnFromSilentReplica: a connection that never answers is
// given up after HeaderTimeout and the next attempt gets the config.
func TestStreamMovesOnFromSilentReplica(t *testing.T) {
	c1 := cfg(1)
	sc := &script{conns: [][]string{{snapshotFrame(c1)}}}
	held := make(chan net.Conn, 1)
	start := time.Now()
	got, events := runWith(t, sc, 1,
		func(l net.Listener) net.Listener { return &silentFirst{Listener: l, held: held} },
		func(s *Stream) { s.HeaderTimeout = 300 * time.Millisecond })
	took := time.Since(start)
	select {
	case c := <-held:
		c.Close()
	default:
		t.Fatal("the first connection never reached the silent listener")
	}
	if got[0].Version != c1.Version {
		t.Fatalf("got version %s, want %s", got[0].Version, c1.Version)
	}
	refused := false
	for _, e := range events {
		refused = refused || (e.Kind == "refused" && e.Err != nil && strings.Contains(e.Err.Error(), "timeout"))
	}
	if !refused {
		t.Errorf("no refused event naming the timeout in %+v", events)
	}
	if took > 5*time.Second {
		t.Errorf("config arrived after %s; the header timeout is 300ms", took)
	}
}

// TestHeldHashIsConfigHash: hashing the received pieces gives Config.Hash().
func TestHeldHashIsConfigHash(t *testing.T) {
	c := cfg(1)
	c.LocalPods = []config.LocalPod{{IP: "10.0.0.1", Identity: config.Identity{ServiceAccount: "a", Namespace: "b"}}}
	c.Version = c.Hash()
	raw, _ := json.Marshal(c)
	indented, _ := json.MarshalIndent(c, "", "  ")
	for _, b := range [][]byte{raw, indented, []byte(`{}`)} {
		// Canonical bytes are hashed as received; anything else (indented,
		// unreadable) falls back to re-encoding the decoded config.
		h := newHeld(c, b)
		if len(h.services) != len(c.Services) || h.hash() != c.Version {
			t.Fatalf("from %.20q: pieces hash %s, config %s", b, h.hash(), c.Version)
		}
	}
}

func TestStreamBadURL(t *testing.T) {
	err := (&Stream{URL: "controller:9000"}).Run(context.Background(), nil)
	if err == nil || !strings.Contains(err.Error(), "must start with http:// or https://") {
		t.Fatalf("error %v", err)
	}
}

// FuzzApplyDelta: no delta frame crashes the client or yields a config
// whose hash differs from the version it claims.
func FuzzApplyDelta(f *testing.F) {
	c1 := cfg(1)
	up, _ := json.Marshal([]config.Service{cfg(2).Services[0]})
	f.Add([]byte(fmt.Sprintf(`{"type":"delta","base":%q,"version":%q,"upsert":%s}`, c1.Version, cfg(2).Version, up)))
	f.Add([]byte(fmt.Sprintf(`{"type":"delta","base":%q,"version":"x","remove":["a/web"],"localPods":[]}`, c1.Version)))
	f.Fuzz(func(t *testing.T, data []byte) {
		var fr frame
		if json.Unmarshal(data, &fr) != nil {
			return
		}
		raw, _ := json.Marshal(c1)
		indented, _ := json.MarshalIndent(c1, "", " ")
		for _, h := range []*held{newHeld(c1, raw), newHeld(c1, indented)} {
			c, err := applyDelta(h, &fr)
			if err != nil {
				continue
			}
			if c.cfg.Hash() != c.cfg.Version {
				t.Fatalf("applied delta claims %s but the config hashes to %s", c.cfg.Version, c.cfg.Hash())
			}
		}
	})
}
