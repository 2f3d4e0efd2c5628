package install

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/trellis-mesh/trellis/controller/settings"
	"github.com/trellis-mesh/trellis/internal/cli/clitest"
	"github.com/trellis-mesh/trellis/internal/kube"
)

// TestDryRun: --dry-run prints every object in apply order, with the
// flags applied, and needs no cluster (no kubeconfig is given).
func TestDryRun(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		acl  bool
		img  string
	}{
		{"dry-run-yaml", []string{"install", "--dry-run"}, false, "ghcr.io/trellis-mesh/trellis-controller:dev"},
		{"dry-run-json", []string{"install", "--dry-run", "-o", "json"}, false, "ghcr.io/trellis-mesh/trellis-controller:dev"},
		{"dry-run-flags", []string{"install", "--dry-run", "-o", "yaml", "--acl", "--image-registry", "registry.local:5000/mirror", "--image-tag", "v1.2.3", "--crds=false"}, true, "registry.local:5000/mirror/trellis-controller:v1.2.3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, "", "", nil, append([]string{"--kubeconfig", "/nonexistent"}, tc.args...)...)
			if r.Code != 0 || r.Err != "" {
				t.Fatalf("exit %d: %s", r.Code, r.Err)
			}
			clitest.Golden(t, tc.name, r.Out)
			var objs []map[string]any
			if strings.Contains(tc.name, "json") {
				var list struct {
					Kind  string           `json:"kind"`
					Items []map[string]any `json:"items"`
				}
				if err := json.Unmarshal([]byte(r.Out), &list); err != nil || list.Kind != "List" {
					t.Fatalf("not a v1 List: %v", err)
				}
				objs = list.Items
			} else {
				us, err := kube.Decode([]byte(r.Out))
				if err != nil {
					t.Fatal(err)
				}
				for _, u := range us {
					objs = append(objs, u.Object)
				}
			}
			want, err := render(renderOptions{NoCRDs: strings.Contains(strings.Join(tc.args, " "), "--crds=false")})
			if err != nil {
				t.Fatal(err)
			}
			if len(objs) != len(want) {
				t.Fatalf("%d objects printed, want %d", len(objs), len(want))
			}
			last, sawCRD, sawImage := -1, false, false
			for _, o := range objs {
				kind := o["kind"].(string)
				if r := kindRank(kind); r < last {
					t.Errorf("%s after a kind that depends on it", kind)
				} else {
					last = r
				}
				meta := o["metadata"].(map[string]any)
				labels, _ := meta["labels"].(map[string]any)
				if labels[PartOfLabel] != PartOfValue {
					t.Errorf("%s %s lacks %s", kind, meta["name"], PartOfLabel)
				}
				sawCRD = sawCRD || kind == "CustomResourceDefinition"
				if kind == "ConfigMap" && meta["name"] == settingsConfigMap {
					s, err := settings.Parse([]byte(o["data"].(map[string]any)[settingsKey].(string)))
					if err != nil || s.ACL != tc.acl {
						t.Errorf("settings acl = %v (%v), want %v", s.ACL, err, tc.acl)
					}
				}
				sawImage = sawImage || strings.Contains(r.Out, tc.img)
			}
			if sawCRD == strings.Contains(strings.Join(tc.args, " "), "--crds=false") {
				t.Errorf("CRDs printed: %v", sawCRD)
			}
			if !sawImage {
				t.Errorf("image %s not set", tc.img)
			}
		})
	}
}

// TestBadFlags: every wrong flag gets one line naming it and exit 2, before
// any cluster is contacted.
func TestBadFlags(t *testing.T) {
	var all strings.Builder
	for _, args := range [][]string{
		{"install", "--image-tag", "v1 2"},
		{"install", "--image-tag", ":latest"},
		{"install", "--image-registry", "https://ghcr.io/x"},
		{"install", "--image-registry", "ghcr.io/x/"},
		{"install", "--wait", "-1s"},
		{"install", "--wait", "soon"},
		{"install", "-o", "json"},
		{"install", "--dry-run", "-o", "table"},
		{"install", "--mesh-namespace", "mesh"},
		{"install", "extra"},
		{"install", "--unknown"},
		{"uninstall", "--wait", "-3s"},
		{"uninstall", "--mesh-namespace", "mesh"},
		{"uninstall", "now"},
	} {
		// A kubeconfig that points nowhere: a flag check that reached the
		// cluster would fail differently (exit 4).
		r := run(t, "/nonexistent/kubeconfig", "", nil, args...)
		if r.Code != 2 || strings.Count(r.Err, "\n") != 1 || r.Out != "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 2 and one line", args, r.Code, r.Out, r.Err)
		}
		all.WriteString(transcript(args, r))
	}
	clitest.Golden(t, "bad-flags", all.String())
}

func TestSetACL(t *testing.T) {
	shipped, err := shippedSettings()
	if err != nil {
		t.Fatal(err)
	}
	on, err := setACL(shipped, true)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(on, "acl: true                        # true: deny") {
		t.Errorf("the comment moved:\n%s", on)
	}
	off, err := setACL(on, false)
	if err != nil || off != shipped {
		t.Errorf("true then false does not give back the shipped settings (%v):\n%s", err, off)
	}
	// No acl line: the settings are rewritten whole.
	bare, err := setACL("meshDomain: corp\n", true)
	if err != nil {
		t.Fatal(err)
	}
	s, err := settings.Parse([]byte(bare))
	if err != nil || !s.ACL || s.MeshDomain != "corp" {
		t.Errorf("rewritten settings %+v (%v)", s, err)
	}
	if _, err := setACL("acl: maybe\n", true); err == nil {
		t.Error("settings that do not parse were accepted")
	}
}

func TestSplitImage(t *testing.T) {
	for in, want := range map[string][3]string{
		"ghcr.io/trellis-mesh/trellis-proxy:dev":  {"ghcr.io/trellis-mesh", "trellis-proxy", "dev"},
		"localhost:5000/trellis-proxy":            {"localhost:5000", "trellis-proxy", ""},
		"localhost:5000/a/b/trellis-proxy:v1.0.0": {"localhost:5000/a/b", "trellis-proxy", "v1.0.0"},
		"trellis-proxy":                           {"", "trellis-proxy", ""},
	} {
		r, n, tag := splitImage(in)
		if [3]string{r, n, tag} != want {
			t.Errorf("splitImage(%q) = %q %q %q, want %v", in, r, n, tag, want)
		}
	}
}
