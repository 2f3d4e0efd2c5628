package toolchain

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"
)

// Module is one pinned wrapper module under tools/ and the commands it builds.
type Module struct {
	Dir      string            // folder under tools/
	Commands map[string]string // binary name -> package path
	// Stamp names the module whose version the binaries report, and the
	// packages whose version variables the linker sets (as upstream's
	// release build does; without it they report v0.0.0-master).
	Stamp        string
	StampPackage []string
}

// Upstream lists the pinned modules. Order matters only for progress output.
var Upstream = []Module{
	{Dir: "etcd", Commands: map[string]string{"etcd": "go.etcd.io/etcd/server/v3"}},
	{Dir: "k8s", Stamp: "k8s.io/kubernetes", StampPackage: []string{"k8s.io/component-base/version", "k8s.io/client-go/pkg/version"}, Commands: map[string]string{
		"kube-apiserver":          "k8s.io/kubernetes/cmd/kube-apiserver",
		"kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
		"kube-scheduler":          "k8s.io/kubernetes/cmd/kube-scheduler",
		"kube-proxy":              "k8s.io/kubernetes/cmd/kube-proxy",
		"kubectl":                 "k8s.io/kubernetes/cmd/kubectl",
	}},
	{Dir: "coredns", Commands: map[string]string{"coredns": "github.com/coredns/coredns"}},
}

// Own lists the binaries built from this repository, by image name.
var Own = map[string]string{
	"whoami":             "./cmd/whoami",
	"trellis-dev":        "./cmd/trellis-dev",
	"trellis-proxy":      "./cmd/trellis-proxy",
	"trellis-controller": "./cmd/trellis-controller",
	"kubectl-trellis":    "./cmd/kubectl-trellis",
}

// Bins is where every binary lives once Ensure returns.
type Bins struct {
	Upstream string // folder holding the pinned upstream binaries
	Own      string // folder holding this repository's binaries
}

// Path returns the path of the named binary, looking in Own first.
func (b Bins) Path(name string) string {
	if _, ok := Own[name]; ok {
		return filepath.Join(b.Own, name)
	}
	return filepath.Join(b.Upstream, name)
}

// Progress receives one line per step.
type Progress func(format string, args ...any)

// CacheDir is the root of Trellis's build cache: $TRELLIS_CACHE, else
// $XDG_CACHE_HOME/trellis, else ~/.cache/trellis.
func CacheDir() string {
	if d := os.Getenv("TRELLIS_CACHE"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "trellis")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".cache", "trellis")
	}
	return filepath.Join(os.TempDir(), "trellis-cache")
}

// RepoRoot finds the repository root by walking up from dir to the go.mod
// that declares the Trellis module.
func RepoRoot(dir string) (string, error) {
	if r := os.Getenv("TRELLIS_ROOT"); r != "" {
		return r, nil
	}
	d, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(d, "go.mod"))
		if err == nil && strings.Contains(string(b), "module github.com/trellis-mesh/trellis\n") {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", fmt.Errorf("no Trellis checkout above %s: run from inside the repository or set TRELLIS_ROOT", dir)
		}
		d = parent
	}
}

// recipe changes when the way binaries are built changes, so caches rebuild.
const recipe = "cgo0-trimpath-stamp1"

// Key is the cache key of a wrapper module: a hash of its go.mod, go.sum and
// the Go version that builds it.
func Key(root string, m Module) (string, error) {
	h := sha256.New()
	for _, f := range []string{"go.mod", "go.sum"} {
		b, err := os.ReadFile(filepath.Join(root, "tools", m.Dir, f))
		if err != nil {
			return "", fmt.Errorf("tools/%s: %w", m.Dir, err)
		}
		h.Write(b)
	}
	h.Write([]byte(runtime.Version()))
	h.Write([]byte(recipe))
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// Cached returns where Ensure puts the binaries, without building.
func Cached() Bins {
	return Bins{Upstream: filepath.Join(CacheDir(), "upstream", "current"), Own: filepath.Join(CacheDir(), "own")}
}

// Ensure builds what is missing and returns where the binaries are. Upstream
// binaries are built once per pin; own binaries are rebuilt every call (the
// Go build cache makes that a link step when nothing changed).
func Ensure(ctx context.Context, root string, progress Progress) (Bins, error) {
	bins, err := EnsureUpstream(ctx, root, progress)
	if err != nil {
		return bins, err
	}
	if err := BuildOwn(ctx, root, bins.Own, progress); err != nil {
		return bins, err
	}
	return bins, nil
}

// EnsureUpstream builds the pinned upstream binaries that are missing.
func EnsureUpstream(ctx context.Context, root string, progress Progress) (Bins, error) {
	if progress == nil {
		progress = func(string, ...any) {}
	}
	up := filepath.Join(CacheDir(), "upstream")
	bins := Bins{Upstream: filepath.Join(up, "current"), Own: filepath.Join(CacheDir(), "own")}
	if err := os.MkdirAll(bins.Own, 0o755); err != nil {
		return bins, err
	}
	if err := os.MkdirAll(up, 0o755); err != nil {
		return bins, err
	}
	// One build at a time per machine: test binaries and the CLI may ask at once.
	lock, err := os.OpenFile(filepath.Join(up, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return bins, err
	}
	defer func() { _ = lock.Close() }()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return bins, fmt.Errorf("locking the tool cache: %w", err)
	}
	var dirs []string
	for _, m := range Upstream {
		key, err := Key(root, m)
		if err != nil {
			return bins, err
		}
		dir := filepath.Join(up, m.Dir+"-"+key)
		dirs = append(dirs, dir)
		if complete(dir, m) {
			continue
		}
		start := time.Now()
		progress("building %s binaries from tools/%s (first run only; several minutes)", m.Dir, m.Dir)
		if err := buildModule(ctx, root, m, dir, progress); err != nil {
			return bins, err
		}
		progress("built %s binaries in %s", m.Dir, time.Since(start).Round(time.Second))
	}
	// "current" is a folder of symlinks to the pinned builds, so callers
	// see one folder whatever the keys are.
	tmp := bins.Upstream + ".tmp"
	_ = os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return bins, err
	}
	for i, m := range Upstream {
		for name := range m.Commands {
			if err := os.Symlink(filepath.Join(dirs[i], name), filepath.Join(tmp, name)); err != nil {
				return bins, err
			}
		}
	}
	_ = os.RemoveAll(bins.Upstream)
	if err := os.Rename(tmp, bins.Upstream); err != nil {
		return bins, err
	}
	return bins, nil
}

// Required are the own binaries the local cluster cannot run without.
var Required = map[string]bool{"trellis-dev": true, "whoami": true}

// BuildOwn builds this repository's binaries that exist in the checkout,
// one package at a time. A binary that fails to build and is not Required
// is removed from out and reported, so its image is simply unavailable.
func BuildOwn(ctx context.Context, root, out string, progress Progress) error {
	if progress == nil {
		progress = func(string, ...any) {}
	}
	names := make([]string, 0, len(Own))
	for name := range Own {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		pkg := Own[name]
		if _, err := os.Stat(filepath.Join(root, pkg)); err != nil {
			continue
		}
		err := goCmd(ctx, root, nil, "build", "-trimpath", "-buildvcs=false", "-o", filepath.Join(out, name), pkg)
		if err == nil {
			continue
		}
		if Required[name] {
			return fmt.Errorf("building %s: %w", name, err)
		}
		_ = os.Remove(filepath.Join(out, name))
		progress("warning: %s does not build, its image is unavailable: %v", name, err)
	}
	return nil
}

func complete(dir string, m Module) bool {
	for name := range m.Commands {
		if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}

func buildModule(ctx context.Context, root string, m Module, dir string, progress Progress) error {
	tmp := dir + ".partial"
	_ = os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return err
	}
	src := filepath.Join(root, "tools", m.Dir)
	ldflags, err := stampFlags(src, m)
	if err != nil {
		return err
	}
	for name, pkg := range m.Commands {
		start := time.Now()
		env := []string{"CGO_ENABLED=0"}
		if err := goCmd(ctx, src, env, "build", "-trimpath", "-buildvcs=false", "-ldflags", ldflags, "-o", filepath.Join(tmp, name), pkg); err != nil {
			_ = os.RemoveAll(tmp)
			return fmt.Errorf("building %s from tools/%s: %w", name, m.Dir, err)
		}
		progress("  %s (%s)", name, time.Since(start).Round(time.Second))
	}
	_ = os.RemoveAll(dir)
	return os.Rename(tmp, dir)
}

// stampFlags returns -X flags that set the version variables from the
// pinned module version in the wrapper's go.mod.
func stampFlags(src string, m Module) (string, error) {
	if m.Stamp == "" {
		return "", nil
	}
	b, err := os.ReadFile(filepath.Join(src, "go.mod"))
	if err != nil {
		return "", err
	}
	version := ""
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(strings.TrimPrefix(strings.TrimSpace(l), "require "))
		if len(f) >= 2 && f[0] == m.Stamp {
			version = f[1]
		}
	}
	parts := strings.SplitN(strings.TrimPrefix(version, "v"), ".", 3)
	if len(parts) < 2 {
		return "", fmt.Errorf("tools/%s/go.mod: no version for %s", m.Dir, m.Stamp)
	}
	var flags []string
	for _, p := range m.StampPackage {
		flags = append(flags,
			"-X "+p+".gitVersion="+version, "-X "+p+".gitMajor="+parts[0], "-X "+p+".gitMinor="+parts[1],
			"-X "+p+".gitTreeState=clean", "-X "+p+".buildDate=1970-01-01T00:00:00Z")
	}
	return strings.Join(flags, " "), nil
}

func goCmd(ctx context.Context, dir string, env []string, args ...string) error {
	// The go command that runs us (go run / go tool) sets GOROOT; else PATH.
	goBin := "go"
	if r := os.Getenv("GOROOT"); r != "" {
		if p := filepath.Join(r, "bin", "go"); fileExists(p) {
			goBin = p
		}
	}
	cmd := exec.CommandContext(ctx, goBin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var out strings.Builder
	cmd.Stdout = io.MultiWriter(&out)
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(out.String())
		if len(msg) > 4000 {
			msg = msg[len(msg)-4000:]
		}
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return fmt.Errorf("go %s: %s", strings.Join(args, " "), msg)
		}
		return fmt.Errorf("go %s: %w", strings.Join(args, " "), err)
	}
	return nil
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }
