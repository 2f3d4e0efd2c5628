package install

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	"github.com/trellis-mesh/trellis/internal/cli/clienv"
	"github.com/trellis-mesh/trellis/internal/kube"
)

// cluster holds the clients one install or uninstall uses.
type cluster struct {
	kube kubernetes.Interface
	dyn  dynamic.Interface
	// quiet is dyn without the apiserver's deprecation warnings, for
	// scans that list every type (v1 Endpoints, ComponentStatus...).
	quiet  dynamic.Interface
	disc   discovery.DiscoveryInterface
	mapper meta.RESTMapper
	access *checker
}

func connect(env *clienv.Env) (*cluster, error) {
	cfg, err := env.RESTConfig()
	if err != nil {
		return nil, err
	}
	// The installer makes a few hundred small requests (reads, access
	// reviews, applies); client-go's default of 5/s would make that slow.
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = 50, 100
	c := &cluster{}
	if c.kube, err = kubernetes.NewForConfig(cfg); err != nil {
		return nil, err
	}
	if c.dyn, err = dynamic.NewForConfig(cfg); err != nil {
		return nil, err
	}
	qcfg := rest.CopyConfig(cfg)
	qcfg.WarningHandler = rest.NoWarnings{}
	if c.quiet, err = dynamic.NewForConfig(qcfg); err != nil {
		return nil, err
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, err
	}
	c.disc = dc
	c.mapper = restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	c.access = newChecker(c.kube)
	return c, nil
}

// ref is an object's identity and where the API serves it.
type ref struct {
	GVR        schema.GroupVersionResource
	Kind       string
	Namespace  string
	Name       string
	Namespaced bool
}

func (r ref) String() string {
	if r.Namespace != "" {
		return r.Kind + " " + r.Namespace + "/" + r.Name
	}
	return r.Kind + " " + r.Name
}

func (r ref) access(verb string) access {
	return access{Verb: verb, Group: r.GVR.Group, Resource: r.GVR.Resource, Namespace: r.Namespace, Name: r.Name}
}

func (c *cluster) ref(u *unstructured.Unstructured) (ref, error) {
	gvk := u.GroupVersionKind()
	m, err := c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return ref{}, fmt.Errorf("%s %s: the cluster does not serve %s: %w", gvk.Kind, kube.Name(u), gvk.GroupVersion(), err)
	}
	r := ref{GVR: m.Resource, Kind: gvk.Kind, Name: u.GetName(), Namespaced: m.Scope.Name() == meta.RESTScopeNameNamespace}
	if r.Namespaced {
		r.Namespace = u.GetNamespace()
		if r.Namespace == "" {
			r.Namespace = metav1.NamespaceDefault
		}
	}
	return r, nil
}

func (c *cluster) resource(r ref) dynamic.ResourceInterface {
	if r.Namespaced {
		return c.dyn.Resource(r.GVR).Namespace(r.Namespace)
	}
	return c.dyn.Resource(r.GVR)
}

// get returns the live object, or nil when it does not exist.
func (c *cluster) get(ctx context.Context, r ref) (*unstructured.Unstructured, error) {
	u, err := c.resource(r).Get(ctx, r.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, clienv.APIError("read "+r.String(), err)
	}
	return u, nil
}

// ours reports whether a live object carries Trellis's label.
func ours(u *unstructured.Unstructured) bool {
	return u != nil && u.GetLabels()[PartOfLabel] == PartOfValue
}

// appliedByUs reports whether the installer applied fields of u.
func appliedByUs(u *unstructured.Unstructured) bool {
	for _, mf := range u.GetManagedFields() {
		if mf.Manager == FieldManager && mf.Operation == metav1.ManagedFieldsOperationApply {
			return true
		}
	}
	return false
}

// ownedKinds are the kinds Trellis has shipped, and where: stale objects of
// these kinds that the installer applied are pruned on upgrade and removed
// on uninstall. Namespaced kinds are looked for only in the namespaces
// Trellis writes to (so the installer never needs to list, say, Secrets
// cluster-wide).
var ownedKinds = []schema.GroupVersionKind{
	{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"},
	{Version: "v1", Kind: "Namespace"},
	{Version: "v1", Kind: "ServiceAccount"},
	{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "ClusterRole"},
	{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "ClusterRoleBinding"},
	{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "Role"},
	{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "RoleBinding"},
	{Version: "v1", Kind: "ConfigMap"},
	{Version: "v1", Kind: "Secret"},
	{Version: "v1", Kind: "Service"},
	{Group: "policy", Version: "v1", Kind: "PodDisruptionBudget"},
	{Group: "apps", Version: "v1", Kind: "Deployment"},
	{Group: "apps", Version: "v1", Kind: "DaemonSet"},
}

// ownedNamespaces are where Trellis puts namespaced objects of a kind: all
// in the mesh namespace, and the CoreDNS Role and RoleBinding in
// kube-system (so the installer never lists, say, kube-system's Secrets).
func ownedNamespaces(kind string) []string {
	if kind == "Role" || kind == "RoleBinding" {
		return []string{MeshNamespace, metav1.NamespaceSystem}
	}
	return []string{MeshNamespace}
}

// listScopes are the (resource, namespace) pairs applied lists cover.
func (c *cluster) listScopes() ([]ref, error) {
	var out []ref
	for _, gvk := range ownedKinds {
		m, err := c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			return nil, fmt.Errorf("the cluster does not serve %s: %w", gvk, err)
		}
		r := ref{GVR: m.Resource, Kind: gvk.Kind, Namespaced: m.Scope.Name() == meta.RESTScopeNameNamespace}
		if !r.Namespaced {
			out = append(out, r)
			continue
		}
		for _, ns := range ownedNamespaces(gvk.Kind) {
			r.Namespace = ns
			out = append(out, r)
		}
	}
	return out, nil
}

// appliedObjects lists the objects labelled part-of=trellis that the
// installer applied, in the kinds and namespaces Trellis uses.
func (c *cluster) appliedObjects(ctx context.Context) ([]*unstructured.Unstructured, []ref, error) {
	scopes, err := c.listScopes()
	if err != nil {
		return nil, nil, err
	}
	var objs []*unstructured.Unstructured
	var refs []ref
	sel := PartOfLabel + "=" + PartOfValue
	for _, s := range scopes {
		l, err := c.resource(s).List(ctx, metav1.ListOptions{LabelSelector: sel})
		if err != nil {
			where := "cluster-wide"
			if s.Namespaced {
				where = "in namespace " + s.Namespace
			}
			return nil, nil, clienv.APIError(fmt.Sprintf("list %s %s", s.GVR.GroupResource(), where), err)
		}
		for i := range l.Items {
			u := &l.Items[i]
			if !appliedByUs(u) {
				continue
			}
			r := s
			r.Name = u.GetName()
			objs, refs = append(objs, u), append(refs, r)
		}
	}
	return objs, refs, nil
}

func (s ref) listAccess() access {
	return access{Verb: "list", Group: s.GVR.Group, Resource: s.GVR.Resource, Namespace: s.Namespace}
}

func key(r ref) string { return r.GVR.GroupResource().String() + "/" + r.Namespace + "/" + r.Name }
