package tokencheck

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

func hash(token string) string {
	s := sha256.Sum256([]byte(token))
	return hex.EncodeToString(s[:])
}

var twoTokens = fmt.Sprintf(`{"tokenHashes":[%q,%q]}`, hash("first-token"), hash("second-token"))

// cases run natively here and interpreted in interp_test.go.
var cases = []struct {
	name      string
	config    string
	header    http.Header
	status    int
	challenge string // WWW-Authenticate on 401
	upstream  string // the token header the upstream saw
}{
	{"first token", twoTokens, http.Header{"Authorization": {"Bearer first-token"}}, 200, "", ""},
	{"second token, scheme in lower case", twoTokens, http.Header{"Authorization": {"bearer second-token"}}, 200, "", ""},
	{"no token", twoTokens, nil, 401, `Bearer realm="mesh"`, ""},
	{"wrong token", twoTokens, http.Header{"Authorization": {"Bearer third-token"}}, 401, `Bearer realm="mesh", error="invalid_token"`, ""},
	{"token of another scheme", twoTokens, http.Header{"Authorization": {"Basic Zmlyc3QtdG9rZW4="}}, 401, `Bearer realm="mesh"`, ""},
	{"empty bearer", twoTokens, http.Header{"Authorization": {"Bearer "}}, 401, `Bearer realm="mesh"`, ""},
	{"the token itself as a hash", fmt.Sprintf(`{"tokenHashes":[%q]}`, hash("x")), http.Header{"Authorization": {"Bearer " + hash("x")}}, 401, `Bearer realm="mesh", error="invalid_token"`, ""},
	{"custom header kept", fmt.Sprintf(`{"tokenHashes":[%q],"header":"x-api-key","keepToken":true,"realm":"shop"}`, hash("k")), http.Header{"X-Api-Key": {"k"}}, 200, "", "k"},
	{"custom header, wrong key", fmt.Sprintf(`{"tokenHashes":[%q],"header":"x-api-key","realm":"shop"}`, hash("k")), http.Header{"X-Api-Key": {"nope"}}, 401, `Bearer realm="shop", error="invalid_token"`, ""},
}

// upstream reports the token headers it saw.
var upstream = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Seen-Authorization", r.Header.Get("Authorization"))
	w.Header().Set("Seen-Key", r.Header.Get("X-Api-Key"))
	_, _ = io.WriteString(w, "welcome")
})

func decode(t *testing.T, s string) *Config {
	t.Helper()
	c := CreateConfig()
	if err := json.Unmarshal([]byte(s), c); err != nil {
		t.Fatal(err)
	}
	return c
}

func run(t *testing.T, h http.Handler, i int) {
	t.Helper()
	tc := cases[i]
	srv := httptest.NewServer(h)
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	for k, v := range tc.header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != tc.status {
		t.Fatalf("status %d %q, want %d", resp.StatusCode, b, tc.status)
	}
	if tc.status == 401 {
		if got := resp.Header.Get("WWW-Authenticate"); got != tc.challenge {
			t.Errorf("challenge %q, want %q", got, tc.challenge)
		}
		return
	}
	if string(b) != "welcome" {
		t.Errorf("body %q", b)
	}
	if got := resp.Header.Get("Seen-Authorization") + resp.Header.Get("Seen-Key"); got != tc.upstream {
		t.Errorf("upstream saw token %q, want %q", got, tc.upstream)
	}
}

func TestNative(t *testing.T) {
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, err := New(context.Background(), upstream, decode(t, tc.config), "tokencheck")
			if err != nil {
				t.Fatal(err)
			}
			run(t, h, i)
		})
	}
}

func TestConfigErrors(t *testing.T) {
	for config, want := range map[string]string{
		`{}`:                      "tokenHashes: at least one SHA-256 hash is required",
		`{"tokenHashes":["abc"]}`: "tokenHashes[0]: not a hex SHA-256 hash (64 hex digits)",
		`{"tokenHashes":["` + hash("a") + `","zz"]}`:           "tokenHashes[1]: not a hex SHA-256 hash (64 hex digits)",
		`{"tokenHashes":["` + hash("a") + `"],"header":""}`:    "header: must name a header",
		`{"tokenHashes":["` + hash("a") + `"],"realm":"a\"b"}`: `realm: "a\"b" contains a quote, backslash or line break`,
	} {
		_, err := New(context.Background(), upstream, decode(t, config), "tokencheck")
		if err == nil || err.Error() != want {
			t.Errorf("%s: got %v, want %q", config, err, want)
		}
	}
}
