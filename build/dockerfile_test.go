package build

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/manifests/base"
)

// images maps each image to the workload manifest that runs it ("" for
// the plugin, which no manifest runs).
var images = map[string]string{
	"trellis-controller": "controller.yaml",
	"trellis-proxy":      "proxy.yaml",
	"kubectl-trellis":    "",
}

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	Cmd, Args string
	Line      int
}

func parse(t *testing.T, file string) []instruction {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []instruction
	var cur strings.Builder
	start := 0
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if cur.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if cur.Len() == 0 {
			start = n
		}
		if strings.HasSuffix(line, `\`) {
			cur.WriteString(strings.TrimSuffix(line, `\`) + " ")
			continue
		}
		cur.WriteString(line)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{Cmd: strings.ToUpper(cmd), Args: strings.TrimSpace(args), Line: start})
		cur.Reset()
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// stages splits instructions at FROM.
func stages(ins []instruction) [][]instruction {
	var out [][]instruction
	for _, in := range ins {
		if in.Cmd == "FROM" {
			out = append(out, nil)
		}
		if len(out) > 0 {
			out[len(out)-1] = append(out[len(out)-1], in)
		}
	}
	return out
}

func TestDockerfiles(t *testing.T) {
	goVersion := goDirective(t)
	for name, manifest := range images {
		t.Run(name, func(t *testing.T) {
			file := filepath.Join(name, "Dockerfile")
			ins := parse(t, file)
			st := stages(ins)
			if len(st) < 2 {
				t.Fatalf("%s: %d stages; want a build stage and a runtime stage", file, len(st))
			}
			// Build args declared before the first FROM.
			args := map[string]string{}
			for _, in := range ins {
				if in.Cmd == "FROM" {
					break
				}
				if in.Cmd == "ARG" {
					k, v, _ := strings.Cut(in.Args, "=")
					args[k] = v
				}
			}
			if v := args["GO_VERSION"]; v == "" || !atLeast(v, goVersion) {
				t.Errorf("%s: ARG GO_VERSION=%q; go.mod needs go %s", file, v, goVersion)
			}
			build, final := st[0], st[len(st)-1]
			if !regexp.MustCompile(`(?i)^.*golang:\S+ AS build$`).MatchString(build[0].Args) {
				t.Errorf("%s:%d: the first stage must be FROM golang:... AS build, got %q", file, build[0].Line, build[0].Args)
			}
			var run string
			for _, in := range build {
				if in.Cmd == "RUN" && strings.Contains(in.Args, "go build") {
					run = in.Args
				}
			}
			for _, want := range []string{
				"CGO_ENABLED=0",
				"-trimpath",
				"-X github.com/trellis-mesh/trellis/internal/version.Version=${VERSION}",
				"-o /out/" + name + " ",
			} {
				if !strings.Contains(run, want) {
					t.Errorf("%s: the go build step lacks %q: %s", file, want, run)
				}
			}
			pkg := regexp.MustCompile(`\./cmd/[\w-]+$`).FindString(strings.TrimSpace(run))
			if pkg != "./cmd/"+name {
				t.Errorf("%s: builds %q, want ./cmd/%s", file, pkg, name)
			}
			if main, err := os.ReadFile(filepath.Join("..", "cmd", name, "main.go")); err != nil || !bytes.Contains(main, []byte("package main")) {
				t.Errorf("%s: ../cmd/%s/main.go is not a main package (%v)", file, name, err)
			}
			from := final[0].Args
			if !strings.HasPrefix(from, "gcr.io/distroless/static") && from != "scratch" {
				t.Errorf("%s:%d: the runtime stage is %q; want distroless/static or scratch", file, final[0].Line, from)
			}
			var user, entry string
			copied := false
			for _, in := range final {
				switch in.Cmd {
				case "USER":
					user = in.Args
				case "ENTRYPOINT":
					entry = in.Args
				case "COPY":
					copied = copied || in.Args == "--from=build /out/"+name+" /"+name
				case "RUN":
					t.Errorf("%s:%d: RUN in the runtime stage (distroless has no shell)", file, in.Line)
				}
			}
			if !copied {
				t.Errorf("%s: the runtime stage does not COPY --from=build /out/%s /%s", file, name, name)
			}
			if entry != `["/`+name+`"]` {
				t.Errorf("%s: ENTRYPOINT %s, want [\"/%s\"]", file, entry, name)
			}
			uid, gid, _ := strings.Cut(user, ":")
			n, err := strconv.Atoi(uid)
			if err != nil || n == 0 || (gid != "" && gid == "0") {
				t.Fatalf("%s: USER %q; want a numeric non-root user (the kubelet checks runAsNonRoot against it)", file, user)
			}
			if manifest != "" {
				if ru := runAsUser(t, manifest); ru != int64(n) {
					t.Errorf("%s runs as %d, manifests/base/%s as %d", file, n, manifest, ru)
				}
			}
			checkIgnore(t, name)
		})
	}
}

// runAsUser is the pod-level runAsUser of the workload in a base manifest.
func runAsUser(t *testing.T, file string) int64 {
	t.Helper()
	b, err := base.FS.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range strings.Split(string(b), "\n---\n") {
		var probe struct{ Kind string }
		if err := yaml.Unmarshal([]byte(doc), &probe); err != nil {
			t.Fatal(err)
		}
		if probe.Kind != "Deployment" && probe.Kind != "DaemonSet" {
			continue
		}
		var w appsv1.Deployment // the pod template is at the same path in both
		if err := yaml.Unmarshal([]byte(doc), &w); err != nil {
			t.Fatal(err)
		}
		if sc := w.Spec.Template.Spec.SecurityContext; sc != nil && sc.RunAsUser != nil {
			return *sc.RunAsUser
		}
	}
	t.Fatalf("manifests/base/%s: no workload with a runAsUser", file)
	return 0
}

// checkIgnore: the Dockerfile's .dockerignore keeps out nothing the
// binary's packages compile or embed.
func checkIgnore(t *testing.T, name string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(name, "Dockerfile.dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			patterns = append(patterns, l)
		}
	}
	// Docker's rules, for the patterns used here: a pattern matches a path
	// or any of its parent directories; "**/" lets it start at any depth.
	ignored := func(rel string) string {
		parts := strings.Split(rel, "/")
		for _, p := range patterns {
			glob, anyDepth := strings.CutPrefix(p, "**/")
			for i := range parts {
				if i > 0 && !anyDepth {
					break
				}
				for j := i + 1; j <= len(parts); j++ {
					if ok, _ := path.Match(glob, strings.Join(parts[i:j], "/")); ok {
						return p
					}
				}
			}
		}
		return ""
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "list", "-e", "-deps", "-json=Dir,GoFiles,EmbedFiles,Standard", "./cmd/"+name)
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p struct {
			Dir                 string
			GoFiles, EmbedFiles []string
			Standard            bool
		}
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		rel, err := filepath.Rel(root, p.Dir)
		if p.Standard || err != nil || strings.HasPrefix(rel, "..") {
			continue
		}
		for _, f := range append(p.GoFiles, p.EmbedFiles...) {
			if pat := ignored(filepath.ToSlash(filepath.Join(rel, f))); pat != "" {
				t.Errorf("%s/Dockerfile.dockerignore: %q leaves out %s, which ./cmd/%s needs", name, pat, filepath.Join(rel, f), name)
			}
		}
	}
}

// goDirective is go.mod's go version.
func goDirective(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(b)
	if m == nil {
		t.Fatal("go.mod has no go directive")
	}
	return string(m[1])
}

// atLeast compares dotted versions: atLeast("1.26.8", "1.26.0").
func atLeast(v, min string) bool {
	a, b := strings.Split(v, "."), strings.Split(min, ".")
	for i := 0; i < len(b); i++ {
		x, y := 0, 0
		if i < len(a) {
			x, _ = strconv.Atoi(a[i])
		}
		y, _ = strconv.Atoi(b[i])
		if x != y {
			return x > y
		}
	}
	return true
}
