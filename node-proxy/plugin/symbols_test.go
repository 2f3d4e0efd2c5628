package plugin

import (
	"io"
	"net/http"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/traefik/yaegi/interp"

	"github.com/trellis-mesh/trellis/node-proxy/config"
	"github.com/trellis-mesh/trellis/node-proxy/plugin/symbols"
)

const regenerate = "edit the go:generate line in node-proxy/plugin/symbols/symbols.go to list exactly the allow-list, then run go generate ./node-proxy/plugin/symbols"

// The generated tables are those of the allow-list: no more (a package the
// source check would refuse anyway), no less (an allowed import the
// interpreter cannot resolve).
func TestSymbolsMatchAllowList(t *testing.T) {
	allow, gen := AllowedPackages(), symbols.Packages()
	for _, p := range allow {
		if !slices.Contains(gen, p) {
			t.Errorf("package %s is allowed but has no generated symbol table; %s", p, regenerate)
		}
	}
	for _, p := range gen {
		if !slices.Contains(allow, p) {
			t.Errorf("package %s has a generated symbol table but is not allowed; %s", p, regenerate)
		}
	}

	built := symbols.Build()
	var keys []string
	for k, syms := range built {
		if k == "." {
			continue
		}
		pkg := strings.TrimSuffix(k, "/"+pathBase(k))
		keys = append(keys, pkg)
		// cmp, maps and slices export only generic functions, which the
		// interpreter compiles from source (yaegi's stdlib/generic).
		if generic := pkg == "cmp" || pkg == "maps" || pkg == "slices"; len(syms) == 0 && !generic {
			t.Errorf("table %s is empty", k)
		}
	}
	slices.Sort(keys)
	if !slices.Equal(keys, gen) {
		t.Errorf("Build has tables for %v,\nPackages lists %v; %s", keys, gen, regenerate)
	}
	if _, ok := built["."]["MapTypes"]; !ok {
		t.Error(`Build has no "." MapTypes`)
	}
}

// The tables describe the standard library the proxy is built with.
func TestSymbolsGoVersion(t *testing.T) {
	want := runtime.Version()
	if v := strings.SplitN(want, ".", 3); len(v) == 3 {
		want = v[0] + "." + v[1]
	}
	if symbols.GoVersion != want {
		t.Errorf("symbol tables were extracted from %s's standard library, the proxy is built with %s: run go generate ./node-proxy/plugin/symbols", symbols.GoVersion, want)
	}
}

// What the rules deny is not in the interpreter's tables either, and what
// they allow is.
func TestAllowedSymbols(t *testing.T) {
	tables := allowedSymbols(symbols.Build())
	cases := []struct {
		key, sym string
		present  bool
	}{
		{"net/net", "ParseIP", true},
		{"net/net", "IPNet", true},
		{"net/net", "_Conn", true}, // wrapper types follow their interface
		{"net/net", "Dial", false},
		{"net/net", "Listen", false},
		{"net/net", "Dialer", false},
		{"net/net", "LookupHost", false},
		{"net/http/http", "NewRequest", true},
		{"net/http/http", "_ResponseWriter", true},
		{"net/http/http", "ListenAndServe", false},
		{"net/http/http", "Server", false},
		{"net/http/http", "FileServer", false},
		{"net/http/http", "DefaultServeMux", false},
		{"net/http/httptest/httptest", "NewRecorder", true},
		{"net/http/httptest/httptest", "NewServer", false},
		{"io/ioutil/ioutil", "ReadAll", true},
		{"io/ioutil/ioutil", "ReadFile", false},
		{"crypto/tls/tls", "X509KeyPair", true},
		{"crypto/tls/tls", "LoadX509KeyPair", false},
		{"crypto/x509/x509", "SetFallbackRoots", false},
		{"mime/mime", "AddExtensionType", false},
		{"text/template/template", "ParseFiles", false},
		{"html/template/template", "ParseGlob", false},
		{"log/log", "Fatal", true},
		{"crypto/rand/rand", "Text", true}, // Go 1.24: the tables are the build's standard library, not yaegi's 1.22
	}
	for _, c := range cases {
		_, ok := tables[c.key][c.sym]
		if ok != c.present {
			t.Errorf("%s.%s in the interpreter's tables: %v, want %v", c.key, c.sym, ok, c.present)
		}
	}
	for _, k := range []string{"os/os", "os/exec/exec", "reflect/reflect", "syscall/syscall", "unsafe/unsafe", "runtime/runtime"} {
		if _, ok := tables[k]; ok {
			t.Errorf("the interpreter's tables have %s", k)
		}
	}
}

// The tables are built on the first plugin that gets as far as compiling,
// and once: a proxy without plugins, or whose plugins all fail the source
// check, never builds them.
func TestSymbolsBuiltOnce(t *testing.T) {
	var builds int
	saved := baseSymbols
	baseSymbols = sync.OnceValue(func() interp.Exports {
		builds++
		return buildSymbols()
	})
	t.Cleanup(func() { baseSymbols = saved })
	step := func(what string, want int) {
		t.Helper()
		if builds != want {
			t.Fatalf("after %s: symbol tables built %d times, want %d", what, builds, want)
		}
	}

	env := newEnv(t).Env
	none := NewSet(nil, nil, env)
	cs := none.Chains("shop/api", nil, 0, nil)
	srv := server(t, cs, echo)
	if r := get(t, srv.URL); r.status != http.StatusOK {
		t.Fatalf("no plugins: status %d", r.status)
	}
	step("a config without plugins", 0)

	bad := plugin(map[string]string{"a.go": withNew(`	"os"`, "\nvar _ = os.Getpid\n")})
	if e := loadError(t, env, bad); e == nil || e.Phase != PhaseSource {
		t.Fatalf("plugin importing os: %v, want a source error", e)
	}
	step("a plugin refused by the source check", 0)

	// Uses a Go 1.24 function: the tables are the build's standard library.
	text := withNew(`	"crypto/rand"
	"io"`, `
func init() { _ = rand.Text() }

type h struct{}

func (h) ServeHTTP(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "from plugin") }
`)
	text = strings.Replace(text, "return next, nil", "return h{}, nil", 1)
	p := plugin(map[string]string{"a.go": text})
	_, cs = chainsFor(t, env, 0, p)
	if u := cs.After.Unavailable(); u != nil {
		t.Fatal(u)
	}
	resp, err := http.Get(server(t, cs, echo).URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if string(body) != "from plugin" {
		t.Fatalf("plugin answered %q", body)
	}
	step("the first plugin", 1)

	other := config.Plugin{Name: "test/b", Version: "v1", Module: "example.com/b",
		Files: map[string]string{"b.go": strings.Replace(withNew("", ""), "package a", "package b", 1)}}
	if e := loadError(t, env, other); e != nil {
		t.Fatal(e)
	}
	step("a second plugin", 1)
}

// yaegi's stdlib package fills tables for the whole standard library in
// its init functions and links every package in: it must not come back
// into the proxy, by this package or any other.
func TestNoYaegiStdlib(t *testing.T) {
	for _, pkg := range []string{"github.com/trellis-mesh/trellis/node-proxy/plugin", "github.com/trellis-mesh/trellis/cmd/trellis-proxy"} {
		out, err := exec.Command("go", "list", "-e", "-deps", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v: %s", pkg, err, out)
		}
		deps := strings.Fields(string(out))
		if !slices.Contains(deps, "github.com/traefik/yaegi/interp") {
			t.Fatalf("go list -deps %s does not list yaegi's interp; the check below would prove nothing:\n%s", pkg, out)
		}
		for _, d := range deps {
			if strings.HasPrefix(d, "github.com/traefik/yaegi/stdlib") && d != "github.com/traefik/yaegi/stdlib/generic" {
				t.Errorf("%s imports %s; use the tables of node-proxy/plugin/symbols", pkg, d)
			}
		}
	}
}
