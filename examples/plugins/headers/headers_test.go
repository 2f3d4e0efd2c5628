package headers

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// cases are run natively here and interpreted in interp_test.go.
var cases = []struct {
	name    string
	config  string
	reqIn   http.Header // sent by the client
	reqOut  http.Header // seen upstream (nil: not checked)
	respOut http.Header // seen by the client
	absent  []string    // response headers the client must not see
}{
	{
		name:   "set and remove request headers",
		config: `{"setRequestHeaders":{"x-mesh-client":"legacy"},"removeRequestHeaders":["X-Debug"]}`,
		reqIn:  http.Header{"X-Debug": {"1"}, "X-Mesh-Client": {"spoofed"}},
		reqOut: http.Header{"X-Mesh-Client": {"legacy"}},
	},
	{
		name:    "set and remove response headers over the upstream's",
		config:  `{"setResponseHeaders":{"Cache-Control":"no-store"},"removeResponseHeaders":["server"]}`,
		respOut: http.Header{"Cache-Control": {"no-store"}, "X-Upstream": {"yes"}},
		absent:  []string{"Server"},
	},
	{
		name:    "no config changes nothing",
		config:  `{}`,
		reqIn:   http.Header{"X-Debug": {"1"}},
		reqOut:  http.Header{"X-Debug": {"1"}},
		respOut: http.Header{"Server": {"upstream/1.0"}, "Cache-Control": {"max-age=60"}},
	},
}

// upstream answers with headers a plugin may edit, and echoes the request
// headers it saw as Seen-* headers.
var upstream = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	for k, v := range r.Header {
		w.Header()["Seen-"+k] = v
	}
	w.Header().Set("Server", "upstream/1.0")
	w.Header().Set("Cache-Control", "max-age=60")
	w.Header().Set("X-Upstream", "yes")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte("hello"))
})

func decode(t *testing.T, s string) *Config {
	t.Helper()
	c := CreateConfig()
	if err := json.Unmarshal([]byte(s), c); err != nil {
		t.Fatal(err)
	}
	return c
}

// response is what the client got.
type response struct {
	status int
	header http.Header
	body   string
}

func check(t *testing.T, resp response, i int) {
	t.Helper()
	tc := cases[i]
	if resp.status != http.StatusOK || resp.body != "hello" {
		t.Fatalf("%d %q", resp.status, resp.body)
	}
	for k, v := range tc.reqOut {
		if got := resp.header.Values("Seen-" + k); strings.Join(got, ",") != strings.Join(v, ",") {
			t.Errorf("upstream saw %s = %v, want %v", k, got, v)
		}
	}
	if tc.reqOut != nil {
		for k := range tc.reqIn {
			if _, ok := tc.reqOut[k]; !ok && resp.header.Get("Seen-"+k) != "" {
				t.Errorf("upstream saw %s, which should have been removed", k)
			}
		}
	}
	for k, v := range tc.respOut {
		if got := resp.header.Values(k); strings.Join(got, ",") != strings.Join(v, ",") {
			t.Errorf("client saw %s = %v, want %v", k, got, v)
		}
	}
	for _, k := range tc.absent {
		if v := resp.header.Get(k); v != "" {
			t.Errorf("client saw %s = %q, want it removed", k, v)
		}
	}
}

// do sends a GET with reqIn to h over a real socket.
func do(t *testing.T, h http.Handler, reqIn http.Header) response {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	for k, v := range reqIn {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header, string(b)}
}

func TestNative(t *testing.T) {
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, err := New(context.Background(), upstream, decode(t, tc.config), "headers")
			if err != nil {
				t.Fatal(err)
			}
			check(t, do(t, h, tc.reqIn), i)
		})
	}
}

func TestConfigErrors(t *testing.T) {
	for config, want := range map[string]string{
		`{"setRequestHeaders":{"bad header":"x"}}`:   `setRequestHeaders: "bad header" is not a valid header name`,
		`{"removeResponseHeaders":["ok",""]}`:        `removeResponseHeaders[1]: "" is not a valid header name`,
		`{"setResponseHeaders":{"X-A":"a\r\nb: c"}}`: "setResponseHeaders[X-A]: the value contains CR, LF or NUL",
	} {
		_, err := New(context.Background(), upstream, decode(t, config), "headers")
		if err == nil || err.Error() != want {
			t.Errorf("%s: got %v, want %q", config, err, want)
		}
	}
}

func TestStreamingKeepsFlushing(t *testing.T) {
	h, err := New(context.Background(), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := w.(http.Flusher); !ok {
			t.Error("the response writer passed on lost http.Flusher")
		}
	}), decode(t, `{"setResponseHeaders":{"X-A":"1"}}`), "headers")
	if err != nil {
		t.Fatal(err)
	}
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
}
