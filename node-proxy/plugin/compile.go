package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"reflect"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/traefik/yaegi/interp"
	"github.com/traefik/yaegi/stdlib/generic"
	"go.uber.org/zap"

	"github.com/trellis-mesh/trellis/node-proxy/config"
)

// Env is what loading and running plugins needs from the proxy. The zero
// value works: no logs, private metrics, default timeouts.
type Env struct {
	// Log receives what plugins print (fmt, log) and the loader's events.
	Log *zap.Logger
	// Metrics are updated by loading and serving; register Collectors.
	Metrics *Metrics
	// DefaultTimeout bounds plugin code per request for Services without a
	// request timeout. Default 15s.
	DefaultTimeout time.Duration
	// LoadTimeout bounds compiling a plugin (its package initialisation)
	// and each call of its CreateConfig and New. Default 10s.
	LoadTimeout time.Duration
}

// Defaults for Env.
const (
	DefaultTimeout     = 15 * time.Second
	DefaultLoadTimeout = 10 * time.Second
)

func (e *Env) withDefaults() *Env {
	out := Env{}
	if e != nil {
		out = *e
	}
	if out.Log == nil {
		out.Log = zap.NewNop()
	}
	if out.Metrics == nil {
		out.Metrics = NewMetrics()
	}
	if out.DefaultTimeout <= 0 {
		out.DefaultTimeout = DefaultTimeout
	}
	if out.LoadTimeout <= 0 {
		out.LoadTimeout = DefaultLoadTimeout
	}
	return &out
}

// Phase is the step of loading a plugin that failed.
type Phase string

// Loading phases, in order.
const (
	PhaseSource   Phase = "source"   // syntax, root package, allow-list
	PhaseCompile  Phase = "compile"  // type checking by the interpreter
	PhaseInit     Phase = "init"     // package initialisation panicked or hung
	PhaseContract Phase = "contract" // CreateConfig or New missing or mistyped
	PhaseConfig   Phase = "config"   // the config does not decode into *Config
	PhaseNew      Phase = "New"      // New returned an error, panicked or hung
)

// LoadError says why a plugin is not loaded: which plugin, which step,
// where in its source when known, and why.
type LoadError struct {
	Plugin  string // config name, e.g. "shop/addheader"
	Version string
	Service string // set when New failed for this Service only
	Phase   Phase
	// File and Line locate the (first) problem in the plugin's files
	// (module-relative), when known.
	File string
	Line int
	// Problems lists every source problem (PhaseSource), else one.
	Problems []Problem
	Err      error
}

func (e *LoadError) Error() string {
	var b strings.Builder
	b.WriteString("plugin ")
	b.WriteString(e.Plugin)
	if e.Version != "" {
		b.WriteString(" (version ")
		b.WriteString(e.Version)
		b.WriteString(")")
	}
	if e.Service != "" {
		b.WriteString(" for service ")
		b.WriteString(e.Service)
	}
	b.WriteString(": ")
	b.WriteString(string(e.Phase))
	b.WriteString(": ")
	if len(e.Problems) > 0 {
		for i, p := range e.Problems {
			if i > 0 {
				b.WriteString("; ")
			}
			b.WriteString(p.String())
		}
		return b.String()
	}
	b.WriteString(Problem{File: e.File, Line: e.Line, Msg: e.Err.Error()}.String())
	return b.String()
}

func (e *LoadError) Unwrap() error { return e.Err }

// failure is a load failure of a program, before it is tied to a plugin.
type failure struct {
	phase Phase
	file  string
	line  int
	probs []Problem
	err   error
}

func (f *failure) forPlugin(p *config.Plugin, service string) *LoadError {
	return &LoadError{Plugin: p.Name, Version: p.Version, Service: service, Phase: f.phase,
		File: f.file, Line: f.line, Problems: f.probs, Err: f.err}
}

// Program is one compiled plugin source: an interpreter holding the
// plugin's package, with its CreateConfig and New. It is immutable once
// compiled and shared by every Service and runtime using that source.
type Program struct {
	key, module, pkg string
	label            string // plugin name for logs and metrics
	env              *Env
	fail             *failure
	newFn, createFn  reflect.Value
	cfgType          reflect.Type // *Config
}

var (
	ctxType     = reflect.TypeFor[context.Context]()
	handlerType = reflect.TypeFor[http.Handler]()
	errorType   = reflect.TypeFor[error]()
	stringType  = reflect.TypeFor[string]()
)

// compile prepares and interprets p's source. It never panics; a failure
// is recorded on the returned Program.
func compile(p *config.Plugin, env *Env) *Program {
	prog := &Program{key: contentKey(p), module: p.Module, label: p.Name, env: env}
	prog.fail = prog.load(p)
	result := "ok"
	if prog.fail != nil {
		result = "error"
	}
	env.Metrics.Compiles.WithLabelValues(p.Name, result).Inc()
	return prog
}

func (prog *Program) load(p *config.Plugin) *failure {
	src, err := prepare(p)
	if err != nil {
		f := &failure{phase: PhaseSource, err: err}
		var se *sourceError
		if errors.As(err, &se) {
			f.probs = se.probs
			f.file, f.line = se.probs[0].File, se.probs[0].Line
		}
		return f
	}
	prog.pkg = src.pkgName
	out := &logWriter{log: prog.env.Log.With(zap.String("plugin", p.Name)), prefix: "src/" + p.Module + "/"}
	stdin := strings.NewReader("")
	i := interp.New(interp.Options{
		GoPath:               ".",
		SourcecodeFilesystem: newMemFS(src),
		Stdin:                stdin,
		Stdout:               out,
		Stderr:               out,
		Args:                 []string{p.Name},
		Env:                  []string{},
	})
	for _, syms := range []interp.Exports{baseSymbols(), composedWrappers(), privateVars(), prog.overrides(stdin, out)} {
		if err := i.Use(syms); err != nil {
			return &failure{phase: PhaseCompile, err: fmt.Errorf("loading the standard library: %w", err)}
		}
	}
	if src.generics {
		for _, s := range generic.Sources {
			if _, err := i.Compile(s); err != nil {
				return &failure{phase: PhaseCompile, err: fmt.Errorf("loading the generic packages cmp, maps and slices: %w", err)}
			}
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), prog.env.LoadTimeout)
	defer cancel()
	_, err = i.EvalWithContext(ctx, "import "+strconv.Quote(p.Module))
	if err != nil {
		var pe interp.Panic
		switch {
		case errors.As(err, &pe):
			prog.env.Metrics.Panics.WithLabelValues(p.Name).Inc()
			return &failure{phase: PhaseInit, err: fmt.Errorf("panic during package initialisation: %v", panicValue(pe.Value))}
		case errors.Is(err, context.DeadlineExceeded):
			return &failure{phase: PhaseInit, err: fmt.Errorf("package initialisation did not finish within %s", prog.env.LoadTimeout)}
		}
		f := &failure{phase: PhaseCompile}
		f.file, f.line, f.err = locate(err.Error(), "src/"+p.Module+"/")
		return f
	}

	var fail *failure
	eval := func(name string) reflect.Value {
		v, err := safeEval(i, prog.pkg+"."+name)
		if err != nil && fail == nil {
			fail = &failure{phase: PhaseContract, err: fmt.Errorf("package %s has no function %s: a plugin provides %s", prog.pkg, name, contract)}
		}
		return v
	}
	prog.createFn, prog.newFn = eval("CreateConfig"), eval("New")
	if fail != nil {
		return fail
	}
	if err := prog.checkContract(); err != nil {
		return &failure{phase: PhaseContract, err: err}
	}
	return nil
}

const contract = "func CreateConfig() *Config and func New(ctx context.Context, next http.Handler, config *Config, name string) (http.Handler, error)"

func (prog *Program) checkContract() error {
	c, n := prog.createFn.Type(), prog.newFn.Type()
	if c.Kind() != reflect.Func || c.NumIn() != 0 || c.NumOut() != 1 || c.Out(0).Kind() != reflect.Pointer {
		return fmt.Errorf("function CreateConfig is %s; want %s", describe(prog.createFn), contract)
	}
	prog.cfgType = c.Out(0)
	if n.Kind() != reflect.Func || n.NumIn() != 4 || n.NumOut() != 2 || n.IsVariadic() ||
		n.In(0) != ctxType || n.In(1) != handlerType || !prog.cfgType.AssignableTo(n.In(2)) || n.In(3) != stringType ||
		n.Out(0) != handlerType || n.Out(1) != errorType {
		return fmt.Errorf("function New is %s; want %s", describe(prog.newFn), contract)
	}
	return nil
}

func describe(v reflect.Value) string {
	if v.Kind() != reflect.Func {
		return "a " + v.Kind().String() + ", not a function"
	}
	return strings.ReplaceAll(v.Type().String(), "interface {}", "any")
}

func safeEval(i *interp.Interpreter, expr string) (v reflect.Value, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("interpreter panic: %v", r)
		}
	}()
	return i.Eval(expr)
}

// locate extracts the innermost "src/<module>/file.go:line:col: msg" of an
// interpreter error.
func locate(msg, prefix string) (file string, line int, err error) {
	i := strings.LastIndex(msg, prefix)
	if i < 0 {
		return "", 0, errors.New(msg)
	}
	rest := msg[i+len(prefix):]
	parts := strings.SplitN(rest, ":", 4)
	if len(parts) < 4 {
		return "", 0, errors.New(msg)
	}
	n, err1 := strconv.Atoi(parts[1])
	if err1 != nil {
		return "", 0, errors.New(msg)
	}
	return parts[0], n, errors.New(strings.TrimSpace(parts[3]))
}

// newConfig calls CreateConfig and decodes raw (JSON) into its result.
func (prog *Program) newConfig(raw json.RawMessage) (reflect.Value, *failure) {
	var cfg reflect.Value
	if f := prog.bounded(PhaseConfig, "CreateConfig", func() {
		cfg = prog.createFn.Call(nil)[0]
	}); f != nil {
		return reflect.Value{}, f
	}
	if cfg.IsNil() {
		return reflect.Value{}, &failure{phase: PhaseContract, err: errors.New("CreateConfig returned nil; it must return a pointer to the default config")}
	}
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return cfg, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(cfg.Interface()); err != nil {
		return reflect.Value{}, &failure{phase: PhaseConfig, err: configError(err, prog.cfgType)}
	}
	if dec.More() {
		return reflect.Value{}, &failure{phase: PhaseConfig, err: errors.New("config: more than one JSON value")}
	}
	return cfg, nil
}

// configError names the field a decoding error is about.
func configError(err error, t reflect.Type) error {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te):
		field := "config"
		if te.Field != "" {
			field += "." + te.Field
		}
		return fmt.Errorf("%s: cannot use a JSON %s as %s", field, te.Value, strings.ReplaceAll(te.Type.String(), "interface {}", "any"))
	case errors.As(err, &se):
		return fmt.Errorf("config: invalid JSON at byte %d: %w", se.Offset, err)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name := strings.TrimPrefix(err.Error(), "json: unknown field ")
		return fmt.Errorf("config.%s: unknown field; the plugin's Config has %s", strings.Trim(name, `"`), fieldList(t))
	}
	return fmt.Errorf("config: %w", err)
}

func fieldList(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return "no fields"
	}
	var names []string
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name := f.Name
		if tag, _, _ := strings.Cut(f.Tag.Get("json"), ","); tag == "-" {
			continue
		} else if tag != "" {
			name = tag
		}
		names = append(names, name)
	}
	if len(names) == 0 {
		return "no fields"
	}
	return "fields " + strings.Join(names, ", ")
}

// instantiate calls New.
func (prog *Program) instantiate(ctx context.Context, next http.Handler, cfg reflect.Value, name string) (http.Handler, *failure) {
	var h http.Handler
	var err error
	if f := prog.bounded(PhaseNew, "New", func() {
		out := prog.newFn.Call([]reflect.Value{reflect.ValueOf(ctx), reflect.ValueOf(&next).Elem(), cfg, reflect.ValueOf(name)})
		if e := out[1]; !e.IsNil() {
			err = e.Interface().(error)
			return
		}
		if v := out[0]; !v.IsNil() {
			h = v.Interface().(http.Handler)
		}
	}); f != nil {
		return nil, f
	}
	if err != nil {
		return nil, &failure{phase: PhaseNew, err: err}
	}
	if h == nil {
		return nil, &failure{phase: PhaseNew, err: errors.New("the plugin's New returned a nil handler and no error")}
	}
	return h, nil
}

// bounded runs plugin code at load time: a panic becomes a failure, and
// code that does not return within LoadTimeout is abandoned.
func (prog *Program) bounded(phase Phase, what string, fn func()) *failure {
	done := make(chan *failure, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				prog.env.Metrics.Panics.WithLabelValues(prog.label).Inc()
				done <- &failure{phase: phase, err: fmt.Errorf("%s panicked: %v", what, panicValue(r))}
			}
		}()
		fn()
		done <- nil
	}()
	t := time.NewTimer(prog.env.LoadTimeout)
	defer t.Stop()
	select {
	case f := <-done:
		return f
	case <-t.C:
		ab := prog.env.Metrics.Abandoned.WithLabelValues(prog.label)
		ab.Inc()
		go func() { <-done; ab.Dec() }()
		return &failure{phase: phase, err: fmt.Errorf("%s did not return within %s", what, prog.env.LoadTimeout)}
	}
}

// panicValue unwraps what the interpreter panics with.
func panicValue(v any) any {
	if rv, ok := v.(reflect.Value); ok && rv.IsValid() && rv.CanInterface() {
		return rv.Interface()
	}
	return v
}

// recovered records a panic in a goroutine the plugin started (or a
// callback the standard library ran for it on its own goroutine).
func (prog *Program) recovered(where string, v any) {
	prog.env.Metrics.Panics.WithLabelValues(prog.label).Inc()
	prog.env.Log.Error("plugin panicked; recovered, the proxy keeps serving",
		zap.String("plugin", prog.label), zap.String("in", where), zap.Any("panic", panicValue(v)),
		zap.ByteString("stack", debug.Stack()))
}

// overrides are the symbols each interpreter gets instead of the
// standard library's: the go-statement helper, callbacks that run on
// goroutines of their own under a recover, fmt's and log's printing and
// scanning on the plugin's own stdout and stdin (one *log.Logger of its own
// behind log's functions and log.Default; Fatal* panic), and request
// bodies guarded when the plugin supplies an interpreted reader.
//
// yaegi's Use redirects fmt and log itself when given the table of fmt
// under "fmt/fmt", but then also compiles the generic packages into the
// interpreter; the tables name fmt otherwise (fmtKey), and the loader
// compiles those packages only for plugins importing them.
func (prog *Program) overrides(stdin io.Reader, stdout io.Writer) interp.Exports {
	own := log.New(stdout, "", log.LstdFlags)
	guard := func(where string, f func()) func() {
		return func() {
			defer func() {
				if r := recover(); r != nil {
					prog.recovered(where, r)
				}
			}()
			f()
		}
	}
	body := func(r io.Reader) io.Reader {
		if r == nil || !interpreted(r) {
			return r
		}
		return &safeReader{r: r, prog: prog}
	}
	fmtSyms := map[string]reflect.Value{
		"Print":   reflect.ValueOf(func(a ...any) (int, error) { return fmt.Fprint(stdout, a...) }),
		"Printf":  reflect.ValueOf(func(f string, a ...any) (int, error) { return fmt.Fprintf(stdout, f, a...) }),
		"Println": reflect.ValueOf(func(a ...any) (int, error) { return fmt.Fprintln(stdout, a...) }),
		"Scan":    reflect.ValueOf(func(a ...any) (int, error) { return fmt.Fscan(stdin, a...) }),
		"Scanf":   reflect.ValueOf(func(f string, a ...any) (int, error) { return fmt.Fscanf(stdin, f, a...) }),
		"Scanln":  reflect.ValueOf(func(a ...any) (int, error) { return fmt.Fscanln(stdin, a...) }),
	}
	logSyms := map[string]reflect.Value{
		"Default": reflect.ValueOf(func() *log.Logger { return own }),
		"Fatal":   reflect.ValueOf(own.Panic), "Fatalf": reflect.ValueOf(own.Panicf), "Fatalln": reflect.ValueOf(own.Panicln),
		"Panic": reflect.ValueOf(own.Panic), "Panicf": reflect.ValueOf(own.Panicf), "Panicln": reflect.ValueOf(own.Panicln),
		"Print": reflect.ValueOf(own.Print), "Printf": reflect.ValueOf(own.Printf), "Println": reflect.ValueOf(own.Println),
		"Flags": reflect.ValueOf(own.Flags), "SetFlags": reflect.ValueOf(own.SetFlags),
		"Prefix": reflect.ValueOf(own.Prefix), "SetPrefix": reflect.ValueOf(own.SetPrefix),
		"Writer": reflect.ValueOf(own.Writer), "SetOutput": reflect.ValueOf(own.SetOutput),
		"Output": reflect.ValueOf(own.Output),
	}
	// Arguments that are interpreted values keep their String and Format
	// methods (and fmt.Scanner for scanning), as with the real functions.
	formatting := []reflect.Type{reflect.TypeFor[fmt.Formatter](), reflect.TypeFor[fmt.Stringer]()}
	mapTypes := map[reflect.Value][]reflect.Type{}
	for name, v := range fmtSyms {
		if strings.HasPrefix(name, "Scan") {
			mapTypes[v] = []reflect.Type{reflect.TypeFor[fmt.Scanner]()}
		} else {
			mapTypes[v] = formatting
		}
	}
	for _, name := range []string{"Fatal", "Fatalf", "Fatalln", "Panic", "Panicf", "Panicln", "Print", "Printf", "Println"} {
		mapTypes[logSyms[name]] = formatting
	}
	return interp.Exports{
		rtPath + "/pluginrt": {
			"Go":       reflect.ValueOf(func(fn any, args ...any) { prog.run(fn, args, false) }),
			"GoSpread": reflect.ValueOf(func(fn any, args ...any) { prog.run(fn, args, true) }),
		},
		".":       {"MapTypes": reflect.ValueOf(mapTypes)},
		fmtKey:    fmtSyms,
		"log/log": logSyms,
		"time/time": {"AfterFunc": reflect.ValueOf(func(d time.Duration, f func()) *time.Timer {
			return time.AfterFunc(d, guard("time.AfterFunc", f))
		})},
		"context/context": {"AfterFunc": reflect.ValueOf(func(ctx context.Context, f func()) func() bool {
			return context.AfterFunc(ctx, guard("context.AfterFunc", f))
		})},
		"net/http/http": {
			"NewRequest": reflect.ValueOf(func(method, url string, b io.Reader) (*http.Request, error) {
				return http.NewRequest(method, url, body(b))
			}),
			"NewRequestWithContext": reflect.ValueOf(func(ctx context.Context, method, url string, b io.Reader) (*http.Request, error) {
				return http.NewRequestWithContext(ctx, method, url, body(b))
			}),
			"Post": reflect.ValueOf(func(url, contentType string, b io.Reader) (*http.Response, error) {
				return http.Post(url, contentType, body(b))
			}),
		},
	}
}

// interpreted reports whether v is a value of interpreted code (the
// interpreter hands such values to compiled code inside its wrappers).
func interpreted(v any) bool {
	t := reflect.TypeOf(v)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return strings.HasPrefix(t.PkgPath(), "github.com/traefik/yaegi") || t.PkgPath() == "" && t.Kind() == reflect.Struct
}

// run is the body of every goroutine a plugin starts (see rewriteGo): it
// calls fn with args, converting untyped constants the way the compiler
// would, under a recover.
func (prog *Program) run(fn any, args []any, spread bool) {
	defer func() {
		if r := recover(); r != nil {
			prog.recovered("goroutine", r)
		}
	}()
	f := reflect.ValueOf(fn)
	if f.Kind() != reflect.Func {
		panic(fmt.Sprintf("go statement on a %T, not a function", fn))
	}
	ft := f.Type()
	in := make([]reflect.Value, len(args))
	for k, a := range args {
		var pt reflect.Type
		switch last := ft.NumIn() - 1; {
		case ft.IsVariadic() && k >= last && spread:
			pt = ft.In(last)
		case ft.IsVariadic() && k >= last:
			pt = ft.In(last).Elem()
		case k <= last:
			pt = ft.In(k)
		default:
			panic(fmt.Sprintf("go statement passes %d arguments to a function of %d", len(args), ft.NumIn()))
		}
		if a == nil {
			in[k] = reflect.Zero(pt)
			continue
		}
		v := reflect.ValueOf(a)
		if v.Type() != pt && !v.Type().AssignableTo(pt) && v.Type().ConvertibleTo(pt) {
			v = v.Convert(pt)
		}
		in[k] = v
	}
	if spread {
		f.CallSlice(in)
	} else {
		f.Call(in)
	}
}

// safeReader turns a panic in an interpreted reader into an error: the
// HTTP transport reads request bodies on a goroutine of its own.
type safeReader struct {
	r    io.Reader
	prog *Program
}

func (s *safeReader) Read(p []byte) (n int, err error) {
	defer func() {
		if r := recover(); r != nil {
			s.prog.recovered("request body Read", r)
			n, err = 0, fmt.Errorf("plugin %s: request body reader panicked: %v", s.prog.label, panicValue(r))
		}
	}()
	return s.r.Read(p)
}

// logWriter sends what a plugin prints to the proxy log, one entry per
// line, with interpreter paths made module-relative.
type logWriter struct {
	mu     sync.Mutex
	log    *zap.Logger
	prefix string
	buf    []byte
}

const maxLogLine = 4 << 10

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			if len(w.buf) > maxLogLine {
				w.emit(w.buf)
				w.buf = w.buf[:0]
			}
			return len(p), nil
		}
		w.emit(w.buf[:i])
		w.buf = slices.Delete(w.buf, 0, i+1)
	}
}

func (w *logWriter) emit(line []byte) {
	if len(line) > maxLogLine {
		line = line[:maxLogLine]
	}
	s := strings.ReplaceAll(string(line), w.prefix, "")
	if s != "" {
		w.log.Info(s, zap.String("source", "plugin"))
	}
}
