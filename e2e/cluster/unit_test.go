package cluster

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestImageName(t *testing.T) {
	for ref, want := range map[string]string{
		"whoami":        "whoami",
		"whoami:latest": "whoami",
		"ghcr.io/trellis-mesh/trellis-proxy:v1.2": "trellis-proxy",
		"localhost:5000/x/coredns@sha256:abc":     "coredns",
		"registry.k8s.io/coredns/coredns:v1.15.0": "coredns",
	} {
		if got := ImageName(ref); got != want {
			t.Errorf("ImageName(%q) = %q, want %q", ref, got, want)
		}
	}
	im := Images{"whoami": "/bin/whoami"}
	if _, err := im.Resolve("nginx:1.27"); err == nil || !strings.Contains(err.Error(), `image "nginx:1.27" is not in the local image table (known: whoami)`) {
		t.Errorf("unknown image error = %v", err)
	}
}

func TestExpandVars(t *testing.T) {
	vars := map[string]string{"A": "1", "POD": "web"}
	for in, want := range map[string]string{
		"$(A)":          "1",
		"x-$(POD)-$(A)": "x-web-1",
		"$(MISSING)":    "$(MISSING)",
		"$$(A)":         "$(A)",
		"$":             "$",
		"$(unclosed":    "$(unclosed",
	} {
		if got := expandVars(in, vars); got != want {
			t.Errorf("expandVars(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCommandLine(t *testing.T) {
	c := &container{binary: "/cache/own/whoami"}
	env := []string{"PORT=9090"}
	for _, tc := range []struct {
		cmd, args, want []string
	}{
		{nil, []string{"--http", ":$(PORT)"}, []string{"/cache/own/whoami", "--http", ":9090"}},
		{[]string{"/whoami"}, []string{"-x"}, []string{"/cache/own/whoami", "-x"}},
		{[]string{"/bin/sh", "-c"}, []string{"echo"}, []string{"/bin/sh", "-c", "echo"}},
	} {
		c.spec = corev1.Container{Command: tc.cmd, Args: tc.args}
		if got := c.commandLine(env); strings.Join(got, " ") != strings.Join(tc.want, " ") {
			t.Errorf("command %v args %v: got %v, want %v", tc.cmd, tc.args, got, tc.want)
		}
	}
}

// TestAtomicWrite: contents appear behind ..data, updates replace them in
// one step, removed keys disappear, and an unchanged write is a no-op.
func TestAtomicWrite(t *testing.T) {
	dir := t.TempDir()
	if err := atomicWrite(dir, map[string][]byte{"Corefile": []byte("v1"), "other": []byte("o")}); err != nil {
		t.Fatal(err)
	}
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return "<" + err.Error() + ">"
		}
		return string(b)
	}
	if read("Corefile") != "v1" || read("other") != "o" {
		t.Fatalf("after first write: %q %q", read("Corefile"), read("other"))
	}
	first, _ := os.Readlink(filepath.Join(dir, "..data"))
	if err := atomicWrite(dir, map[string][]byte{"Corefile": []byte("v1"), "other": []byte("o")}); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.Readlink(filepath.Join(dir, "..data")); again != first {
		t.Errorf("unchanged write swapped ..data from %s to %s", first, again)
	}
	if err := atomicWrite(dir, map[string][]byte{"Corefile": []byte("v2")}); err != nil {
		t.Fatal(err)
	}
	if read("Corefile") != "v2" {
		t.Errorf("Corefile = %q after update", read("Corefile"))
	}
	if _, err := os.Lstat(filepath.Join(dir, "other")); !os.IsNotExist(err) {
		t.Errorf("removed key still present: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, first)); !os.IsNotExist(err) {
		t.Errorf("old data folder %s kept", first)
	}
}
