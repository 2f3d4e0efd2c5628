package match

import (
	"net/http"
	"regexp"
	"strings"
	"testing"
)

// FuzzCompileHTTP checks that compiling never panics, that every accepted
// spec behaves as its definition says (a path matches exactly when the plain
// RE2 expression matches at offset 0), and that errors name a field.
func FuzzCompileHTTP(f *testing.F) {
	f.Add("/api/.*", "GET", "x-canary", "true", "GET", "/api/x", "true")
	f.Add("", "*", "", "", "POST", "/", "")
	f.Add("a)(b", "get", "a:b", "(", "GET", "a", "")
	f.Add("(?i)/A|/b", "PROPFIND", "User-Agent", ".*Android.*", "PROPFIND", "/b", "Mozilla Android")
	f.Add("/x$", "GET POST", "x", "[", "GET", "/x", "v")
	f.Fuzz(func(t *testing.T, pathRe, method, hname, hvalue, reqMethod, reqPath, reqHeader string) {
		spec := HTTPSpec{PathRegex: pathRe}
		if method != "" {
			spec.Methods = []string{method}
		}
		if hname != "" {
			spec.Headers = []Header{{Name: hname, Value: hvalue}}
		}
		m, err := CompileHTTP(spec)
		if err != nil {
			msg := err.Error()
			if !strings.HasPrefix(msg, "pathRegex ") && !strings.HasPrefix(msg, "methods[0] ") && !strings.HasPrefix(msg, "headers[0].") {
				t.Fatalf("error does not name a field: %q", msg)
			}
			return
		}
		h := http.Header{}
		if hname != "" {
			h[http.CanonicalHeaderKey(hname)] = []string{reqHeader}
		}
		got := m.Match(reqMethod, reqPath, h)

		// Independent oracle: "anchored at the start" means some match of
		// the plain expression begins at offset 0, which is so exactly when
		// the leftmost match begins there.
		startsAt0 := func(expr, s string) bool {
			loc := regexp.MustCompile(expr).FindStringIndex(s)
			return loc != nil && loc[0] == 0
		}
		want := true
		if pathRe != "" {
			want = startsAt0(pathRe, reqPath)
		}
		if method != "" && method != "*" {
			want = want && reqMethod == method
		}
		if hname != "" && hvalue != "" {
			want = want && startsAt0(hvalue, reqHeader)
		}
		if got != want {
			t.Fatalf("Match(%q,%q,%v) on %+v = %v, want %v", reqMethod, reqPath, h, spec, got, want)
		}
	})
}

func FuzzPorts(f *testing.F) {
	f.Add([]byte{0x0c, 0xea, 0x19, 0x26}, int32(3306))
	f.Add([]byte{}, int32(80))
	f.Fuzz(func(t *testing.T, raw []byte, p int32) {
		var ports []int32
		for i := 0; i+1 < len(raw); i += 2 {
			ports = append(ports, int32(raw[i])<<8|int32(raw[i+1]))
		}
		got := Ports(ports, p)
		want := len(ports) == 0
		for _, q := range ports {
			want = want || q == p
		}
		if got != want {
			t.Fatalf("Ports(%v, %d) = %v, want %v", ports, p, got, want)
		}
	})
}
