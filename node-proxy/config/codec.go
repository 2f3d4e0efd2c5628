package config

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"time"

	kjson "sigs.k8s.io/json"
)

// MaxSize is the largest encoded config Decode accepts.
const MaxSize = 64 << 20

// Duration is a time.Duration written in JSON as a Go duration string
// ("250ms", "1m30s"). A bare number is rejected to avoid unit mistakes.
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"250ms\" or \"2s\", got %s", truncate(b))
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %w", s, err)
	}
	if v < 0 {
		return fmt.Errorf("duration %q: must not be negative", s)
	}
	*d = Duration(v)
	return nil
}

func truncate(b []byte) string {
	if len(b) > 40 {
		return string(b[:40]) + "..."
	}
	return string(b)
}

// Decode reads one JSON config, rejecting unknown fields and trailing data,
// fills Version with Hash() when empty, and validates it. The error names
// the field path.
func Decode(r io.Reader) (*Config, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	if len(data) > MaxSize {
		return nil, fmt.Errorf("config is larger than %d bytes", MaxSize)
	}
	return DecodeBytes(data)
}

// DecodeBytes is Decode on a byte slice.
//
// A config is accepted by one strict, case-sensitive pass over the bytes
// (sigs.k8s.io/json, the decoder Kubernetes uses for the same purpose),
// which rejects unknown and repeated keys. Only when that pass rejects the
// input does explain re-read it, slowly, to name the field and suggest the
// fix: at 1,000 services that keeps a load's garbage, and so the proxy's
// memory peak at start and on reload, a few megabytes smaller.
func DecodeBytes(data []byte) (*Config, error) {
	return DecodeBytesWith(data, nil)
}

// DecodeBytesWith is DecodeBytes with a step between decoding and
// validation: prepare may complete the config (the proxy fills a plugin's
// files from a development directory) and may refuse it.
func DecodeBytesWith(data []byte, prepare func(*Config) error) (*Config, error) {
	var c Config
	strict, err := kjson.UnmarshalStrict(data, &c, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil || len(strict) > 0 {
		return nil, explain(data, errors.Join(append(strict, err)...))
	}
	if prepare != nil {
		if err := prepare(&c); err != nil {
			return nil, err
		}
	}
	if c.Version == "" {
		c.Version = c.Hash()
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// explain describes why data is not a config, with the field path and a
// hint. fast is the fast pass's verdict, returned as it is should the
// careful pass find nothing wrong (the two are fuzzed to agree).
func explain(data []byte, fast error) error {
	if err := careful(data); err != nil {
		return err
	}
	return fmt.Errorf("config: %w", fast)
}

// careful is the slow, explaining pass: encoding/json with unknown fields
// disallowed, then the key walk for what it lets through (keys matched
// regardless of case, keys repeated).
func careful(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var c Config
	if err := dec.Decode(&c); err != nil {
		return describeJSONError(data, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("config: unexpected data after the JSON object; a config file holds exactly one object")
	}
	if err := checkKeys(data, reflect.TypeFor[Config]()); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	return nil
}

// LoadFile decodes and validates the config at path.
func LoadFile(path string) (*Config, error) {
	return LoadFileWith(path, nil)
}

// LoadFileWith is LoadFile with DecodeBytesWith's prepare step.
func LoadFileWith(path string, prepare func(*Config) error) (*Config, error) {
	// Read in one allocation of the file's size (io.ReadAll would double
	// its way up, leaving garbage of about the file's size).
	if st, err := os.Stat(path); err == nil && st.Size() > MaxSize {
		return nil, fmt.Errorf("config file %s: larger than %d bytes", path, MaxSize)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	c, err := DecodeBytesWith(data, prepare)
	if err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	return c, nil
}

// describeJSONError turns encoding/json errors into messages with a field
// path or a line:column position.
func describeJSONError(data []byte, err error) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		line, col := position(data, se.Offset)
		return fmt.Errorf("config: invalid JSON at line %d column %d: %w", line, col, err)
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			field = "(top level)"
		}
		return fmt.Errorf("config: %s: must be %s, got JSON %s", field, te.Type, te.Value)
	case errors.Is(err, io.EOF):
		return errors.New("config: empty input; expected a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errors.New("config: truncated JSON")
	}
	// Unknown fields and custom unmarshalers: encoding/json reports
	// `json: unknown field "x"`; keep its text, it names the field.
	return fmt.Errorf("config: %w", err)
}

func position(data []byte, off int64) (line, col int) {
	line, col = 1, 1
	for i := int64(0); i < off && i < int64(len(data)); i++ {
		if data[i] == '\n' {
			line++
			col = 1
		} else {
			col++
		}
	}
	return line, col
}

// HashPrefix starts every version Hash returns.
const HashPrefix = "sha256-tree:"

// Digest is the SHA-256 of one piece of a config's encoding.
type Digest [sha256.Size]byte

// DigestOf hashes one encoded piece.
func DigestOf(b []byte) Digest { return sha256.Sum256(b) }

// Hash returns the content hash of c, ignoring Version. It is a two-level
// (Merkle-style) hash so that a producer or a consumer holding the digests
// of the pieces can compute it after a change by hashing only what changed
// plus 32 bytes per Service:
//
//	header    = json.Marshal of c with Version, Services and LocalPods cleared
//	service_i = json.Marshal of Services[i]
//	localPods = json.Marshal of LocalPods, "[]" when there are none
//	Hash      = "sha256-tree:" + hex(SHA-256("trellis-config/2\n" ||
//	            SHA-256(header) || uint64 big-endian len(Services) ||
//	            SHA-256(service_0) || ... || SHA-256(localPods)))
//
// encoding/json writes struct fields in declaration order and map keys
// sorted, so equal content hashes equally.
func (c *Config) Hash() string {
	services := make([]Digest, len(c.Services))
	for i := range c.Services {
		services[i] = DigestOf(mustJSON(&c.Services[i]))
	}
	return HashParts(DigestOf(c.HeaderJSON()), services, DigestOf(LocalPodsJSON(c.LocalPods)))
}

// HeaderJSON is the encoding of c without Version, Services and LocalPods:
// the header piece of Hash.
func (c *Config) HeaderJSON() []byte {
	return mustJSON(&Config{Node: c.Node, Zone: c.Zone, MeshDomain: c.MeshDomain, Listeners: c.Listeners, ACL: c.ACL, Plugins: c.Plugins})
}

// LocalPodsJSON is the localPods piece of Hash: the encoded pods, "[]"
// when there are none.
func LocalPodsJSON(pods []LocalPod) []byte {
	if len(pods) == 0 {
		return []byte("[]")
	}
	return mustJSON(pods)
}

// HashParts combines the digests of the pieces into Hash's result.
func HashParts(header Digest, services []Digest, localPods Digest) string {
	return HashPieces(header, len(services), func(i int) *Digest { return &services[i] }, localPods)
}

// HashPieces is HashParts with the n Service digests given by a function
// (so callers need not gather them into a slice).
func HashPieces(header Digest, n int, service func(i int) *Digest, localPods Digest) string {
	h := sha256.New()
	h.Write([]byte(hashDomain))
	h.Write(header[:])
	var count [8]byte
	binary.BigEndian.PutUint64(count[:], uint64(n))
	h.Write(count[:])
	for i := range n {
		h.Write(service(i)[:])
	}
	h.Write(localPods[:])
	var sum Digest
	h.Sum(sum[:0])
	return HashPrefix + hex.EncodeToString(sum[:])
}

const hashDomain = "trellis-config/2\n"

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// Only json.RawMessage holding invalid JSON can fail; Decode never
		// produces that. Hash the error so the result is stable.
		return []byte("unmarshalable:" + err.Error())
	}
	return b
}

// Encode writes c as indented JSON.
func (c *Config) Encode(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(c)
}

// Domain returns MeshDomain or its default.
func (c *Config) Domain() string {
	if c.MeshDomain == "" {
		return "mesh"
	}
	return c.MeshDomain
}
