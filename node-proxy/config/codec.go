package config

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"time"
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
func DecodeBytes(data []byte) (*Config, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var c Config
	if err := dec.Decode(&c); err != nil {
		return nil, describeJSONError(data, err)
	}
	if dec.More() {
		return nil, errors.New("config: unexpected data after the JSON object; a config file holds exactly one object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("config: unexpected data after the JSON object; a config file holds exactly one object")
	}
	if err := checkKeys(data, reflect.TypeFor[Config]()); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if c.Version == "" {
		c.Version = c.Hash()
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// LoadFile decodes and validates the config at path.
func LoadFile(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	defer f.Close()
	c, err := Decode(f)
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

// Hash returns the content hash of c with Version cleared: "sha256:<hex>".
// encoding/json writes struct fields in declaration order and map keys
// sorted, so the hash is deterministic for equal content.
func (c *Config) Hash() string {
	cp := *c
	cp.Version = ""
	b, err := json.Marshal(&cp)
	if err != nil {
		// Only json.RawMessage holding invalid JSON can fail; Decode never
		// produces that. Fall back to a hash of the error so it is stable.
		b = []byte("unmarshalable:" + err.Error())
	}
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
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
