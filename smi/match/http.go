package match

import (
	"fmt"
	"net/http"
	"regexp"
	"regexp/syntax"
	"strconv"
	"strings"
)

// Header is one header condition: the header Name (case-insensitive) must be
// present and its value must match Value, an RE2 regular expression anchored
// at the start (as SMI pathRegex). An empty Value only requires presence.
type Header struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// HTTPSpec is one HTTPRouteGroup match as plain data (JSON-serialisable).
type HTTPSpec struct {
	Name      string   `json:"name,omitempty"`
	PathRegex string   `json:"pathRegex,omitempty"` // "" = any path; RE2, anchored at the start only
	Methods   []string `json:"methods,omitempty"`   // empty or "*" = any method
	Headers   []Header `json:"headers,omitempty"`   // ANDed
}

// HTTP is a compiled HTTPSpec. It is immutable and safe for concurrent use.
type HTTP struct {
	spec      HTTPSpec
	path      *regexp.Regexp // nil: any path
	anyMethod bool
	methods   []string // exact, case-sensitive method names
	headers   []compiledHeader
}

type compiledHeader struct {
	canonical string         // textproto canonical form, for the fast map lookup
	name      string         // as written, for the case-insensitive fallback scan
	value     *regexp.Regexp // nil: presence only
}

// CompileHTTP validates and compiles s. The error starts with the field path
// inside the match (`pathRegex`, `methods[1]`, `headers[0].name`, ...) so the
// caller can prefix the object and match position.
func CompileHTTP(s HTTPSpec) (*HTTP, error) {
	return buildHTTP(s, true)
}

// CheckHTTP returns the error CompileHTTP would, without compiling the
// regular expressions into programs: validators use it, and leave the
// compiling to whoever serves the match.
func CheckHTTP(s HTTPSpec) error {
	_, err := buildHTTP(s, false)
	return err
}

func buildHTTP(s HTTPSpec, compile bool) (*HTTP, error) {
	m := &HTTP{}
	if compile {
		m.spec = cloneSpec(s)
	}
	if s.PathRegex != "" {
		re, err := prefix(s.PathRegex, compile)
		if err != nil {
			return nil, fmt.Errorf("pathRegex %q: %w", s.PathRegex, err)
		}
		m.path = re
	}
	if len(s.Methods) == 0 {
		m.anyMethod = true
	}
	for i, meth := range s.Methods {
		if err := CheckMethod(meth); err != nil {
			return nil, fmt.Errorf("methods[%d] %q: %w", i, meth, err)
		}
		if meth == "*" {
			m.anyMethod = true
			continue
		}
		if compile {
			m.methods = append(m.methods, meth)
		}
	}
	if m.anyMethod {
		m.methods = nil
	}
	for i, h := range s.Headers {
		if !isToken(h.Name) {
			return nil, fmt.Errorf("headers[%d].name %q: not a valid HTTP header name; use letters, digits and -", i, h.Name)
		}
		ch := compiledHeader{canonical: http.CanonicalHeaderKey(h.Name), name: h.Name}
		if h.Value != "" {
			re, err := prefix(h.Value, compile)
			if err != nil {
				return nil, fmt.Errorf("headers[%d].value %q: %w", i, h.Value, err)
			}
			ch.value = re
		}
		if compile {
			m.headers = append(m.headers, ch)
		}
	}
	return m, nil
}

// prefix checks expr as RE2 and, when compile is set, compiles it anchored
// at the start only. The expression is parsed on its own first so that
// input such as `a)(b`, which would become valid once wrapped in a group,
// is still rejected. Parsing finds every error compiling would (syntax,
// nesting depth, size); compiling only adds the program.
func prefix(expr string, compile bool) (*regexp.Regexp, error) {
	if _, err := syntax.Parse(expr, syntax.Perl); err != nil {
		return nil, fmt.Errorf("not a valid RE2 regular expression: %w", err)
	}
	if !compile {
		return nil, nil
	}
	return regexp.Compile(`^(?:` + expr + `)`)
}

// Key identifies s: its fields, unambiguously joined. Equal keys mean
// equal specs, so compiled matches can be shared by key.
func (s HTTPSpec) Key() string {
	var b strings.Builder
	w := func(v string) {
		b.WriteString(strconv.Itoa(len(v)))
		b.WriteByte(':')
		b.WriteString(v)
	}
	w(s.Name)
	w(s.PathRegex)
	b.WriteString(strconv.Itoa(len(s.Methods)))
	for _, m := range s.Methods {
		w(m)
	}
	b.WriteString(strconv.Itoa(len(s.Headers)))
	for _, h := range s.Headers {
		w(h.Name)
		w(h.Value)
	}
	return b.String()
}

// Match reports whether a request with this method, path and header set is
// selected. All conditions are ANDed. Match does not allocate.
func (m *HTTP) Match(method, path string, h http.Header) bool {
	if m == nil {
		return false
	}
	if !m.anyMethod {
		ok := false
		for _, want := range m.methods {
			if want == method {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if m.path != nil && !m.path.MatchString(path) {
		return false
	}
	for i := range m.headers {
		if !m.headers[i].match(h) {
			return false
		}
	}
	return true
}

func (c *compiledHeader) match(h http.Header) bool {
	if vs, ok := h[c.canonical]; ok {
		if c.anyValue(vs) {
			return true
		}
	}
	// Header maps built by hand (or by HTTP/2 code paths) may hold keys that
	// are not in canonical form; header names are case-insensitive.
	for k, vs := range h {
		if k != c.canonical && strings.EqualFold(k, c.name) && c.anyValue(vs) {
			return true
		}
	}
	return false
}

// anyValue: a header that appears several times (or with a comma-joined
// value) matches when any one of its field lines matches.
func (c *compiledHeader) anyValue(vs []string) bool {
	if c.value == nil {
		return true
	}
	for _, v := range vs {
		if c.value.MatchString(v) {
			return true
		}
	}
	return false
}

// Spec returns the spec m was compiled from (a copy).
func (m *HTTP) Spec() HTTPSpec {
	if m == nil {
		return HTTPSpec{}
	}
	return cloneSpec(m.spec)
}

// String renders the match for humans, e.g. `GET,POST /api/.* [x-canary: true]`.
func (m *HTTP) String() string {
	if m == nil {
		return "<nil>"
	}
	var b strings.Builder
	if m.anyMethod {
		b.WriteString("*")
	} else {
		b.WriteString(strings.Join(m.methods, ","))
	}
	b.WriteString(" ")
	if m.spec.PathRegex == "" {
		b.WriteString("<any path>")
	} else {
		b.WriteString(m.spec.PathRegex)
	}
	for _, h := range m.spec.Headers {
		fmt.Fprintf(&b, " [%s: %s]", h.Name, h.Value)
	}
	return b.String()
}

// AnyHTTP reports whether any of the matches matches (matches are ORed) and
// the index of the first one that does. An empty list matches nothing; nil
// entries are skipped.
func AnyHTTP(ms []*HTTP, method, path string, h http.Header) (int, bool) {
	for i, m := range ms {
		if m != nil && m.Match(method, path, h) {
			return i, true
		}
	}
	return -1, false
}

// Ports reports whether port p is selected by a TCPRoute/UDPRoute ports list
// (empty = all ports).
func Ports(ports []int32, p int32) bool {
	if len(ports) == 0 {
		return true
	}
	for _, q := range ports {
		if q == p {
			return true
		}
	}
	return false
}

// CheckMethod reports whether s is usable in HTTPMatch.methods: "*" or an
// HTTP method token (RFC 9110 section 9). Methods are case-sensitive, so a
// method with lower-case letters is rejected: it would never match the
// standard methods and is almost always a typo for the upper-case name.
func CheckMethod(s string) error {
	if s == "*" {
		return nil
	}
	if !isToken(s) {
		return fmt.Errorf("not an HTTP method; use \"*\" or a name such as GET, POST, PUT, DELETE, PATCH, HEAD, OPTIONS, CONNECT, TRACE")
	}
	if strings.ToUpper(s) != s {
		return fmt.Errorf("HTTP methods are case-sensitive; write %q", strings.ToUpper(s))
	}
	return nil
}

func cloneSpec(s HTTPSpec) HTTPSpec {
	out := HTTPSpec{Name: s.Name, PathRegex: s.PathRegex}
	if s.Methods != nil {
		out.Methods = append([]string(nil), s.Methods...)
	}
	if s.Headers != nil {
		out.Headers = append([]Header(nil), s.Headers...)
	}
	return out
}

// isToken reports whether s is a non-empty RFC 9110 token.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !tokenChar(s[i]) {
			return false
		}
	}
	return true
}

func tokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}
