package topology

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/trellis-mesh/trellis/node-proxy/config"
	"github.com/trellis-mesh/trellis/smi"
)

// MeshPlugin objects (trellis.io/v1alpha1) name a yaegi middleware plugin,
// the ConfigMap holding its Go source, its config and the Services using
// it. A ConfigMap is read only when it carries PluginSourceLabel=true.
const (
	PluginGroup       = "trellis.io"
	PluginVersion     = "v1alpha1"
	PluginResource    = "meshplugins"
	PluginKind        = smi.Kind("MeshPlugin")
	PluginSourceLabel = "trellis.io/plugin-source"
	// pathSep stands for "/" in ConfigMap keys, which cannot hold one.
	pathSep = "__"
)

type pluginUse struct {
	name  string
	order int64
}

// plugins decodes the MeshPlugins, attaches them to the meshed Services
// they name and returns the config entries of those in use, sorted by
// name. A bad MeshPlugin is reported and left out; its Services keep
// serving without it (the object never reached a proxy, so there is no
// failure policy to apply yet).
func (b *builder) plugins(objs []*unstructured.Unstructured, sources []*corev1.ConfigMap) []config.Plugin {
	cms := map[nsName]*corev1.ConfigMap{}
	for _, cm := range sources {
		cms[nsName{cm.Namespace, cm.Name}] = cm
	}
	uses := map[*Service][]pluginUse{}
	var out []config.Plugin
	sorted := append([]*unstructured.Unstructured(nil), objs...)
	sort.Slice(sorted, func(i, j int) bool {
		if sorted[i].GetNamespace() != sorted[j].GetNamespace() {
			return sorted[i].GetNamespace() < sorted[j].GetNamespace()
		}
		return sorted[i].GetName() < sorted[j].GetName()
	})
	for _, u := range sorted {
		ns, name := u.GetNamespace(), u.GetName()
		bad := func(field, fix, format string, args ...any) {
			b.problem(smi.Error, PluginKind, ns, name, field, fix, format, args...)
		}
		p := config.Plugin{Name: ns + "/" + name}
		var ok bool
		if p.Module, ok = str(u, "spec", "module"); !ok || p.Module == "" {
			bad("spec.module", "set spec.module to the plugin's Go import path", "must be set")
			continue
		}
		cmName, _ := str(u, "spec", "source", "configMap")
		if cmName == "" {
			bad("spec.source.configMap", "name the ConfigMap holding the plugin's .go files", "must be set")
			continue
		}
		cm := cms[nsName{ns, cmName}]
		if cm == nil {
			bad("spec.source.configMap", "create it in namespace "+ns+" with the label "+PluginSourceLabel+"=true (the controller only reads labelled ConfigMaps)",
				"ConfigMap %q not found (or not labelled %s=true)", cmName, PluginSourceLabel)
			continue
		}
		p.Files = map[string]string{}
		for k, v := range cm.Data {
			if strings.HasSuffix(k, ".go") && !strings.HasSuffix(k, "_test.go") {
				p.Files[strings.ReplaceAll(k, pathSep, "/")] = v
			}
		}
		if len(p.Files) == 0 {
			bad("spec.source.configMap", "put the plugin's .go files in the ConfigMap, one key per file ('/' in a path written '__')",
				"ConfigMap %q holds no .go file", cmName)
			continue
		}
		if c, found, _ := unstructured.NestedFieldNoCopy(u.Object, "spec", "config"); found && c != nil {
			raw, err := json.Marshal(c)
			if err != nil {
				bad("spec.config", "make spec.config a plain object", "cannot be encoded: %v", err)
				continue
			}
			p.Config = raw
		}
		stage, _ := str(u, "spec", "stage")
		p.Stage = config.PluginStage(stage)
		policy, _ := str(u, "spec", "failurePolicy")
		p.FailurePolicy = config.PluginFailurePolicy(policy)
		switch p.Stage {
		case "", config.StageAfterAccess, config.StageBeforeAccess:
		default:
			bad("spec.stage", "use afterAccess or beforeAccess", "%q is not a stage", stage)
			continue
		}
		switch p.FailurePolicy {
		case "", config.FailClosed, config.FailOpen:
		default:
			bad("spec.failurePolicy", "use fail or ignore", "%q is not a failure policy", policy)
			continue
		}
		order, _, _ := unstructured.NestedInt64(u.Object, "spec", "order")
		p.Version = pluginVersion(&p)
		services, _, _ := unstructured.NestedStringSlice(u.Object, "spec", "services")
		used := false
		for i, svc := range services {
			s := b.meshed[nsName{ns, svc}]
			if s == nil {
				b.problem(smi.Warning, PluginKind, ns, name, "spec.services["+strconv.Itoa(i)+"]", "opt the Service into the mesh, or remove it from the list",
					"Service %s/%s is not meshed; the plugin does not apply to it", ns, svc)
				continue
			}
			uses[s] = append(uses[s], pluginUse{name: p.Name, order: order})
			used = true
		}
		if used {
			out = append(out, p)
		}
	}
	for s, us := range uses {
		sort.Slice(us, func(i, j int) bool {
			if us[i].order != us[j].order {
				return us[i].order < us[j].order
			}
			return us[i].name < us[j].name
		})
		for _, u := range us {
			s.Plugins = append(s.Plugins, u.name)
		}
	}
	return out
}

// pluginVersion is a content hash of everything a proxy compiles and
// configures a plugin from: a new version means a new compile.
func pluginVersion(p *config.Plugin) string {
	h := sha256.New()
	w := func(s string) {
		h.Write([]byte(strconv.Itoa(len(s))))
		h.Write([]byte{':'})
		h.Write([]byte(s))
	}
	w(p.Module)
	names := make([]string, 0, len(p.Files))
	for n := range p.Files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		w(n)
		w(p.Files[n])
	}
	w(string(p.Config))
	w(string(p.Stage))
	w(string(p.FailurePolicy))
	return "sha256:" + hex.EncodeToString(h.Sum(nil))[:16]
}

func str(u *unstructured.Unstructured, fields ...string) (string, bool) {
	v, found, err := unstructured.NestedString(u.Object, fields...)
	return v, found && err == nil
}
