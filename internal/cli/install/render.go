package install

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/controller/settings"
	"github.com/trellis-mesh/trellis/internal/kube"
	"github.com/trellis-mesh/trellis/manifests/base"
	"github.com/trellis-mesh/trellis/manifests/crds"
)

// Names and labels the installer relies on.
const (
	// FieldManager owns the fields install applies.
	FieldManager = "kubectl-trellis"
	// PartOfLabel marks every object Trellis ships (and the shadow
	// Services the controller writes); uninstall removes only such objects.
	PartOfLabel = "app.kubernetes.io/part-of"
	PartOfValue = "trellis"
	// MeshNamespace is the only namespace Trellis installs into: the SMI
	// CRDs' conversion webhook names it.
	MeshNamespace = crds.ConversionNamespace

	settingsConfigMap = "trellis-controller"
	settingsKey       = "settings.yaml"
	controllerName    = "trellis-controller"
	proxyName         = "trellis-proxy"
	leaseName         = "trellis-controller"
)

// renderOptions change the shipped manifests.
type renderOptions struct {
	// Registry replaces the images' registry path ("ghcr.io/trellis-mesh").
	Registry string
	// Tag replaces the images' tag.
	Tag string
	// ACL, when set, sets the settings' acl.
	ACL *bool
	// Settings, when set, replaces the shipped settings.yaml (an upgrade
	// keeps the cluster's).
	Settings string
	// NoCRDs leaves the CRDs out.
	NoCRDs bool
}

// kindOrder is the dependency order of apply; uninstall deletes in
// reverse. Kinds not listed go last.
var kindOrder = []string{
	"CustomResourceDefinition", "Namespace", "ServiceAccount",
	"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
	"ConfigMap", "Secret", "Service", "PodDisruptionBudget",
	"Deployment", "DaemonSet",
}

func kindRank(kind string) int {
	for i, k := range kindOrder {
		if k == kind {
			return i
		}
	}
	return len(kindOrder)
}

// sortForApply orders objects by kind, keeping the manifests' order within
// a kind.
func sortForApply(objs []*unstructured.Unstructured) {
	sort.SliceStable(objs, func(i, j int) bool { return kindRank(objs[i].GetKind()) < kindRank(objs[j].GetKind()) })
}

// baseFiles is the kustomization's resources list: the files `kubectl
// apply -k manifests/base` applies, in its order.
func baseFiles() ([]string, error) {
	b, err := base.FS.ReadFile("kustomization.yaml")
	if err != nil {
		return nil, err
	}
	var k struct {
		Resources []string `json:"resources"`
	}
	if err := yaml.Unmarshal(b, &k); err != nil {
		return nil, fmt.Errorf("manifests/base/kustomization.yaml: %w", err)
	}
	return k.Resources, nil
}

// shippedSettings is settings.yaml as the manifests ship it.
func shippedSettings() (string, error) {
	objs, err := decodeFile(base.FS.ReadFile, "manifests/base/", "configmap.yaml")
	if err != nil {
		return "", err
	}
	for _, u := range objs {
		if u.GetKind() == "ConfigMap" && u.GetName() == settingsConfigMap {
			s, _, _ := unstructured.NestedString(u.Object, "data", settingsKey)
			return s, nil
		}
	}
	return "", fmt.Errorf("manifests/base/configmap.yaml: no ConfigMap %s", settingsConfigMap)
}

func decodeFile(read func(string) ([]byte, error), dir, name string) ([]*unstructured.Unstructured, error) {
	b, err := read(name)
	if err != nil {
		return nil, err
	}
	objs, err := kube.Decode(b)
	if err != nil {
		return nil, fmt.Errorf("%s%s: %w", dir, name, err)
	}
	return objs, nil
}

// render returns the objects install applies, in apply order.
func render(o renderOptions) ([]*unstructured.Unstructured, error) {
	var out []*unstructured.Unstructured
	if !o.NoCRDs {
		for _, f := range crds.Files() {
			objs, err := decodeFile(crds.FS.ReadFile, "manifests/crds/", f)
			if err != nil {
				return nil, err
			}
			out = append(out, objs...)
		}
	}
	files, err := baseFiles()
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		objs, err := decodeFile(base.FS.ReadFile, "manifests/base/", f)
		if err != nil {
			return nil, err
		}
		out = append(out, objs...)
	}
	settingsText := ""
	for _, u := range out {
		switch u.GetKind() {
		case "Deployment", "DaemonSet":
			if err := setImages(u, o.Registry, o.Tag); err != nil {
				return nil, err
			}
		case "ConfigMap":
			if u.GetName() != settingsConfigMap || u.GetNamespace() != MeshNamespace {
				continue
			}
			text, _, _ := unstructured.NestedString(u.Object, "data", settingsKey)
			if o.Settings != "" {
				text = o.Settings
			}
			if o.ACL != nil {
				if text, err = setACL(text, *o.ACL); err != nil {
					return nil, err
				}
			}
			if _, err := settings.Parse([]byte(text)); err != nil {
				return nil, fmt.Errorf("ConfigMap %s/%s data.%s: %w", MeshNamespace, settingsConfigMap, settingsKey, err)
			}
			if err := unstructured.SetNestedField(u.Object, text, "data", settingsKey); err != nil {
				return nil, err
			}
			settingsText = text
		}
	}
	// The controller reads its settings at start: a settings change (install
	// --acl on an existing install) must roll its pods, so the pod template
	// carries a hash of them.
	sum := sha256.Sum256([]byte(settingsText))
	for _, u := range out {
		if u.GetKind() == "Deployment" && u.GetName() == controllerName {
			if err := unstructured.SetNestedField(u.Object, hex.EncodeToString(sum[:8]), "spec", "template", "metadata", "annotations", SettingsHashAnnotation); err != nil {
				return nil, err
			}
		}
	}
	sortForApply(out)
	return out, nil
}

// SettingsHashAnnotation on the controller's pod template is a hash of its
// settings, so that changing them rolls the controller.
const SettingsHashAnnotation = "trellis.io/settings-hash"

// setImages rewrites every container image REGISTRY/NAME:TAG of a
// workload, keeping NAME.
func setImages(u *unstructured.Unstructured, registry, tag string) error {
	if registry == "" && tag == "" {
		return nil
	}
	containers, _, err := unstructured.NestedSlice(u.Object, "spec", "template", "spec", "containers")
	if err != nil {
		return fmt.Errorf("%s %s: %w", u.GetKind(), kube.Name(u), err)
	}
	for i, c := range containers {
		cm, ok := c.(map[string]any)
		if !ok {
			continue
		}
		img, _ := cm["image"].(string)
		reg, name, t := splitImage(img)
		if registry != "" {
			reg = registry
		}
		if tag != "" {
			t = tag
		}
		cm["image"] = reg + "/" + name + ":" + t
		containers[i] = cm
	}
	return unstructured.SetNestedSlice(u.Object, containers, "spec", "template", "spec", "containers")
}

// splitImage splits "ghcr.io/trellis-mesh/trellis-proxy:dev".
func splitImage(ref string) (registry, name, tag string) {
	if i := strings.LastIndexByte(ref, ':'); i > strings.LastIndexByte(ref, '/') {
		ref, tag = ref[:i], ref[i+1:]
	}
	if i := strings.LastIndexByte(ref, '/'); i >= 0 {
		return ref[:i], ref[i+1:], tag
	}
	return "", ref, tag
}

// images lists the distinct images of the rendered workloads.
func images(objs []*unstructured.Unstructured) []string {
	seen := map[string]bool{}
	var out []string
	for _, u := range objs {
		containers, _, _ := unstructured.NestedSlice(u.Object, "spec", "template", "spec", "containers")
		for _, c := range containers {
			if cm, ok := c.(map[string]any); ok {
				if img, _ := cm["image"].(string); img != "" && !seen[img] {
					seen[img] = true
					out = append(out, img)
				}
			}
		}
	}
	return out
}

var aclLine = regexp.MustCompile(`(?m)^(acl:[ \t]*)(true|false)([ \t]*)`)

// setACL sets acl in a settings document, keeping its comments and layout
// when it has a top-level "acl: true|false" line.
func setACL(text string, acl bool) (string, error) {
	v := fmt.Sprint(acl)
	var out string
	if m := aclLine.FindStringSubmatchIndex(text); m != nil {
		old, pad := text[m[4]:m[5]], text[m[6]:m[7]]
		if pad != "" && m[7] < len(text) && text[m[7]] != '\n' {
			// Keep a trailing comment where it was.
			n := len(old) + len(pad) - len(v)
			pad = strings.Repeat(" ", max(n, 1))
		} else {
			pad = ""
		}
		out = text[:m[4]] + v + pad + text[m[7]:]
	} else {
		s, err := settings.Parse([]byte(text))
		if err != nil {
			return "", fmt.Errorf("settings: %w", err)
		}
		s.ACL = acl
		b, err := yaml.Marshal(s)
		if err != nil {
			return "", err
		}
		out = string(b)
	}
	s, err := settings.Parse([]byte(out))
	if err != nil {
		return "", fmt.Errorf("setting acl: %v in the settings: %w; edit ConfigMap %s/%s by hand", acl, err, MeshNamespace, settingsConfigMap)
	}
	if s.ACL != acl {
		return "", fmt.Errorf("setting acl: %v in the settings did not take; edit ConfigMap %s/%s by hand", acl, MeshNamespace, settingsConfigMap)
	}
	return out, nil
}
