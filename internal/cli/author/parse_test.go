package author

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/trellis-mesh/trellis/internal/cli/clienv"
	"github.com/trellis-mesh/trellis/smi"
	"github.com/trellis-mesh/trellis/smi/match"
)

func TestParseBackends(t *testing.T) {
	tests := []struct {
		name     string
		values   []string
		relative bool
		want     []smi.Backend
		err      string // substring; "" = no error
	}{
		{"percent", []string{"web-v1=90", "web-v2=10"}, false, []smi.Backend{{Service: "web-v1", Weight: 90}, {Service: "web-v2", Weight: 10}}, ""},
		{"zero weight kept", []string{"web-v1=100", "web-v2=0"}, false, []smi.Backend{{Service: "web-v1", Weight: 100}, {Service: "web-v2", Weight: 0}}, ""},
		{"root among backends", []string{"web=90", "web-v2=10"}, false, []smi.Backend{{Service: "web", Weight: 90}, {Service: "web-v2", Weight: 10}}, ""},
		{"relative", []string{"a=1", "b=1", "c=1"}, true, []smi.Backend{{Service: "a", Weight: 1}, {Service: "b", Weight: 1}, {Service: "c", Weight: 1}}, ""},
		{"spaces trimmed", []string{" web-v1 = 100 "}, false, []smi.Backend{{Service: "web-v1", Weight: 100}}, ""},
		{"missing", nil, false, nil, "--to is required"},
		{"does not sum", []string{"web-v1=90", "web-v2=20"}, false, nil, "add up to 110, not 100"},
		{"relative does not need 100", []string{"web-v1=90", "web-v2=20"}, true, []smi.Backend{{Service: "web-v1", Weight: 90}, {Service: "web-v2", Weight: 20}}, ""},
		{"all zero", []string{"web-v1=0", "web-v2=0"}, true, nil, "every weight is 0"},
		{"negative", []string{"web-v1=-10", "web-v2=110"}, false, nil, "weight -10 is negative"},
		{"fraction", []string{"web-v1=9.5"}, false, nil, `weight "9.5" is not a whole number`},
		{"percent sign", []string{"web-v1=90%"}, false, nil, `weight "90%" is not a whole number`},
		{"too large", []string{"web-v1=99999999999"}, true, nil, "too large"},
		{"no equals", []string{"web-v1"}, false, nil, `expected SERVICE=WEIGHT`},
		{"empty entry", []string{"web-v1=100", ""}, false, nil, "an entry is empty"},
		{"bad name", []string{"Web_V1=100"}, false, nil, `"Web_V1" is not a valid Service name`},
		{"other namespace", []string{"shop/web-v1=100"}, false, nil, "backends are Services in the split's own namespace"},
		{"repeated", []string{"web-v1=50", "web-v1=50"}, false, nil, `backend "web-v1" is listed twice`},
		{"only the root", []string{"web=100"}, false, nil, "is the split's only backend"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseBackends(tt.values, "web", tt.relative)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.err)
				}
				if clienv.Code(err) != clienv.ExitUsage {
					t.Errorf("exit code %d, want %d", clienv.Code(err), clienv.ExitUsage)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("backend %d = %v, want %v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestParseMatches(t *testing.T) {
	tests := []struct {
		name   string
		values []string
		want   match.HTTPSpec
		err    string
	}{
		{"header", []string{"header:x-canary=true"}, match.HTTPSpec{Headers: []match.Header{{Name: "x-canary", Value: "true"}}}, ""},
		{"header presence", []string{"header:x-canary"}, match.HTTPSpec{Headers: []match.Header{{Name: "x-canary"}}}, ""},
		{"header value with = and :", []string{"header:cookie=a=b:c"}, match.HTTPSpec{Headers: []match.Header{{Name: "cookie", Value: "a=b:c"}}}, ""},
		{"path", []string{"path:/api/.*"}, match.HTTPSpec{PathRegex: "/api/.*"}, ""},
		{"methods", []string{"method:GET,HEAD", "method:POST", "method:GET"}, match.HTTPSpec{Methods: []string{"GET", "HEAD", "POST"}}, ""},
		{"all ANDed", []string{"path:/api", "method:GET", "header:a=1", "header:b"}, match.HTTPSpec{PathRegex: "/api", Methods: []string{"GET"}, Headers: []match.Header{{Name: "a", Value: "1"}, {Name: "b"}}}, ""},
		{"no kind", []string{"x-canary=true"}, match.HTTPSpec{}, "expected header:NAME=REGEX"},
		{"unknown kind", []string{"query:a=1"}, match.HTTPSpec{}, `"query" is not a condition kind`},
		{"bad path regex", []string{"path:/api/(v1"}, match.HTTPSpec{}, "not a valid RE2 regular expression"},
		{"empty path", []string{"path:"}, match.HTTPSpec{}, "the path regular expression is empty"},
		{"two paths", []string{"path:/a", "path:/b"}, match.HTTPSpec{}, "a path is already given"},
		{"lower-case method", []string{"method:get"}, match.HTTPSpec{}, `write "GET"`},
		{"bad method", []string{"method:GE T"}, match.HTTPSpec{}, "not an HTTP method"},
		{"empty method", []string{"method:GET,"}, match.HTTPSpec{}, "a method is empty"},
		{"bad header name", []string{"header:x canary=1"}, match.HTTPSpec{}, "not a valid HTTP header name"},
		{"empty header name", []string{"header:=1"}, match.HTTPSpec{}, "the header name is empty"},
		{"bad header regex", []string{"header:x=a[b"}, match.HTTPSpec{}, "not a valid RE2 regular expression"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseMatches(tt.values)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || clienv.Code(err) != clienv.ExitUsage {
					t.Fatalf("err = %v (exit %d), want a usage error containing %q", err, clienv.Code(err), tt.err)
				}
				if !strings.Contains(err.Error(), "--match") {
					t.Errorf("err = %v does not name the flag", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Key() != tt.want.Key() {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseIdentity(t *testing.T) {
	tests := []struct {
		in   string
		want smi.Identity
		err  string
	}{
		{"sa/shop/frontend", smi.Identity{Namespace: "shop", Name: "frontend"}, ""},
		{"serviceaccount/shop/front.end", smi.Identity{Namespace: "shop", Name: "front.end"}, ""},
		{"serviceaccounts/shop/a", smi.Identity{Namespace: "shop", Name: "a"}, ""},
		{"sa/shop", smi.Identity{}, "(the namespace is missing)"},
		{"shop/frontend", smi.Identity{}, "(the sa/ prefix is missing)"},
		{"frontend", smi.Identity{}, "expected sa/NAMESPACE/NAME"},
		{"sa/shop/frontend/x", smi.Identity{}, "expected sa/NAMESPACE/NAME"},
		{"pod/shop/frontend", smi.Identity{}, `"pod" is not an identity kind`},
		{"sa//frontend", smi.Identity{}, "a part is empty"},
		{"sa/shop/", smi.Identity{}, "a part is empty"},
		{"sa/Shop/frontend", smi.Identity{}, `namespace "Shop" is not valid`},
		{"sa/shop.eu/frontend", smi.Identity{}, `namespace "shop.eu" is not valid`},
		{"sa/shop/Front_End", smi.Identity{}, `ServiceAccount name "Front_End" is not valid`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseIdentity("--from", tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || clienv.Code(err) != clienv.ExitUsage {
					t.Fatalf("err = %v, want a usage error containing %q", err, tt.err)
				}
				if !strings.Contains(err.Error(), "sa/NAMESPACE/NAME") {
					t.Errorf("err = %v does not show the expected form", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestParsePortsAndMethods(t *testing.T) {
	if got, err := parsePorts([]string{"5432", " 8080"}); err != nil || len(got) != 2 || got[0] != 5432 || got[1] != 8080 {
		t.Errorf("parsePorts = %v, %v", got, err)
	}
	for _, bad := range [][]string{{"0"}, {"65536"}, {"http"}, {"-1"}, {""}, {"80", "80"}} {
		if _, err := parsePorts(bad); err == nil || clienv.Code(err) != clienv.ExitUsage || !strings.Contains(err.Error(), "--ports") {
			t.Errorf("parsePorts(%q) = %v, want a usage error naming --ports", bad, err)
		}
	}
	if got, err := parseMethods([]string{"GET", "POST", "PROPFIND", "*"}); err != nil || len(got) != 4 {
		t.Errorf("parseMethods = %v, %v", got, err)
	}
	for _, bad := range [][]string{{"get"}, {"GET", "GET"}, {""}, {"G(T"}} {
		if _, err := parseMethods(bad); err == nil || clienv.Code(err) != clienv.ExitUsage || !strings.Contains(err.Error(), "--methods") {
			t.Errorf("parseMethods(%q) = %v, want a usage error naming --methods", bad, err)
		}
	}
}

func TestNames(t *testing.T) {
	short := targetName(smi.Identity{Namespace: "shop", Name: "frontend"}, smi.Identity{Namespace: "shop", Name: "api"})
	if short != "api-from-shop-frontend" {
		t.Errorf("targetName = %q", short)
	}
	long1 := targetName(smi.Identity{Namespace: "a-very-long-namespace-name-for-the-source", Name: "a-very-long-service-account-name.with.dots"}, smi.Identity{Namespace: "shop", Name: "destination-account"})
	long2 := targetName(smi.Identity{Namespace: "a-very-long-namespace-name-for-the-source", Name: "a-very-long-service-account-name.with.dots2"}, smi.Identity{Namespace: "shop", Name: "destination-account"})
	for _, n := range []string{long1, long2, splitGroupName(strings.Repeat("x", 250)), fitName(strings.Repeat("a-", 40))} {
		if len(n) > maxGeneratedName || len(validation.IsDNS1123Subdomain(n)) > 0 {
			t.Errorf("generated name %q (%d chars) is not a short DNS subdomain", n, len(n))
		}
	}
	if long1 == long2 {
		t.Errorf("different pairs share the name %q", long1)
	}
	if fitName("web-match") != "web-match" {
		t.Errorf("fitName changed a short name")
	}
}

func TestDescribeSplit(t *testing.T) {
	got := describeSplit("shop", "web", []smi.Backend{{Service: "a", Weight: 1}, {Service: "b", Weight: 1}, {Service: "c", Weight: 1}}, nil)
	if want := "Service shop/web: 33.3% to a, 33.3% to b, 33.3% to c"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	spec := match.HTTPSpec{Methods: []string{"GET"}, Headers: []match.Header{{Name: "x-canary", Value: "true"}}}
	got = describeSplit("shop", "web", []smi.Backend{{Service: "web-v2", Weight: 100}}, &spec)
	if want := `Service shop/web: HTTP requests with method GET and header x-canary matching "true": 100% to web-v2; all other traffic to web itself`; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// The parsers take arbitrary user input: they must never panic, and what
// they accept must be what the rest of the command relies on.

func FuzzParseBackends(f *testing.F) {
	for _, s := range []string{"web-v1=90,web-v2=10", "web=100", "a=1,a=2", "a=-1", "a=9.5", "a=,b", ",", "a=99999999999"} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, s string, relative bool) {
		bs, err := parseBackends(strings.Split(s, ","), "web", relative)
		if err != nil {
			if clienv.Code(err) != clienv.ExitUsage {
				t.Fatalf("%q: error %v has exit code %d", s, err, clienv.Code(err))
			}
			return
		}
		var sum int64
		seen := map[string]bool{}
		for _, b := range bs {
			if b.Weight < 0 || seen[b.Service] || len(validation.IsDNS1035Label(b.Service)) > 0 {
				t.Fatalf("%q: accepted bad backend %+v", s, b)
			}
			seen[b.Service] = true
			sum += b.Weight
		}
		if sum == 0 || (!relative && sum != 100) {
			t.Fatalf("%q: accepted weights summing to %d", s, sum)
		}
	})
}

func FuzzParseMatches(f *testing.F) {
	for _, s := range []string{"header:x-canary=true", "path:/api/.*", "method:GET,HEAD", "path:(", "header:=", "method:get", "x"} {
		f.Add(s, "method:GET")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		spec, err := parseMatches([]string{a, b})
		if err != nil {
			if clienv.Code(err) != clienv.ExitUsage {
				t.Fatalf("%q %q: error %v has exit code %d", a, b, err, clienv.Code(err))
			}
			return
		}
		if err := match.CheckHTTP(spec); err != nil {
			t.Fatalf("%q %q: accepted a match the matcher rejects: %v", a, b, err)
		}
	})
}

func FuzzParseIdentity(f *testing.F) {
	for _, s := range []string{"sa/shop/frontend", "sa/shop", "serviceaccount/a/b.c", "sa//x", "sa/A/b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := parseIdentity("--to", s)
		if err != nil {
			if clienv.Code(err) != clienv.ExitUsage {
				t.Fatalf("%q: error %v has exit code %d", s, err, clienv.Code(err))
			}
			return
		}
		if len(validation.IsDNS1123Label(id.Namespace)) > 0 || len(validation.IsDNS1123Subdomain(id.Name)) > 0 {
			t.Fatalf("%q: accepted invalid identity %v", s, id)
		}
	})
}
