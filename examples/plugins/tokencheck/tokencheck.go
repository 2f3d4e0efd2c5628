package tokencheck

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
)

// Config is the plugin's configuration.
type Config struct {
	// TokenHashes are the hex SHA-256 hashes of the accepted tokens
	// (`printf %s "$TOKEN" | sha256sum`). At least one.
	TokenHashes []string `json:"tokenHashes"`
	// Header carries the token. Default Authorization, as "Bearer <token>";
	// any other header carries the bare token.
	Header string `json:"header,omitempty"`
	// Realm names the protected space in the challenge. Default "mesh".
	Realm string `json:"realm,omitempty"`
	// KeepToken passes the header on to the upstream. Default false.
	KeepToken bool `json:"keepToken,omitempty"`
}

// CreateConfig returns the default configuration (it has no hashes: New
// refuses it until some are configured).
func CreateConfig() *Config {
	return &Config{Header: "Authorization", Realm: "mesh"}
}

// TokenCheck is the middleware.
type TokenCheck struct {
	next      http.Handler
	hashes    [][]byte
	header    string
	bearer    bool
	challenge string
	keep      bool
}

// New checks the configuration and returns the middleware.
func New(ctx context.Context, next http.Handler, config *Config, name string) (http.Handler, error) {
	if len(config.TokenHashes) == 0 {
		return nil, fmt.Errorf("tokenHashes: at least one SHA-256 hash is required")
	}
	t := &TokenCheck{next: next, header: http.CanonicalHeaderKey(config.Header), keep: config.KeepToken}
	if t.header == "" {
		return nil, fmt.Errorf("header: must name a header")
	}
	t.bearer = t.header == "Authorization"
	for i, h := range config.TokenHashes {
		b, err := hex.DecodeString(strings.TrimSpace(h))
		if err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("tokenHashes[%d]: not a hex SHA-256 hash (64 hex digits)", i)
		}
		t.hashes = append(t.hashes, b)
	}
	if strings.ContainsAny(config.Realm, "\"\\\r\n") {
		return nil, fmt.Errorf("realm: %q contains a quote, backslash or line break", config.Realm)
	}
	t.challenge = `Bearer realm="` + config.Realm + `"`
	return t, nil
}

func (t *TokenCheck) ServeHTTP(rw http.ResponseWriter, req *http.Request) {
	token, presented := t.token(req)
	if !presented {
		t.deny(rw, "")
		return
	}
	sum := sha256.Sum256([]byte(token))
	match := 0
	for _, h := range t.hashes {
		match |= subtle.ConstantTimeCompare(sum[:], h) // no early exit
	}
	if match != 1 {
		t.deny(rw, `, error="invalid_token"`)
		return
	}
	if !t.keep {
		req.Header.Del(t.header)
	}
	t.next.ServeHTTP(rw, req)
}

// token returns the presented token.
func (t *TokenCheck) token(req *http.Request) (string, bool) {
	v := req.Header.Get(t.header)
	if !t.bearer {
		return v, v != ""
	}
	scheme, token, ok := strings.Cut(v, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

func (t *TokenCheck) deny(rw http.ResponseWriter, detail string) {
	h := rw.Header()
	h.Set("WWW-Authenticate", t.challenge+detail)
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	rw.WriteHeader(http.StatusUnauthorized)
	_, _ = rw.Write([]byte("401 Unauthorized: a valid bearer token is required\n"))
}
