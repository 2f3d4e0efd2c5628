package httpproxy

import (
	"net/http"
	"strings"
	"testing"
)

// FuzzHeaderHygiene: whatever headers a client sends, stripping leaves no
// hop-by-hop field (except "TE: trailers") and no field named in
// Connection, and reasons put in response headers are always valid
// header values.
func FuzzHeaderHygiene(f *testing.F) {
	f.Add("keep-alive, X-Secret", "trailers, deflate", "", "X-Secret", "v")
	f.Add("Upgrade", "", "h2c", "Keep-Alive", "timeout=5")
	f.Add("close", "gzip", "websocket", "Te", "x")
	f.Add(",,, ,", "TRAILERS", "H2C", "Transfer-Encoding", "chunked")
	f.Fuzz(func(t *testing.T, conn, te, upgrade, name, value string) {
		h := http.Header{}
		h.Set("Connection", conn)
		h.Set("Te", te)
		if upgrade != "" {
			h.Set("Upgrade", upgrade)
		}
		h.Add(name, value)
		h.Set("Proxy-Authorization", "secret")
		err := stripHopByHop(h)
		if err != nil {
			if !strings.Contains(err.Error(), "upgrade") {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		for _, k := range hopByHop {
			if k == "Te" {
				if v, ok := h["Te"]; ok && (len(v) != 1 || v[0] != "trailers") {
					t.Fatalf("TE left as %q", v)
				}
				continue
			}
			if _, ok := h[k]; ok {
				t.Fatalf("%s not stripped", k)
			}
		}
		for _, tok := range strings.Split(conn, ",") {
			if tok = strings.TrimSpace(tok); tok != "" && h.Get(tok) != "" && !strings.EqualFold(tok, "te") {
				t.Fatalf("field %q named in Connection survived", tok)
			}
		}
		s := sanitize(value + conn)
		for i := 0; i < len(s); i++ {
			if c := s[i]; c < 0x20 || c >= 0x7f {
				t.Fatalf("sanitize left byte %#x", c)
			}
		}
	})
}

func TestHasDotSegment(t *testing.T) {
	cases := map[string]bool{"/": false, "/a.b": false, "/a/..b": false, "/.well-known/x": false, "/a/...": false,
		"/a/../b": true, "/a/./b": true, "/a/..": true, "/.": true, "..": true, "/a/.": true, "": false}
	for p, want := range cases {
		if got := hasDotSegment(p); got != want {
			t.Errorf("%q: %v, want %v", p, got, want)
		}
	}
}
