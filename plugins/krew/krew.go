// Package krew renders the Krew plugin manifest of kubectl-trellis
// (trellis.yaml, a template) and packs the release archives it points to.
//
// Stage: release tooling. Imports: the standard library and sigs.k8s.io/yaml.
package krew

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"regexp"
	"text/template"
	"time"

	"sigs.k8s.io/yaml"
)

// Template is trellis.yaml.
//
//go:embed trellis.yaml
var Template string

// Binary is the plugin's executable; kubectl finds it on PATH by this name
// and runs it for `kubectl trellis`.
const Binary = "kubectl-trellis"

// Platform is one os/arch the plugin is released for.
type Platform struct{ OS, Arch string }

// Key is "linux_amd64", as in archive names and the template.
func (p Platform) Key() string { return p.OS + "_" + p.Arch }

// Platforms are the released platforms, in the manifest's order.
var Platforms = []Platform{{"linux", "amd64"}, {"linux", "arm64"}, {"darwin", "amd64"}, {"darwin", "arm64"}}

// Archive is the release asset name of a platform's archive.
func Archive(version string, p Platform) string {
	return fmt.Sprintf("%s_%s_%s.tar.gz", Binary, version, p.Key())
}

var (
	semver = regexp.MustCompile(`^v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?$`)
	sha    = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// Render fills the template with version and each platform's archive
// sha256 (keyed by Platform.Key).
func Render(version string, sums map[string]string) ([]byte, error) {
	if !semver.MatchString(version) {
		return nil, fmt.Errorf("version %q: krew wants a semantic version with a leading v, such as v0.1.0", version)
	}
	for _, p := range Platforms {
		if !sha.MatchString(sums[p.Key()]) {
			return nil, fmt.Errorf("sha256 of %s: %q is not 64 lowercase hex digits", Archive(version, p), sums[p.Key()])
		}
	}
	tmpl, err := template.New("trellis.yaml").Option("missingkey=error").Parse(Template)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := tmpl.Execute(&b, struct {
		Version string
		SHA256  map[string]string
	}{version, sums}); err != nil {
		return nil, err
	}
	if _, err := Parse(b.Bytes()); err != nil {
		return nil, fmt.Errorf("rendered manifest: %w", err)
	}
	return b.Bytes(), nil
}

// Plugin is the part of Krew's v1alpha2 Plugin type the manifest uses.
type Plugin struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Version          string `json:"version"`
		Homepage         string `json:"homepage"`
		ShortDescription string `json:"shortDescription"`
		Description      string `json:"description"`
		Caveats          string `json:"caveats"`
		Platforms        []struct {
			Selector struct {
				MatchLabels map[string]string `json:"matchLabels"`
			} `json:"selector"`
			URI    string `json:"uri"`
			SHA256 string `json:"sha256"`
			Files  []struct {
				From string `json:"from"`
				To   string `json:"to"`
			} `json:"files"`
			Bin string `json:"bin"`
		} `json:"platforms"`
	} `json:"spec"`
}

// Parse decodes a manifest strictly (an unknown field is an error).
func Parse(b []byte) (*Plugin, error) {
	p := &Plugin{}
	if err := yaml.UnmarshalStrict(b, p); err != nil {
		return nil, err
	}
	return p, nil
}

// Pack writes a platform archive holding the binary (mode 0755) and the
// license (0644) at its root, and returns its sha256.
func Pack(w io.Writer, binary, license []byte) (string, error) {
	h := sha256.New()
	gz := gzip.NewWriter(io.MultiWriter(w, h))
	tw := tar.NewWriter(gz)
	// A fixed time keeps archives reproducible.
	mtime := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, f := range []struct {
		name string
		mode int64
		body []byte
	}{{Binary, 0o755, binary}, {"LICENSE", 0o644, license}} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.body)), ModTime: mtime, Typeflag: tar.TypeReg}); err != nil {
			return "", err
		}
		if _, err := tw.Write(f.body); err != nil {
			return "", err
		}
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	if err := gz.Close(); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// ReadLicense reads the repository's license, which krew-index requires in
// every archive.
func ReadLicense(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: krew-index requires a LICENSE in each archive; add one at the repository root", err)
	}
	return b, nil
}
