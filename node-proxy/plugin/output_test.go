package plugin

import (
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/trellis-mesh/trellis/node-proxy/config"
)

const printer = `package a

import (
	"context"
	"fmt"
	"log"
	"net/http"
)

type Config struct{}

func CreateConfig() *Config { return &Config{} }

type named struct{ n string }

func (v named) String() string { return "named " + v.n }

func New(ctx context.Context, next http.Handler, cfg *Config, name string) (http.Handler, error) {
	fmt.Println("fmt.Println", 1)
	fmt.Printf("fmt.Printf %d\n", 2)
	fmt.Print("fmt.Print\n")
	fmt.Println(named{"x"})
	log.SetFlags(0)
	log.Println("log.Println")
	log.SetPrefix("pre: ")
	log.Printf("log.Printf %v", named{"y"})
	log.Default().Print("log.Default")
	log.New(log.Writer(), "mine: ", 0).Print("own logger")
	println("builtin println")
	var s string
	n, err := fmt.Scanln(&s)
	fmt.Println("scan", n, err != nil)
	if name == "test/fatal" {
		log.Fatalf("fatal %d", 3)
	}
	return next, nil
}
`

// What a plugin prints reaches the proxy log, one entry per line, and
// log.Fatal* panics (failing New) instead of ending the proxy.
func TestPluginOutput(t *testing.T) {
	env := newEnv(t)
	p := config.Plugin{Name: "test/printer", Version: "v1", Module: "example.com/a", Files: map[string]string{"a.go": printer}}
	if e := loadError(t, env.Env, p); e != nil {
		t.Fatal(e)
	}
	var got []string
	for _, e := range env.logs.All() {
		if e.ContextMap()["source"] == "plugin" {
			got = append(got, e.Message)
		}
	}
	want := []string{
		"fmt.Println 1", "fmt.Printf 2", "fmt.Print", "named x", // String of an interpreted value
		"log.Println", "pre: log.Printf named y", "pre: log.Default", // one logger behind log's functions and log.Default
		"mine: own logger", "builtin println", "scan 0 true", // stdin is empty
	}
	if !slices.Equal(got, want) {
		t.Errorf("plugin log lines:\n%q\nwant\n%q", got, want)
	}

	fatal := p
	fatal.Name = "test/fatal"
	e := loadError(t, env.Env, fatal)
	if e == nil || e.Phase != PhaseNew || !strings.Contains(e.Error(), "fatal 3") {
		t.Errorf("log.Fatalf in New: %v, want New to fail with the message", e)
	}
}

// genericPlugin sets X-Generic from a package of its module that uses cmp
// and slices (the root package imports neither). (maps would be loaded
// the same way, but yaegi v0.16.1 cannot instantiate its functions:
// "undefined type for K".)
func genericPlugin(name, module string) config.Plugin {
	return config.Plugin{Name: name, Version: "v1", Module: module, Files: map[string]string{
		"g.go": `package g

import (
	"context"
	"net/http"

	"` + module + `/internal/util"
)

type Config struct{}

func CreateConfig() *Config { return &Config{} }

func New(ctx context.Context, next http.Handler, cfg *Config, name string) (http.Handler, error) {
	v := util.Describe([]string{"a", "b", "c"})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Set("X-Generic", v)
		next.ServeHTTP(w, r)
	}), nil
}
`,
		"internal/util/util.go": `package util

import (
	"cmp"
	"slices"
	"strconv"
)

func Describe(s []string) string {
	return strconv.FormatBool(slices.Contains(s, "b")) + " " + strconv.Itoa(slices.Index(s, "c")) + " " +
		strconv.Itoa(cmp.Compare(s[0], s[1]))
}
`,
	}}
}

// Plugins importing cmp, maps or slices (in any of their packages) get
// them; the others do not pay for compiling them.
func TestGenericPackages(t *testing.T) {
	env := newEnv(t).Env
	_, cs := chainsFor(t, env, 0, genericPlugin("test/g", "example.com/g"))
	if u := cs.After.Unavailable(); u != nil {
		t.Fatal(u)
	}
	if r := get(t, server(t, cs, echo).URL); r.header.Get("Echo-X-Generic") != "true 2 -1" {
		t.Fatalf("X-Generic = %q, want %q", r.header.Get("Echo-X-Generic"), "true 2 -1")
	}

	// Heap kept per compiled plugin, with and without the generic packages.
	perPlugin := func(mk func(i int) config.Plugin) uint64 {
		const n = 4
		var ps []config.Plugin
		for i := range n {
			ps = append(ps, mk(i))
		}
		before := heapInUse()
		s := NewSet(ps, nil, env)
		after := heapInUse()
		if errs := s.Errors(); len(errs) > 0 {
			t.Fatal(errs[0])
		}
		runtime.KeepAlive(s)
		return (after - min(after, before)) / n
	}
	generic := perPlugin(func(i int) config.Plugin {
		return genericPlugin(fmt.Sprintf("test/g%d", i), fmt.Sprintf("example.com/g%d", i))
	})
	plain := perPlugin(func(i int) config.Plugin {
		return config.Plugin{Name: fmt.Sprintf("test/p%d", i), Version: "v1", Module: fmt.Sprintf("example.com/p%d", i),
			Files: map[string]string{"a.go": strings.Replace(withNew("", ""), "package a", "package p", 1)}}
	})
	t.Logf("heap per plugin: %d kB with the generic packages, %d kB without", generic/1024, plain/1024)
	if plain*2 > generic {
		t.Errorf("a plugin without cmp, maps or slices keeps %d kB, one with them %d kB: the generic packages seem compiled into every interpreter", plain/1024, generic/1024)
	}
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
