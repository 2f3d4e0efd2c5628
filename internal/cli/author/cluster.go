package author

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/trellis-mesh/trellis/internal/cli/clienv"
	"github.com/trellis-mesh/trellis/smi"
)

// session is one command's connection to the cluster and what it learned
// about the SMI versions served there.
type session struct {
	env    *clienv.Env
	kube   kubernetes.Interface
	dyn    dynamic.Interface
	served smi.Served
}

func connect(env *clienv.Env) (*session, error) {
	kube, err := env.Kube()
	if err != nil {
		return nil, err
	}
	dyn, err := env.Dynamic()
	if err != nil {
		return nil, err
	}
	return &session{env: env, kube: kube, dyn: dyn}, nil
}

// discover asks the apiserver which SMI versions it serves.
func (s *session) discover() error {
	cfg, err := s.env.RESTConfig()
	if err != nil {
		return err
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return err
	}
	s.served, err = smi.Discover(dc)
	if err != nil {
		return clienv.APIError("discover the SMI API versions", err)
	}
	return nil
}

// kindVersion is one SMI kind at the version this session writes it in.
type kindVersion struct {
	info    smi.KindInfo
	version string
}

func (k kindVersion) gvr() schema.GroupVersionResource { return k.info.GVR(k.version) }
func (k kindVersion) apiVersion() string               { return k.info.Group + "/" + k.version }

// resourceName is how kubectl names the resource: trafficsplits.split.smi-spec.io.
func (k kindVersion) resourceName() string { return k.info.Resource + "." + k.info.Group }

// ref is kubectl's TYPE/NAME form: trafficsplit.split.smi-spec.io/web.
func (k kindVersion) ref(name string) string {
	return strings.ToLower(string(k.info.Kind)) + "." + k.info.Group + "/" + name
}

// version returns the newest served version of kind. A kind the cluster
// does not serve means the SMI CRDs are not installed.
func (s *session) version(kind smi.Kind) (kindVersion, error) {
	ki, _ := smi.Info(kind)
	v, ok := s.served.Newest(kind)
	if !ok {
		return kindVersion{}, clienv.Fail(clienv.ExitConfig, fmt.Errorf("this cluster does not serve %s (API group %s)", kind, ki.Group),
			"install Trellis and its SMI CRDs first: kubectl trellis install")
	}
	return kindVersion{info: ki, version: v}, nil
}

// stashLoss describes, per stash key of smi.ConversionAnnotation, what a
// flag asked for that an older SMI version cannot hold.
type stashLoss map[string]string

// materialize turns an object built in the newest SMI version into the
// version the cluster serves (kv), using the same conversion the CRD
// webhook uses. If that version cannot express something the object holds,
// it fails naming the flag (from loss) instead of writing less than asked.
// The result is then checked with smi.Decode, the controller's own
// validation: an Error there is a usage error.
func materialize(u *unstructured.Unstructured, kv kindVersion, loss stashLoss) (*unstructured.Unstructured, []smi.Problem, error) {
	out, err := smi.Convert(u, kv.apiVersion())
	if err != nil {
		return nil, nil, fmt.Errorf("converting %s %s/%s to %s: %w", u.GetKind(), u.GetNamespace(), u.GetName(), kv.apiVersion(), err)
	}
	if stash, ok := out.GetAnnotations()[smi.ConversionAnnotation]; ok {
		var fields map[string]any
		_ = json.Unmarshal([]byte(stash), &fields)
		keys := make([]string, 0, len(fields))
		for k := range fields {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var what []string
		for _, k := range keys {
			if d, ok := loss[k]; ok {
				what = append(what, d)
			} else {
				what = append(what, k)
			}
		}
		return nil, nil, clienv.Fail(clienv.ExitConfig,
			fmt.Errorf("%s %s/%s: this cluster serves %s only up to %s, which cannot hold %s", u.GetKind(), u.GetNamespace(), u.GetName(), kv.info.Group, kv.version, strings.Join(what, ", ")),
			"install Trellis's SMI CRDs (kubectl trellis install), which serve the newest versions, or drop that flag")
	}
	obj, ps := smi.Decode(out)
	if obj == nil || smi.HasErrors(ps) {
		var msgs []string
		for _, p := range ps {
			if p.Severity == smi.Error {
				msgs = append(msgs, p.String())
			}
		}
		return nil, nil, clienv.Usagef("%s", strings.Join(msgs, "; "))
	}
	return out, ps, nil
}

// content is an object without apiVersion, kind, metadata and status:
// what the SMI objects hold (spec, or top-level fields in old versions).
func content(u *unstructured.Unstructured) map[string]any {
	out := map[string]any{}
	for k, v := range u.Object {
		switch k {
		case "apiVersion", "kind", "metadata", "status":
			continue
		}
		out[k] = v
	}
	return out
}

// setContent replaces the content of dst with that of src, keeping dst's
// metadata.
func setContent(dst, src *unstructured.Unstructured) {
	for k := range content(dst) {
		delete(dst.Object, k)
	}
	for k, v := range content(src) {
		dst.Object[k] = v
	}
}

// sameJSON compares two values as JSON (so int64 and float64 agree).
func sameJSON(a, b any) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	if err1 != nil || err2 != nil {
		return false
	}
	var va, vb any
	_ = json.Unmarshal(ja, &va)
	_ = json.Unmarshal(jb, &vb)
	return reflect.DeepEqual(va, vb)
}

// managed reports whether kubectl-trellis created u.
func managed(u *unstructured.Unstructured) bool {
	return u != nil && u.GetLabels()[ManagedByLabel] == ManagedBy
}

// ownedBy reports whether u is a route object the CLI created for owner.
func ownedBy(u *unstructured.Unstructured, owner string) bool {
	return managed(u) && u.GetAnnotations()[ForAnnotation] == owner
}

// get reads one object, returning nil when it does not exist.
func (s *session) get(ctx context.Context, kv kindVersion, ns, name string) (*unstructured.Unstructured, error) {
	u, err := s.dyn.Resource(kv.gvr()).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, clienv.APIError(fmt.Sprintf("get %s %s/%s", kv.info.Kind, ns, name), err)
	}
	return u, nil
}

// list reads every object of one kind in a namespace.
func (s *session) list(ctx context.Context, kv kindVersion, ns string) ([]unstructured.Unstructured, error) {
	l, err := s.dyn.Resource(kv.gvr()).Namespace(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, clienv.APIError(fmt.Sprintf("list %s in namespace %s", kv.resourceName(), ns), err)
	}
	return l.Items, nil
}

// newObject starts an SMI object in the newest version Trellis knows.
func newObject(kind smi.Kind, ns, name string) *unstructured.Unstructured {
	ki, _ := smi.Info(kind)
	u := &unstructured.Unstructured{Object: map[string]any{}}
	u.SetAPIVersion(ki.Group + "/" + ki.Newest())
	u.SetKind(string(kind))
	u.SetNamespace(ns)
	u.SetName(name)
	return u
}

// forDisplay is u without the fields the server manages, as a user would
// write it (for --dry-run and -o yaml|json).
func forDisplay(u *unstructured.Unstructured) *unstructured.Unstructured {
	c := u.DeepCopy()
	unstructured.RemoveNestedField(c.Object, "metadata", "managedFields")
	unstructured.RemoveNestedField(c.Object, "status")
	return c
}

// forDryRun additionally drops the server's bookkeeping from an object
// read from the cluster, so the printed object can be applied as is.
func forDryRun(u *unstructured.Unstructured) *unstructured.Unstructured {
	c := forDisplay(u)
	for _, f := range []string{"uid", "resourceVersion", "creationTimestamp", "generation", "selfLink"} {
		unstructured.RemoveNestedField(c.Object, "metadata", f)
	}
	return c
}
