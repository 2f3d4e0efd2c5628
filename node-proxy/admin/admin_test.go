package admin_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trellis-mesh/trellis/internal/version"
	"github.com/trellis-mesh/trellis/node-proxy/admin"
	"github.com/trellis-mesh/trellis/node-proxy/config"
)

type state struct {
	why   string
	cfg   *config.Config
	at    time.Time
	rej   string
	rejAt time.Time
}

func (s state) Ready() string                      { return s.why }
func (s state) Live() (*config.Config, time.Time)  { return s.cfg, s.at }
func (s state) LastRejection() (string, time.Time) { return s.rej, s.rejAt }

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// TestDebugConfig: /debug/config reports the proxy's build, the served
// config and its version, readiness and the last rejection, over a real
// socket.
func TestDebugConfig(t *testing.T) {
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	cfg := &config.Config{Version: "sha256-tree:abc", Node: "node-a"}
	cases := []struct {
		name  string
		s     state
		ready int
		check func(t *testing.T, d admin.Debug)
	}{
		{"serving", state{cfg: cfg, at: at}, 200, func(t *testing.T, d admin.Debug) {
			if d.Version != "sha256-tree:abc" || !d.AppliedAt.Equal(at) || !d.Ready || d.Config == nil || d.Config.Node != "node-a" {
				t.Errorf("debug %+v", d)
			}
		}},
		{"before the first config", state{why: "no config yet"}, 503, func(t *testing.T, d admin.Debug) {
			if d.Version != "" || d.Ready || d.NotReadyReason != "no config yet" || d.Config != nil {
				t.Errorf("debug %+v", d)
			}
		}},
		{"a rejected config", state{cfg: cfg, at: at, rej: "bad regexp", rejAt: at.Add(time.Minute)}, 200, func(t *testing.T, d admin.Debug) {
			if d.LastRejection != "bad regexp" || !d.RejectedAt.Equal(at.Add(time.Minute)) || d.Version != "sha256-tree:abc" {
				t.Errorf("debug %+v", d)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(admin.Handler(tc.s, prometheus.NewRegistry()))
			defer srv.Close()
			code, body := get(t, srv.URL+"/debug/config")
			if code != 200 {
				t.Fatalf("/debug/config: %d %s", code, body)
			}
			var d admin.Debug
			if err := json.Unmarshal([]byte(body), &d); err != nil {
				t.Fatal(err)
			}
			if d.ProxyVersion == "" || d.ProxyVersion != version.Get() {
				t.Errorf("proxyVersion %q, want %q", d.ProxyVersion, version.Get())
			}
			tc.check(t, d)
			if code, body := get(t, srv.URL+"/ready"); code != tc.ready || (code != 200 && !strings.Contains(body, tc.s.why)) {
				t.Errorf("/ready: %d %s, want %d", code, body, tc.ready)
			}
		})
	}
}
