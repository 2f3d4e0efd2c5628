package plugin

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/node-proxy/config"
)

var update = flag.Bool("update", false, "rewrite golden files")

// plugin returns a plugin of module example.com/a from files.
func plugin(files map[string]string) config.Plugin {
	return config.Plugin{Name: "test/a", Version: "v1", Module: "example.com/a", Files: files}
}

// withNew is a valid plugin file with extra imports and code.
func withNew(imports, code string) string {
	return `package a

import (
	"context"
	"net/http"
` + imports + `
)

type Config struct {
	Limit int ` + "`json:\"limit\"`" + `
	Names []string
}

func CreateConfig() *Config { return &Config{} }

func New(ctx context.Context, next http.Handler, cfg *Config, name string) (http.Handler, error) {
	return next, nil
}
` + code
}

const minimal = `package a

import (
	"context"
	"net/http"
)

type Config struct{}

func CreateConfig() *Config { return &Config{} }
`

// loadError loads p for service shop/api and returns why it failed.
func loadError(t *testing.T, env *Env, p config.Plugin) *LoadError {
	t.Helper()
	s := NewSet([]config.Plugin{p}, nil, env)
	if errs := s.Errors(); len(errs) > 0 {
		return errs[0]
	}
	cs := s.Chains("shop/api", []string{p.Name}, 0, nil)
	if e := cs.After.Unavailable(); e != nil {
		return e
	}
	return nil
}

func TestLoadErrors(t *testing.T) {
	cases := []struct {
		name   string
		files  map[string]string
		config string
		phase  Phase
		file   string
		line   int
		want   string // in the message
	}{
		{name: "syntax error", files: map[string]string{"a.go": "package a\n\nfunc X( {\n}\n"},
			phase: PhaseSource, file: "a.go", line: 3, want: "syntax error"},
		{name: "type error", files: map[string]string{"a.go": withNew("", "\nfunc X() int {\n\treturn \"s\"\n}\n")},
			phase: PhaseCompile, file: "a.go", line: 21, want: "cannot use"},
		{name: "undefined name", files: map[string]string{"a.go": withNew("", "\nfunc x() {\n\t_ = y\n}\n")},
			phase: PhaseCompile, file: "a.go", line: 21, want: "undefined: y"},
		{name: "import os/exec", files: map[string]string{"a.go": withNew(`	"os/exec"`, "\nvar _ = exec.Command\n")},
			phase: PhaseSource, file: "a.go", line: 6, want: `import "os/exec" is not allowed: plugins cannot start processes`},
		{name: "import syscall", files: map[string]string{"a.go": withNew(`	"syscall"`, "\nvar _ = syscall.Getpid\n")},
			phase: PhaseSource, file: "a.go", line: 6, want: `import "syscall" is not allowed`},
		{name: "import unsafe", files: map[string]string{"a.go": withNew(`	"unsafe"`, "\nvar _ = unsafe.Sizeof(1)\n")},
			phase: PhaseSource, file: "a.go", line: 6, want: `import "unsafe" is not allowed`},
		{name: "import os", files: map[string]string{"a.go": withNew(`	"os"`, "\nvar _ = os.Getpid\n")},
			phase: PhaseSource, file: "a.go", line: 6, want: `import "os" is not allowed: plugins have no file, process or environment access`},
		{name: "import reflect", files: map[string]string{"a.go": withNew(`	"reflect"`, "\nvar _ = reflect.TypeOf\n")},
			phase: PhaseSource, file: "a.go", line: 6, want: `import "reflect" is not allowed`},
		{name: "import unknown std", files: map[string]string{"a.go": withNew(`	"debug/elf"`, "\nvar _ = elf.Open\n")},
			phase: PhaseSource, file: "a.go", line: 6, want: "not on the plugin allow-list"},
		{name: "net.Dial", files: map[string]string{"a.go": withNew(`	"net"`, "\nfunc x() { net.Dial(\"tcp\", \"1.2.3.4:5\") }\n")},
			phase: PhaseSource, file: "a.go", line: 20, want: "net.Dial is not available to plugins: it opens raw connections"},
		{name: "net.Listen", files: map[string]string{"a.go": withNew(`	"net"`, "\nvar _, _ = net.Listen(\"tcp\", \":0\")\n")},
			phase: PhaseSource, file: "a.go", line: 20, want: "net.Listen is not available"},
		{name: "net.Dialer", files: map[string]string{"a.go": withNew(`	"net"`, "\nvar d net.Dialer\n")},
			phase: PhaseSource, file: "a.go", line: 20, want: "net.Dialer is not available"},
		{name: "http.ListenAndServe", files: map[string]string{"a.go": withNew("", "\nfunc x() { http.ListenAndServe(\":80\", nil) }\n")},
			phase: PhaseSource, file: "a.go", line: 20, want: "net/http.ListenAndServe is not available to plugins: it opens a listener"},
		{name: "http.Dir", files: map[string]string{"a.go": withNew("", "\nvar fs = http.FileServer(http.Dir(\"/\"))\n")},
			phase: PhaseSource, file: "a.go", line: 20, want: "net/http.FileServer is not available to plugins: it reads or serves files"},
		{name: "http.ServerContextKey", files: map[string]string{"a.go": withNew("", "\nvar key = http.ServerContextKey\n")},
			phase: PhaseSource, file: "a.go", line: 20, want: "net/http.ServerContextKey is not available to plugins: it reaches the proxy's own HTTP server"},
		{name: "httptest.NewServer", files: map[string]string{"a.go": withNew(`	"net/http/httptest"`, "\nvar s = httptest.NewServer(nil)\n")},
			phase: PhaseSource, file: "a.go", line: 20, want: "httptest.NewServer is not available"},
		{name: "template ParseFiles", files: map[string]string{"a.go": withNew(`	"text/template"`, "\nvar tpl, _ = template.New(\"x\").ParseFiles(\"/etc/passwd\")\n")},
			phase: PhaseSource, file: "a.go", line: 20, want: "template ParseFiles is not available"},
		{name: "relative import", files: map[string]string{"a.go": withNew(`	"./sub"`, ""), "sub/s.go": "package sub\n"},
			phase: PhaseSource, file: "a.go", line: 6, want: "relative imports are not supported"},
		{name: "third party not vendored", files: map[string]string{"a.go": withNew(`	"github.com/acme/lib"`, "\nvar _ = lib.X\n")},
			phase: PhaseSource, file: "a.go", line: 6, want: "neither in the module nor vendored"},
		{name: "yaegi itself", files: map[string]string{"a.go": withNew(`	"github.com/traefik/yaegi/interp"`, "\nvar _ = interp.New\n")},
			phase: PhaseSource, file: "a.go", line: 6, want: "neither in the module nor vendored"},
		{name: "the loader's helpers", files: map[string]string{"a.go": withNew(`	rt "trellis.invalid/pluginrt"`, "\nvar _ = rt.Go\n")},
			phase: PhaseSource, file: "a.go", line: 6, want: "neither in the module nor vendored"},
		{name: "missing sub-package", files: map[string]string{"a.go": withNew(`	"example.com/a/sub"`, "\nvar _ = sub.X\n")},
			phase: PhaseSource, file: "a.go", line: 6, want: "the module has no .go files in sub/"},
		{name: "forbidden import in a sub-package", files: map[string]string{"a.go": withNew(`	"example.com/a/sub"`, "\nvar _ = sub.X\n"), "sub/s.go": "package sub\n\nimport \"os\"\n\nvar X = os.Args\n"},
			phase: PhaseSource, file: "sub/s.go", line: 3, want: `import "os" is not allowed`},
		{name: "package main", files: map[string]string{"a.go": "package main\n\nfunc main() {}\n"},
			phase: PhaseSource, file: "a.go", line: 1, want: "package main cannot be imported"},
		{name: "mixed packages", files: map[string]string{"a.go": withNew("", ""), "b.go": "package b\n"},
			phase: PhaseSource, file: "b.go", line: 1, want: "package b, but other files at the module root are package a"},
		{name: "no root package", files: map[string]string{"sub/s.go": "package sub\n"},
			phase: PhaseSource, want: "no .go file at the module root"},
		{name: "bad file name", files: map[string]string{"../a.go": minimal},
			phase: PhaseSource, file: "../a.go", want: "must be a slash-separated path"},
		{name: "missing New", files: map[string]string{"a.go": minimal},
			phase: PhaseContract, want: "package a has no function New"},
		{name: "wrong New", files: map[string]string{"a.go": minimal + "\nfunc New(next http.Handler) http.Handler { _ = context.Background; return next }\n"},
			phase: PhaseContract, want: "function New is func(http.Handler) http.Handler; want func CreateConfig() *Config and func New("},
		{name: "CreateConfig not a pointer", files: map[string]string{"a.go": strings.Replace(withNew("", ""), "func CreateConfig() *Config { return &Config{} }", "func CreateConfig() Config { return Config{} }", 1)},
			phase: PhaseContract, want: "function CreateConfig is func() struct"},
		{name: "init panics", files: map[string]string{"a.go": withNew("", "\nfunc init() { panic(\"no luck\") }\n")},
			phase: PhaseInit, want: "panic during package initialisation: no luck"},
		{name: "init hangs", files: map[string]string{"a.go": withNew("", "\nfunc init() { for {} }\n")},
			phase: PhaseInit, want: "package initialisation did not finish within 300ms"},
		{name: "New returns an error", files: map[string]string{"a.go": strings.Replace(withNew(`	"errors"`, ""), "return next, nil", `return nil, errors.New("header name missing")`, 1)},
			phase: PhaseNew, want: "header name missing"},
		{name: "New panics", files: map[string]string{"a.go": strings.Replace(withNew("", ""), "return next, nil", `var m map[string]int; m["x"] = 1; return next, nil`, 1)},
			phase: PhaseNew, want: "New panicked: assignment to entry in nil map"},
		{name: "New returns nil", files: map[string]string{"a.go": strings.Replace(withNew("", ""), "return next, nil", `return nil, nil`, 1)},
			phase: PhaseNew, want: "the plugin's New returned a nil handler and no error"},
		{name: "New hangs", files: map[string]string{"a.go": strings.Replace(withNew(`	"time"`, ""), "return next, nil", `time.Sleep(time.Hour); return next, nil`, 1)},
			phase: PhaseNew, want: "New did not return within 300ms"},
		{name: "config type mismatch", files: map[string]string{"a.go": withNew("", "")}, config: `{"limit":"ten"}`,
			phase: PhaseConfig, want: "config.limit: cannot use a JSON string as int"},
		{name: "config nested type mismatch", files: map[string]string{"a.go": withNew("", "")}, config: `{"Names":[1]}`,
			phase: PhaseConfig, want: "config.Names: cannot use a JSON number as string"},
		{name: "config unknown field", files: map[string]string{"a.go": withNew("", "")}, config: `{"limt":3}`,
			phase: PhaseConfig, want: "config.limt: unknown field; the plugin's Config has fields limit, Names"},
		{name: "config not an object", files: map[string]string{"a.go": withNew("", "")}, config: `[1]`,
			phase: PhaseConfig, want: "config: cannot use a JSON array as struct"},
	}
	var golden strings.Builder
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := newEnv(t)
			env.LoadTimeout = 300 * time.Millisecond
			p := plugin(tc.files)
			p.Config = json.RawMessage(tc.config)
			err := loadError(t, env.Env, p)
			if err == nil {
				t.Fatal("loaded; want an error")
			}
			fmt.Fprintf(&golden, "%s\n\t%s\n", tc.name, err)
			if err.Phase != tc.phase || err.File != tc.file || (tc.line != 0 && err.Line != tc.line) {
				t.Errorf("phase %s at %s:%d; want %s at %s:%d\n%v", err.Phase, err.File, err.Line, tc.phase, tc.file, tc.line, err)
			}
			mustContain(t, "error", err.Error(), tc.want, "plugin test/a (version v1)")
			if tc.phase == PhaseNew && err.Service != "shop/api" {
				t.Errorf("a New error names the service: %v", err)
			}
			if got := value(t, env.Metrics, "loaded", "test/a"); tc.phase != PhaseNew && got != 0 {
				t.Errorf("loaded = %v, want 0", got)
			}
		})
	}
	checkGolden(t, filepath.Join("testdata", "load_errors.golden"), golden.String())
}

func checkGolden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if string(want) != got {
		t.Errorf("%s differs (go test -update rewrites it):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func TestLoadsModulePackagesAndVendor(t *testing.T) {
	files := map[string]string{
		"a.go": strings.Replace(withNew(`	"example.com/a/internal/greet"
	"github.com/acme/shout"
	"net"`, ""), "return next, nil", `return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		w.Header().Set("X-Greeting", shout.Up(greet.Hello(host)))
		next.ServeHTTP(w, r)
	}), nil`, 1),
		"internal/greet/greet.go":               "package greet\n\nfunc Hello(who string) string { return \"hello \" + who }\n",
		"vendor/github.com/acme/shout/shout.go": "package shout\n\nimport \"strings\"\n\nfunc Up(s string) string { return strings.ToUpper(s) }\n",
		"a_test.go":                             "package a\n\nimport \"os\"\n\nvar _ = os.Args\n", // tests are not compiled
	}
	env := newEnv(t)
	set, cs := chainsFor(t, env.Env, 0, plugin(files))
	if errs := set.Errors(); len(errs) > 0 {
		t.Fatal(errs)
	}
	res := get(t, server(t, cs, echo).URL)
	if res.status != http.StatusOK || res.header.Get("X-Greeting") != "HELLO 127.0.0.1" {
		t.Fatalf("got %+v", res)
	}
}
