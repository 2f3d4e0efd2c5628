package symbols_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"

	"github.com/trellis-mesh/trellis/node-proxy/plugin/symbols"
)

const self = "github.com/trellis-mesh/trellis/node-proxy/plugin/symbols"

// Nothing of the package runs at program start: the Go linker drops the
// init task of a package without init work, and GODEBUG=inittrace=1 lists
// every package that has one. (This test binary, re-run with no tests,
// starts the way any program importing the package does.)
func TestNothingRunsAtStart(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "GODEBUG=inittrace=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v: %s", err, stderr.Bytes())
	}
	if !strings.Contains(stderr.String(), "init encoding/json @") {
		t.Fatalf("inittrace lists no package init (is GODEBUG=inittrace honoured?):\n%s", stderr.Bytes())
	}
	for _, line := range strings.Split(stderr.String(), "\n") {
		if strings.HasPrefix(line, "init "+self+" @") {
			t.Errorf("package symbols does work at program start (an init function, or a package variable set by code); only Build may build the tables:\n%s", line)
		}
	}
}

// Each Build is new: a caller may keep or change its tables.
func TestBuildIsFresh(t *testing.T) {
	a, b := symbols.Build(), symbols.Build()
	if len(a) != len(symbols.Packages())+1 || len(a) != len(b) {
		t.Fatalf("Build has %d and %d tables, want %d packages and \".\"", len(a), len(b), len(symbols.Packages()))
	}
	delete(a["strings/strings"], "Cut")
	if _, ok := b["strings/strings"]["Cut"]; !ok {
		t.Error("a change to one Build's table shows in another's")
	}
	if _, ok := symbols.Build()["strings/strings"]["Cut"]; !ok {
		t.Error("a change to one Build's table shows in the next Build")
	}
}

// A plugin's log.Fatal* and Logger.Fatal* panic: they must never end the
// proxy. The rest of a Logger writes where it was told to.
func TestLogFatalPanics(t *testing.T) {
	l := symbols.Build()["log/log"]
	var out bytes.Buffer
	logger := l["New"].Call([]reflect.Value{reflect.ValueOf(&out), reflect.ValueOf("p: "), reflect.ValueOf(0)})[0]
	logger.MethodByName("Printf").Call([]reflect.Value{reflect.ValueOf("%d"), reflect.ValueOf(7)})
	if out.String() != "p: 7\n" {
		t.Errorf("Logger.Printf wrote %q", out.String())
	}
	calls := map[string]func(){
		"log.Fatal":     func() { l["Fatal"].Call([]reflect.Value{reflect.ValueOf("x")}) },
		"log.Fatalf":    func() { l["Fatalf"].Call([]reflect.Value{reflect.ValueOf("x")}) },
		"log.Fatalln":   func() { l["Fatalln"].Call([]reflect.Value{reflect.ValueOf("x")}) },
		"Logger.Fatal":  func() { logger.MethodByName("Fatal").Call([]reflect.Value{reflect.ValueOf("x")}) },
		"Logger.Fatalf": func() { logger.MethodByName("Fatalf").Call([]reflect.Value{reflect.ValueOf("x")}) },
		"Logger.Fatalln": func() {
			logger.MethodByName("Fatalln").Call([]reflect.Value{reflect.ValueOf("x")})
		},
	}
	for name, call := range calls {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s returned; it must panic", name)
				}
			}()
			call()
		}()
	}
}

// MapTypes covers what yaegi's stdlib covers for these packages: the
// functions that look for String, Format or the marshalers on their
// arguments, and the richer wrappers for io.Copy and ResponseWriter.
func TestMapTypes(t *testing.T) {
	m, ok := symbols.Build()["."]["MapTypes"].Interface().(map[reflect.Value][]reflect.Type)
	if !ok {
		t.Fatal(`"." MapTypes is not a map[reflect.Value][]reflect.Type`)
	}
	stringer := reflect.TypeFor[fmt.Stringer]()
	for name, f := range map[string]any{"fmt.Sprintf": fmt.Sprintf, "fmt.Errorf": fmt.Errorf, "json.Marshal": json.Marshal} {
		if len(m[reflect.ValueOf(f)]) == 0 {
			t.Errorf("MapTypes has no entry for %s", name)
		}
	}
	if got := m[reflect.ValueOf(fmt.Sprint)]; len(got) != 2 || got[1] != stringer {
		t.Errorf("MapTypes[fmt.Sprint] = %v, want Formatter then Stringer", got)
	}
	all := symbols.Build()
	for _, w := range []struct{ key, name, method string }{
		{"io/io", "_Reader", "WriteTo"},
		{"io/io", "_Writer", "ReadFrom"},
		{"net/http/http", "_ResponseWriter", "Hijack"},
	} {
		wrappers := m[all[w.key][w.name]]
		if len(wrappers) != 1 {
			t.Errorf("MapTypes has %d composed wrappers for %s.%s, want 1", len(wrappers), w.key, w.name)
			continue
		}
		if _, ok := reflect.PointerTo(wrappers[0]).MethodByName(w.method); !ok {
			t.Errorf("the composed wrapper for %s.%s has no %s method", w.key, w.name, w.method)
		}
	}
}

// BenchmarkBuild is what the first plugin load pays for the tables.
func BenchmarkBuild(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_ = symbols.Build()
	}
}
