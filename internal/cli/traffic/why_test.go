package traffic

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/trellis-mesh/trellis/internal/cli/clienv"
	"github.com/trellis-mesh/trellis/internal/cli/clitest"
)

// TestWhy explains requests in the books app (testdata/cluster.yaml)
// against the real apiserver: mesh namespace mesh-acl has acl: true,
// mesh-open acl: false.
func TestWhy(t *testing.T) {
	acl := []string{"--mesh-namespace", "mesh-acl", "-n", "books"}
	cases := []struct {
		name string
		args []string
		code int
	}{
		// Allowed by the "read" match; the canary header selects the split.
		{"why_allowed_split", []string{"why", "--from", "frontend-0", "--to", "web:80", "--path", "/api/books?page=2", "--header", "x-canary=true"}, 0},
		// Same request without the header: the split's matches do not select it.
		{"why_allowed_no_split_match", []string{"why", "--from", "frontend-0", "--to", "web", "--path", "/api/books"}, 0},
		// POST is only in the "write" match, which the TrafficTarget does not select.
		{"why_denied_method", []string{"why", "--from", "frontend-0", "--to", "web:http", "--method", "POST", "--path", "/api/books"}, 0},
		// reviews is not a source of any TrafficTarget for web.
		{"why_denied_source", []string{"why", "--from", "reviews-0", "--to", "web.books.mesh:80"}, 0},
		// TCP, allowed by a TrafficTarget written in access v1alpha2; the HTTP flags do not apply.
		{"why_allowed_tcp_old_version", []string{"why", "--from", "reviews-0", "--to", "db:5432", "--path", "/x"}, 0},
		// The TCPRoute names 5432 only.
		{"why_denied_tcp_port", []string{"why", "--from", "reviews-0", "--to", "db:metrics"}, 0},
		// A host-network client has no identity.
		{"why_denied_host_network", []string{"why", "--from", "batch-0", "--to", "web:80", "--path", "/api"}, 0},
		{"why_denied_mixed_identities", []string{"why", "--from", "frontend-0", "--to", "mixed"}, 0},
		{"why_denied_no_endpoints", []string{"why", "--from", "frontend-0", "--to", "empty"}, 0},
		{"why_port_not_meshed", []string{"why", "--from", "frontend-0", "--to", "resolver:dns"}, 0},
		{"why_not_meshed", []string{"why", "--from", "frontend-0", "--to", "books/legacy"}, 0},
		{"why_json", []string{"why", "--from", "books/frontend-0", "--to", "web:80", "--path", "/api/books", "--header", "X-Canary=true", "-o", "json"}, 0},
		// Bad input: one line naming the flag.
		{"why_unknown_pod", []string{"why", "--from", "nosuch", "--to", "web"}, clienv.ExitNotFound},
		{"why_unknown_service", []string{"why", "--from", "frontend-0", "--to", "nosuch:80"}, clienv.ExitNotFound},
		{"why_unknown_port", []string{"why", "--from", "frontend-0", "--to", "db:8080"}, clienv.ExitUsage},
		{"why_ambiguous_port", []string{"why", "--from", "frontend-0", "--to", "db"}, clienv.ExitUsage},
		{"why_bad_header", []string{"why", "--from", "frontend-0", "--to", "web", "--header", "x-canary"}, clienv.ExitUsage},
		{"why_bad_header_name", []string{"why", "--from", "frontend-0", "--to", "web", "--header", "x canary=1"}, clienv.ExitUsage},
		{"why_bad_method", []string{"why", "--from", "frontend-0", "--to", "web", "--method", "G E T"}, clienv.ExitUsage},
		{"why_bad_path", []string{"why", "--from", "frontend-0", "--to", "web", "--path", "api"}, clienv.ExitUsage},
		{"why_missing_from", []string{"why", "--to", "web"}, clienv.ExitUsage},
		{"why_bad_to", []string{"why", "--from", "frontend-0", "--to", "Web_1"}, clienv.ExitUsage},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if r := golden(t, tc.name, defaultDeps(), append(tc.args, acl...)...); r.Code != tc.code {
				t.Fatalf("exit %d, want %d", r.Code, tc.code)
			}
		})
	}
}

// TestWhyACLOff: with acl: false everything is allowed, and why says what
// access control would decide if it were on.
func TestWhyACLOff(t *testing.T) {
	r := golden(t, "why_acl_off", defaultDeps(), "why", "--from", "reviews-0", "--to", "web:80", "-n", "books", "--mesh-namespace", "mesh-open")
	if r.Code != 0 || !strings.Contains(r.Out, "with acl: true it would be denied") {
		t.Fatalf("exit %d:\n%s", r.Code, r.Out)
	}
}

// TestWhyNotInstalled: no settings ConfigMap and no proxies; why still
// explains, with the built-in settings, and says what is missing.
func TestWhyNotInstalled(t *testing.T) {
	golden(t, "why_not_installed", defaultDeps(), "why", "--from", "frontend-0", "--to", "web:80", "-n", "books", "--mesh-namespace", "nowhere")
}

// TestWhyJSONDecisions checks the structured answer field by field, so a
// golden rewritten by mistake cannot hide a wrong decision.
func TestWhyJSONDecisions(t *testing.T) {
	kc := testCluster(t)
	run := func(args ...string) explanation {
		t.Helper()
		r := clitest.Run(t, Commands, kc, append(args, "-o", "json", "-n", "books", "--mesh-namespace", "mesh-acl")...)
		if r.Code != 0 {
			t.Fatalf("%v: exit %d: %s", args, r.Code, r.Err)
		}
		var ex explanation
		if err := json.Unmarshal([]byte(r.Out), &ex); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, r.Out)
		}
		return ex
	}
	ex := run("why", "--from", "frontend-0", "--to", "web:80", "--path", "/api/books", "--header", "x-canary=true")
	if !ex.Meshed || ex.Access == nil || !ex.Access.Allowed || ex.Access.Reason.TrafficTarget != "books/web-from-frontend" || ex.Access.Reason.Match != "read" {
		t.Errorf("access: %+v", ex.Access)
	}
	if s := ex.Split; s == nil || !s.Applies || s.TrafficSplit != "books/web-split" || len(s.Backends) != 2 ||
		s.Backends[0] != (backendInfo{"web-v1", 90, 90}) || s.Backends[1] != (backendInfo{"web-v2", 10, 10}) {
		t.Errorf("split: %+v", ex.Split)
	}
	ex = run("why", "--from", "frontend-0", "--to", "web:80", "--path", "/api/books")
	if ex.Split == nil || ex.Split.Applies {
		t.Errorf("without the canary header the split must not apply: %+v", ex.Split)
	}
	ex = run("why", "--from", "frontend-0", "--to", "web:80", "--method", "POST", "--path", "/api/books")
	if ex.Access == nil || ex.Access.Allowed || !strings.Contains(ex.Access.Fix, "--methods POST") {
		t.Errorf("POST: %+v", ex.Access)
	}
	ex = run("why", "--from", "reviews-0", "--to", "db:5432")
	if ex.Access == nil || !ex.Access.Allowed || ex.Access.Reason.TrafficTarget != "books/db-from-reviews" || ex.To.Protocol != "tcp" || ex.To.TargetPort != 5432 {
		t.Errorf("tcp: %+v %+v", ex.To, ex.Access)
	}
	ex = run("why", "--from", "frontend-0", "--to", "legacy")
	if ex.Meshed || ex.Access != nil || ex.JoinFix != "kubectl trellis join legacy -n books" {
		t.Errorf("legacy: %+v", ex)
	}
}

func TestShellQuoteAndRegexp(t *testing.T) {
	for in, want := range map[string]string{
		"GET":         "GET",
		"/api/books$": "'/api/books$'",
		"it's":        `'it'\''s'`,
		"":            "''",
	} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
	if got := regexpQuote("/a.b(c)+"); got != `/a\.b\(c\)\+` {
		t.Errorf("regexpQuote: %s", got)
	}
}
