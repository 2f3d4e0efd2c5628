package krew

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func sums() map[string]string {
	m := map[string]string{}
	for i, p := range Platforms {
		s := sha256.Sum256([]byte{byte(i)})
		m[p.Key()] = hex.EncodeToString(s[:])
	}
	return m
}

// TestTemplateIsYAML: the checked-in manifest parses as it stands (the
// placeholders sit inside quoted strings).
func TestTemplateIsYAML(t *testing.T) {
	if _, err := Parse([]byte(Template)); err != nil {
		t.Fatal(err)
	}
}

// TestRender: the rendered manifest is a Krew Plugin named trellis whose
// every platform installs the kubectl-trellis binary from its own archive.
func TestRender(t *testing.T) {
	s := sums()
	b, err := Render("v1.2.3", s)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if p.APIVersion != "krew.googlecontainertools.github.com/v1alpha2" || p.Kind != "Plugin" {
		t.Errorf("%s %s is not a Krew v1alpha2 Plugin", p.APIVersion, p.Kind)
	}
	// kubectl runs kubectl-NAME for `kubectl NAME`: the plugin name and
	// the binary must agree.
	if p.Metadata.Name != "trellis" || "kubectl-"+p.Metadata.Name != Binary {
		t.Errorf("plugin name %q does not match the binary %s", p.Metadata.Name, Binary)
	}
	if p.Spec.Version != "v1.2.3" || p.Spec.Homepage == "" || p.Spec.Description == "" {
		t.Errorf("spec %+v", p.Spec)
	}
	if n := len(p.Spec.ShortDescription); n == 0 || n > 50 {
		t.Errorf("shortDescription is %d characters; krew-index wants at most 50", n)
	}
	if len(p.Spec.Platforms) != len(Platforms) {
		t.Fatalf("%d platforms, want %d", len(p.Spec.Platforms), len(Platforms))
	}
	for i, pl := range p.Spec.Platforms {
		want := Platforms[i]
		if l := pl.Selector.MatchLabels; len(l) != 2 || l["os"] != want.OS || l["arch"] != want.Arch {
			t.Errorf("platform %d selects %v, want os %s arch %s", i, l, want.OS, want.Arch)
		}
		if pl.URI != "https://github.com/trellis-mesh/trellis/releases/download/v1.2.3/"+Archive("v1.2.3", want) {
			t.Errorf("%s: uri %s", want.Key(), pl.URI)
		}
		if pl.SHA256 != s[want.Key()] {
			t.Errorf("%s: sha256 %s, want %s", want.Key(), pl.SHA256, s[want.Key()])
		}
		if pl.Bin != Binary {
			t.Errorf("%s: bin %q, want %s", want.Key(), pl.Bin, Binary)
		}
		from := map[string]string{}
		for _, f := range pl.Files {
			from[f.From] = f.To
		}
		if from[Binary] != "." || from["LICENSE"] != "." || len(from) != 2 {
			t.Errorf("%s: files %v; want %s and LICENSE at the plugin's root", want.Key(), pl.Files, Binary)
		}
	}
}

func TestRenderRejects(t *testing.T) {
	short := sums()
	delete(short, "darwin_arm64")
	upper := sums()
	upper["linux_amd64"] = strings.ToUpper(upper["linux_amd64"])
	for name, tc := range map[string]struct {
		version string
		sums    map[string]string
		want    string
	}{
		"no v":          {"1.2.3", sums(), "leading v"},
		"not semver":    {"v1.2", sums(), "semantic version"},
		"missing sum":   {"v1.2.3", short, "darwin_arm64"},
		"uppercase sum": {"v1.2.3", upper, "linux_amd64"},
	} {
		if _, err := Render(tc.version, tc.sums); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one mentioning %q", name, err, tc.want)
		}
	}
}

// TestPack: the archive holds the executable binary and the license at its
// root (what the manifest's files move), and its sum is the one returned.
func TestPack(t *testing.T) {
	var b bytes.Buffer
	sum, err := Pack(&b, []byte("\x7fELF binary"), []byte("license text"))
	if err != nil {
		t.Fatal(err)
	}
	got := sha256.Sum256(b.Bytes())
	if hex.EncodeToString(got[:]) != sum {
		t.Errorf("returned sum %s is not the archive's", sum)
	}
	gz, err := gzip.NewReader(&b)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	files := map[string]*tar.Header{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = h
	}
	if h := files[Binary]; h == nil || h.Mode&0o111 == 0 {
		t.Errorf("no executable %s in the archive: %v", Binary, files)
	}
	if files["LICENSE"] == nil || len(files) != 2 {
		t.Errorf("archive holds %v", files)
	}
	// Reproducible: the same input gives the same archive.
	var again bytes.Buffer
	if sum2, _ := Pack(&again, []byte("\x7fELF binary"), []byte("license text")); sum2 != sum {
		t.Error("packing twice gave different archives")
	}
}

func TestReadLicenseSaysWhy(t *testing.T) {
	_, err := ReadLicense(filepath.Join(t.TempDir(), "LICENSE"))
	if err == nil || !strings.Contains(err.Error(), "krew-index requires a LICENSE") || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("error %v", err)
	}
}
