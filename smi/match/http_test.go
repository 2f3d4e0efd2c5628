package match

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

func TestCompileHTTPErrors(t *testing.T) {
	tests := []struct {
		name string
		spec HTTPSpec
		want string // prefix of the error
	}{
		{"bad path regex", HTTPSpec{PathRegex: "("}, `pathRegex "(": not a valid RE2 regular expression`},
		{"unbalanced group that wrapping would hide", HTTPSpec{PathRegex: "a)(b"}, `pathRegex "a)(b": not a valid RE2`},
		{"perl backreference is not RE2", HTTPSpec{PathRegex: `(a)\1`}, `pathRegex "(a)\\1"`},
		{"lower-case method", HTTPSpec{Methods: []string{"GET", "post"}}, `methods[1] "post": HTTP methods are case-sensitive; write "POST"`},
		{"method with space", HTTPSpec{Methods: []string{"GET POST"}}, `methods[0] "GET POST": not an HTTP method`},
		{"empty method", HTTPSpec{Methods: []string{""}}, `methods[0] "": not an HTTP method`},
		{"empty header name", HTTPSpec{Headers: []Header{{Name: "", Value: "x"}}}, `headers[0].name "": not a valid HTTP header name`},
		{"header name with colon", HTTPSpec{Headers: []Header{{Name: "ok", Value: ""}, {Name: "a:b", Value: "x"}}}, `headers[1].name "a:b"`},
		{"bad header value regex", HTTPSpec{Headers: []Header{{Name: "x-a", Value: "[z-a]"}}}, `headers[0].value "[z-a]": not a valid RE2`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := CompileHTTP(tc.spec)
			if err == nil {
				t.Fatalf("CompileHTTP(%+v) = %v, want error starting %q", tc.spec, m, tc.want)
			}
			if !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("error = %q\nwant prefix %q", err, tc.want)
			}
		})
	}
}

func TestHTTPMatch(t *testing.T) {
	type req struct {
		method, path string
		headers      http.Header
		want         bool
	}
	tests := []struct {
		name string
		spec HTTPSpec
		reqs []req
	}{
		{"empty spec matches everything", HTTPSpec{}, []req{
			{"GET", "/", nil, true},
			{"BREW", "/coffee", http.Header{"X": {"y"}}, true},
			{"GET", "", nil, true},
		}},
		{"path regex anchored at start only", HTTPSpec{PathRegex: "/api"}, []req{
			{"GET", "/api", nil, true},
			{"GET", "/api/v1/users", nil, true},
			{"GET", "/apis", nil, true},
			{"GET", "/v1/api", nil, false},
			{"GET", "api", nil, false},
		}},
		{"explicit end anchor", HTTPSpec{PathRegex: "/metrics$"}, []req{
			{"GET", "/metrics", nil, true},
			{"GET", "/metrics/x", nil, false},
		}},
		{"alternation is grouped before anchoring", HTTPSpec{PathRegex: "/a|/b"}, []req{
			{"GET", "/a", nil, true},
			{"GET", "/b", nil, true},
			{"GET", "/x/b", nil, false},
		}},
		{"spec example /api/.*", HTTPSpec{PathRegex: "/api/.*"}, []req{
			{"GET", "/api/", nil, true},
			{"GET", "/api", nil, false},
		}},
		{"inline case-insensitive flag", HTTPSpec{PathRegex: "(?i)/API"}, []req{
			{"GET", "/api/x", nil, true},
		}},
		{"methods", HTTPSpec{Methods: []string{"GET", "HEAD"}}, []req{
			{"GET", "/", nil, true},
			{"HEAD", "/", nil, true},
			{"POST", "/", nil, false},
			{"get", "/", nil, false},
		}},
		{"star among methods means any", HTTPSpec{Methods: []string{"GET", "*"}}, []req{
			{"DELETE", "/", nil, true},
		}},
		{"extension method", HTTPSpec{Methods: []string{"PROPFIND"}}, []req{
			{"PROPFIND", "/", nil, true},
			{"GET", "/", nil, false},
		}},
		{"header presence", HTTPSpec{Headers: []Header{{Name: "X-Canary"}}}, []req{
			{"GET", "/", http.Header{"X-Canary": {""}}, true},
			{"GET", "/", http.Header{"X-Other": {"1"}}, false},
			{"GET", "/", nil, false},
		}},
		{"header name case-insensitive, value anchored at start", HTTPSpec{Headers: []Header{{Name: "user-agent", Value: ".*Android.*"}}}, []req{
			{"GET", "/", http.Header{"User-Agent": {"Mozilla/5.0 (Linux; Android 4.0.4)"}}, true},
			{"GET", "/", http.Header{"user-agent": {"Mozilla Android"}}, true}, // non-canonical key
			{"GET", "/", http.Header{"USER-AGENT": {"iPhone"}}, false},
		}},
		{"header value is a prefix match", HTTPSpec{Headers: []Header{{Name: "cookie", Value: "type=insider"}}}, []req{
			{"GET", "/", http.Header{"Cookie": {"type=insider; a=b"}}, true},
			{"GET", "/", http.Header{"Cookie": {"a=b; type=insider"}}, false},
		}},
		{"any of several header values", HTTPSpec{Headers: []Header{{Name: "X-Env", Value: "prod$"}}}, []req{
			{"GET", "/", http.Header{"X-Env": {"dev", "prod"}}, true},
			{"GET", "/", http.Header{"X-Env": {"dev", "production"}}, false},
		}},
		{"headers are ANDed", HTTPSpec{Headers: []Header{{Name: "A", Value: "1"}, {Name: "B", Value: "2"}}}, []req{
			{"GET", "/", http.Header{"A": {"1"}, "B": {"2"}}, true},
			{"GET", "/", http.Header{"A": {"1"}}, false},
			{"GET", "/", http.Header{"B": {"2"}}, false},
		}},
		{"all conditions ANDed", HTTPSpec{PathRegex: "/cart", Methods: []string{"POST"}, Headers: []Header{{Name: "X-User", Value: "[0-9]+$"}}}, []req{
			{"POST", "/cart/add", http.Header{"X-User": {"42"}}, true},
			{"GET", "/cart/add", http.Header{"X-User": {"42"}}, false},
			{"POST", "/shop", http.Header{"X-User": {"42"}}, false},
			{"POST", "/cart/add", http.Header{"X-User": {"4x2"}}, false},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := CompileHTTP(tc.spec)
			if err != nil {
				t.Fatalf("CompileHTTP: %v", err)
			}
			for _, r := range tc.reqs {
				if got := m.Match(r.method, r.path, r.headers); got != r.want {
					t.Errorf("Match(%q, %q, %v) = %v, want %v", r.method, r.path, r.headers, got, r.want)
				}
			}
		})
	}
}

func TestAnyHTTP(t *testing.T) {
	mustCompile := func(s HTTPSpec) *HTTP {
		m, err := CompileHTTP(s)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	ms := []*HTTP{
		mustCompile(HTTPSpec{Name: "metrics", PathRegex: "/metrics", Methods: []string{"GET"}}),
		nil,
		mustCompile(HTTPSpec{Name: "health", PathRegex: "/ping"}),
		mustCompile(HTTPSpec{Name: "all"}),
	}
	tests := []struct {
		ms      []*HTTP
		method  string
		path    string
		wantIdx int
		wantOK  bool
	}{
		{nil, "GET", "/", -1, false},
		{[]*HTTP{}, "GET", "/", -1, false},
		{[]*HTTP{nil}, "GET", "/", -1, false},
		{ms, "GET", "/metrics", 0, true},
		{ms, "POST", "/metrics", 3, true},
		{ms, "POST", "/ping", 2, true},
		{ms[:3], "POST", "/x", -1, false},
	}
	for _, tc := range tests {
		i, ok := AnyHTTP(tc.ms, tc.method, tc.path, nil)
		if i != tc.wantIdx || ok != tc.wantOK {
			t.Errorf("AnyHTTP(%d matches, %q, %q) = %d, %v; want %d, %v", len(tc.ms), tc.method, tc.path, i, ok, tc.wantIdx, tc.wantOK)
		}
	}
}

func TestPorts(t *testing.T) {
	tests := []struct {
		ports []int32
		p     int32
		want  bool
	}{
		{nil, 80, true},
		{[]int32{}, 1, true},
		{[]int32{3306, 6446}, 3306, true},
		{[]int32{3306, 6446}, 6446, true},
		{[]int32{3306, 6446}, 80, false},
	}
	for _, tc := range tests {
		if got := Ports(tc.ports, tc.p); got != tc.want {
			t.Errorf("Ports(%v, %d) = %v, want %v", tc.ports, tc.p, got, tc.want)
		}
	}
}

func TestSpecRoundTrip(t *testing.T) {
	in := HTTPSpec{Name: "n", PathRegex: "/x", Methods: []string{"GET"}, Headers: []Header{{Name: "A", Value: "b"}}}
	m, err := CompileHTTP(in)
	if err != nil {
		t.Fatal(err)
	}
	in.Methods[0] = "MUTATED" // the compiled match must not alias the caller's slices
	got := m.Spec()
	if got.Methods[0] != "GET" {
		t.Fatalf("Spec() aliases input: %+v", got)
	}
	got.Headers[0].Name = "MUTATED"
	if m.Spec().Headers[0].Name != "A" {
		t.Fatal("Spec() returns an aliased slice")
	}
	b, err := json.Marshal(m.Spec())
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"name":"n","pathRegex":"/x","methods":["GET"],"headers":[{"name":"A","value":"b"}]}`; string(b) != want {
		t.Fatalf("JSON = %s, want %s", b, want)
	}
	if s := m.String(); s != "GET /x [A: b]" {
		t.Fatalf("String() = %q", s)
	}
}

func TestNilSafe(t *testing.T) {
	var m *HTTP
	if m.Match("GET", "/", nil) {
		t.Fatal("nil match matched")
	}
	if s := m.Spec(); s.Name != "" || s.Methods != nil {
		t.Fatal("nil Spec not zero")
	}
}

func TestMatchDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under -race (sync.Pool drops items); run without -race")
	}
	m, err := CompileHTTP(HTTPSpec{
		PathRegex: "/api/v[0-9]+/",
		Methods:   []string{"GET", "POST"},
		Headers:   []Header{{Name: "x-canary", Value: "true"}, {Name: "User-Agent", Value: ".*Mobile"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{"X-Canary": {"true"}, "User-Agent": {"Foo Mobile"}, "Accept": {"*/*"}}
	lower := http.Header{"x-canary": {"true"}, "user-agent": {"Foo Mobile"}}
	for _, hh := range []http.Header{h, lower} {
		if !m.Match("GET", "/api/v2/users", hh) {
			t.Fatal("expected a match")
		}
		allocs := testing.AllocsPerRun(200, func() {
			m.Match("GET", "/api/v2/users", hh)
			m.Match("POST", "/nope", hh)
			AnyHTTP([]*HTTP{m}, "GET", "/api/v1/", hh)
			Ports([]int32{1, 2}, 2)
		})
		if allocs != 0 {
			t.Fatalf("Match allocated %.1f times per run", allocs)
		}
	}
}

func BenchmarkMatch(b *testing.B) {
	m, err := CompileHTTP(HTTPSpec{PathRegex: "/api/v[0-9]+/", Methods: []string{"GET"}, Headers: []Header{{Name: "x-canary", Value: "true"}}})
	if err != nil {
		b.Fatal(err)
	}
	h := http.Header{"X-Canary": {"true"}}
	b.ReportAllocs()
	for b.Loop() {
		m.Match("GET", "/api/v2/users", h)
	}
}
