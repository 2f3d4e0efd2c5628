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
	"strings"
	"time"
)

// Module is one pinned wrapper module under tools/ and the commands it builds.
type Module struct {
	Dir      string            // folder under tools/
	Commands map[string]string // binary name -> package path
}

// Upstream lists the pinned modules. Order matters only for progress output.
var Upstream = []Module{
	{Dir: "etcd", Commands: map[string]string{"etcd": "go.etcd.io/etcd/server/v3"}},
	{Dir: "k8s", Commands: map[string]string{
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
	return hex.EncodeToString(h.Sum(nil))[:16], nil
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

// BuildOwn builds this repository's binaries that exist in the checkout.
func BuildOwn(ctx context.Context, root, out string, progress Progress) error {
	var pkgs []string
	for _, p := range Own {
		if _, err := os.Stat(filepath.Join(root, p)); err == nil {
			pkgs = append(pkgs, p)
		}
	}
	if len(pkgs) == 0 {
		return nil
	}
	args := append([]string{"build", "-trimpath", "-o", out + string(os.PathSeparator)}, pkgs...)
	if err := goCmd(ctx, root, nil, args...); err != nil {
		return fmt.Errorf("building Trellis binaries: %w", err)
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
	for name, pkg := range m.Commands {
		start := time.Now()
		env := []string{"CGO_ENABLED=0"}
		if err := goCmd(ctx, src, env, "build", "-trimpath", "-o", filepath.Join(tmp, name), pkg); err != nil {
			_ = os.RemoveAll(tmp)
			return fmt.Errorf("building %s from tools/%s: %w", name, m.Dir, err)
		}
		progress("  %s (%s)", name, time.Since(start).Round(time.Second))
	}
	_ = os.RemoveAll(dir)
	return os.Rename(tmp, dir)
}

func goCmd(ctx context.Context, dir string, env []string, args ...string) error {
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		goBin = "go"
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
