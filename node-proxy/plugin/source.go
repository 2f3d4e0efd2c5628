package plugin

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/scanner"
	"go/token"
	"io"
	"io/fs"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/trellis-mesh/trellis/node-proxy/config"
)

// rtPath is the import path of the helpers the loader injects into plugin
// source (see rewriteGo). Plugins cannot import it themselves: it is not
// under their module.
const (
	rtPath  = "trellis.invalid/pluginrt"
	rtAlias = "trellis_rt_"
)

// source is a plugin's checked and prepared source.
type source struct {
	module  string
	pkgName string            // name of the package at the module root
	files   map[string]string // module-relative path → source as compiled
	key     string            // content hash of module and files
	// generics is set when a file imports cmp, maps or slices, which the
	// interpreter compiles from source (yaegi's stdlib/generic).
	generics bool
}

// contentKey hashes what compiling depends on: the module path and the
// files. Two plugins with the same key share one compiled program.
func contentKey(p *config.Plugin) string {
	h := sha256.New()
	h.Write([]byte(p.Module)) // a hash.Hash never fails
	for _, name := range slices.Sorted(mapKeys(p.Files)) {
		fmt.Fprintf(h, "\x00%s\x00%d\x00", name, len(p.Files[name]))
		h.Write([]byte(p.Files[name]))
	}
	return hex.EncodeToString(h.Sum(nil))
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// prepare checks p's source against the rules (syntax, root package,
// allow-listed imports and symbols) and rewrites go statements so a panic
// in a goroutine the plugin starts is recovered. Every problem is reported
// with its file and line.
func prepare(p *config.Plugin) (*source, error) {
	var probs problems
	if err := checkModule(p.Module); err != "" {
		probs.add("", 0, "module: "+err)
		return nil, probs.err()
	}
	src := &source{module: p.Module, files: make(map[string]string, len(p.Files)), key: contentKey(p)}
	fset := token.NewFileSet()
	dirs := map[string]bool{} // directories holding compiled files
	type parsed struct {
		name string
		f    *ast.File
	}
	var all []parsed
	for _, name := range slices.Sorted(mapKeys(p.Files)) {
		if !fs.ValidPath(name) || !strings.HasSuffix(name, ".go") || strings.Contains(name, "\\") {
			probs.add(name, 0, "file name: must be a slash-separated path to a .go file inside the module")
			continue
		}
		if skipped(name) {
			continue // tests and ignored files are not compiled
		}
		f, err := parser.ParseFile(fset, name, p.Files[name], parser.ParseComments|parser.SkipObjectResolution)
		if err != nil {
			var el scanner.ErrorList
			if errors.As(err, &el) {
				for _, e := range el {
					probs.add(e.Pos.Filename, e.Pos.Line, "syntax error: "+e.Msg)
				}
			} else {
				probs.add(name, 0, err.Error())
			}
			continue
		}
		dirs[path.Dir(name)] = true
		all = append(all, parsed{name, f})
	}
	if len(probs) > 0 {
		return nil, probs.err()
	}

	// The package at the module root is the plugin.
	for _, pf := range all {
		if path.Dir(pf.name) != "." {
			continue
		}
		switch n := pf.f.Name.Name; {
		case n == "main":
			probs.add(pf.name, fset.Position(pf.f.Package).Line, "package main cannot be imported; name the package after the plugin, e.g. package "+strings.ReplaceAll(path.Base(p.Module), "-", ""))
		case src.pkgName == "":
			src.pkgName = n
		case n != src.pkgName:
			probs.add(pf.name, fset.Position(pf.f.Package).Line, fmt.Sprintf("package %s, but other files at the module root are package %s", n, src.pkgName))
		}
	}
	if src.pkgName == "" && len(probs) == 0 {
		probs.add("", 0, "files: no .go file at the module root; the plugin package (with CreateConfig and New) must be there")
	}

	for _, pf := range all {
		checkFile(fset, pf.name, pf.f, p.Module, dirs, &probs)
	}
	if len(probs) > 0 {
		return nil, probs.err()
	}
	for _, pf := range all {
		src.files[pf.name] = rewriteGo(fset, pf.f, p.Files[pf.name])
		for _, is := range pf.f.Imports {
			switch is.Path.Value {
			case `"cmp"`, `"maps"`, `"slices"`:
				src.generics = true
			}
		}
	}
	return src, nil
}

// skipped reports whether the interpreter leaves a file out: tests, and
// names starting with "_" or ".".
func skipped(name string) bool {
	b := path.Base(name)
	return strings.HasSuffix(b, "_test.go") || strings.HasPrefix(b, "_") || strings.HasPrefix(b, ".")
}

// checkModule validates a module path for use as a directory.
func checkModule(m string) string {
	if m == "" {
		return "must be set"
	}
	for _, elem := range strings.Split(m, "/") {
		if elem == "" || elem == "." || elem == ".." {
			return fmt.Sprintf("%q is not an import path (empty, . or .. element)", m)
		}
		for _, r := range elem {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-._~+", r)) {
				return fmt.Sprintf("%q is not an import path (character %q)", m, r)
			}
		}
	}
	return ""
}

// checkFile applies the import and symbol rules to one file.
func checkFile(fset *token.FileSet, name string, f *ast.File, module string, dirs map[string]bool, probs *problems) {
	std := map[string]string{} // local name → allow-listed std package
	usesTemplate := false
	for _, is := range f.Imports {
		ip, err := strconv.Unquote(is.Path.Value)
		line := fset.Position(is.Pos()).Line
		if err != nil {
			probs.add(name, line, "bad import path "+is.Path.Value)
			continue
		}
		if why := importRule(ip, module, dirs); why != "" {
			probs.add(name, line, fmt.Sprintf("import %q is not allowed: %s", ip, why))
			continue
		}
		if _, ok := allowed[ip]; ok {
			local := path.Base(ip)
			if ip == "math/rand/v2" {
				local = "rand"
			}
			if is.Name != nil {
				local = is.Name.Name
			}
			std[local] = ip
			usesTemplate = usesTemplate || ip == "text/template" || ip == "html/template"
		}
	}
	ast.Inspect(f, func(n ast.Node) bool {
		sel, ok := n.(*ast.SelectorExpr)
		if !ok {
			return true
		}
		if id, ok := sel.X.(*ast.Ident); ok {
			if ip, ok := std[id.Name]; ok {
				if why := checkSymbol(ip, sel.Sel.Name); why != "" {
					probs.add(name, fset.Position(sel.Pos()).Line, fmt.Sprintf("%s.%s is not available to plugins: %s", ip, sel.Sel.Name, why))
				}
			}
		}
		if usesTemplate {
			switch sel.Sel.Name {
			case "ParseFiles", "ParseGlob", "ParseFS":
				probs.add(name, fset.Position(sel.Sel.Pos()).Line, fmt.Sprintf("template %s is not available to plugins: %s; parse templates from strings", sel.Sel.Name, whyFile))
			}
		}
		return true
	})
}

// importRule says why a plugin may not import ip, or "" when it may: an
// allow-listed standard-library package, a package of the plugin's own
// module, or a package vendored under vendor/.
func importRule(ip, module string, dirs map[string]bool) string {
	switch {
	case ip == "C":
		return "cgo is not available to plugins"
	case strings.HasPrefix(ip, "./") || strings.HasPrefix(ip, "../") || ip == "." || ip == "..":
		return "relative imports are not supported; import packages of the module by their full path"
	case ip == module || strings.HasPrefix(ip, module+"/"):
		rel := strings.TrimPrefix(strings.TrimPrefix(ip, module), "/")
		if rel == "" {
			return "a package cannot import itself"
		}
		if !dirs[rel] {
			return fmt.Sprintf("the module has no .go files in %s/", rel)
		}
		return ""
	case dirs["vendor/"+ip]:
		return ""
	}
	first, _, _ := strings.Cut(ip, "/")
	if !strings.Contains(first, ".") {
		return checkImport(ip) // the standard library
	}
	return "it is neither in the module nor vendored; ship third-party packages under vendor/ in the plugin's files"
}

// rewriteGo turns every `go f(args)` into `go rt.Go(f, args)` so the
// goroutine runs under a recover (a panic there would otherwise end the
// proxy). The arguments are still evaluated by the go statement. Edits
// stay on their lines, so positions in errors keep their line numbers. The
// helper import is added on the package clause's line.
func rewriteGo(fset *token.FileSet, f *ast.File, text string) string {
	type edit struct {
		off  int
		del  int
		text string
	}
	var edits []edit
	off := func(p token.Pos) int { return fset.Position(p).Offset }
	ast.Inspect(f, func(n ast.Node) bool {
		g, ok := n.(*ast.GoStmt)
		if !ok {
			return true
		}
		c := g.Call
		if id, ok := c.Fun.(*ast.Ident); ok && builtins[id.Name] {
			// A builtin is not a value: wrap the call in a closure.
			edits = append(edits, edit{off(c.Pos()), 0, rtAlias + ".Go(func() { "}, edit{off(c.End()), 0, " })"})
			return true
		}
		fn := ".Go("
		if c.Ellipsis.IsValid() {
			fn = ".GoSpread("
			edits = append(edits, edit{off(c.Ellipsis), 3, ""})
		}
		edits = append(edits, edit{off(c.Fun.Pos()), 0, rtAlias + fn})
		if len(c.Args) > 0 {
			edits = append(edits, edit{off(c.Lparen), 1, ", "})
		} else {
			edits = append(edits, edit{off(c.Lparen), 1, ""})
		}
		return true
	})
	if len(edits) == 0 {
		return text
	}
	edits = append(edits, edit{off(f.Name.End()), 0, fmt.Sprintf("; import %s %q", rtAlias, rtPath)})
	sort.SliceStable(edits, func(i, j int) bool { return edits[i].off < edits[j].off })
	var b strings.Builder
	last := 0
	for _, e := range edits {
		b.WriteString(text[last:e.off])
		b.WriteString(e.text)
		last = e.off + e.del
	}
	b.WriteString(text[last:])
	return b.String()
}

var builtins = set("append", "cap", "clear", "close", "complex", "copy", "delete", "imag", "len", "make",
	"max", "min", "new", "panic", "print", "println", "real", "recover")

// problems collects source problems.
type problems []Problem

// Problem is one thing wrong with a plugin's source.
type Problem struct {
	File string // module-relative, "" when not about one file
	Line int    // 0 when unknown
	Msg  string
}

func (p Problem) String() string {
	switch {
	case p.File == "":
		return p.Msg
	case p.Line == 0:
		return p.File + ": " + p.Msg
	}
	return p.File + ":" + strconv.Itoa(p.Line) + ": " + p.Msg
}

func (ps *problems) add(file string, line int, msg string) {
	*ps = append(*ps, Problem{File: file, Line: line, Msg: msg})
}

func (ps problems) err() error {
	if len(ps) == 0 {
		return nil
	}
	return &sourceError{probs: ps}
}

// sourceError carries problems to LoadError.
type sourceError struct{ probs problems }

func (e *sourceError) Error() string {
	s := make([]string, len(e.probs))
	for i, p := range e.probs {
		s[i] = p.String()
	}
	return strings.Join(s, "; ")
}

// memFS serves the prepared files as a GOPATH: src/<module>/<file>.
type memFS struct {
	files map[string]string // full path → content
	dirs  map[string][]fs.DirEntry
}

func newMemFS(s *source) *memFS {
	m := &memFS{files: map[string]string{}, dirs: map[string][]fs.DirEntry{}}
	seen := map[string]bool{}
	for name, text := range s.files {
		full := path.Join("src", s.module, name)
		m.files[full] = text
		child, isDir := full, false
		for dir := path.Dir(full); ; dir = path.Dir(dir) {
			key := dir + "/" + path.Base(child)
			if !seen[key] {
				seen[key] = true
				m.dirs[dir] = append(m.dirs[dir], fileEntry{name: path.Base(child), dir: isDir, size: len(m.files[child])})
			}
			if dir == "." {
				break
			}
			child, isDir = dir, true
		}
	}
	for _, es := range m.dirs {
		sort.Slice(es, func(i, j int) bool { return es[i].Name() < es[j].Name() })
	}
	return m
}

func (m *memFS) Open(name string) (fs.File, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrInvalid}
	}
	if text, ok := m.files[name]; ok {
		return &memFile{fileEntry: fileEntry{name: path.Base(name), size: len(text)}, r: strings.NewReader(text)}, nil
	}
	if es, ok := m.dirs[name]; ok {
		return &memFile{fileEntry: fileEntry{name: path.Base(name), dir: true}, entries: es}, nil
	}
	return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
}

type fileEntry struct {
	name string
	dir  bool
	size int
}

func (e fileEntry) Name() string               { return e.name }
func (e fileEntry) IsDir() bool                { return e.dir }
func (e fileEntry) Type() fs.FileMode          { return e.Mode().Type() }
func (e fileEntry) Info() (fs.FileInfo, error) { return e, nil }
func (e fileEntry) Size() int64                { return int64(e.size) }
func (e fileEntry) ModTime() time.Time         { return time.Time{} }
func (e fileEntry) Sys() any                   { return nil }
func (e fileEntry) Mode() fs.FileMode {
	if e.dir {
		return fs.ModeDir | 0o555
	}
	return 0o444
}

type memFile struct {
	fileEntry
	r       *strings.Reader
	entries []fs.DirEntry
	pos     int
}

func (f *memFile) Stat() (fs.FileInfo, error) { return f.fileEntry, nil }
func (f *memFile) Close() error               { return nil }
func (f *memFile) Read(p []byte) (int, error) {
	if f.r == nil {
		return 0, &fs.PathError{Op: "read", Path: f.name, Err: fs.ErrInvalid}
	}
	return f.r.Read(p)
}

func (f *memFile) ReadDir(n int) ([]fs.DirEntry, error) {
	rest := f.entries[f.pos:]
	if n > 0 && len(rest) > n {
		rest = rest[:n]
	}
	f.pos += len(rest)
	if n > 0 && len(rest) == 0 {
		return nil, io.EOF
	}
	return rest, nil
}

var _ fs.ReadDirFile = (*memFile)(nil)
