package inspect

import (
	"context"
	"fmt"
	"io/fs"
	"slices"
	"sort"
	"strings"
	"sync"

	authzv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/restmapper"

	"github.com/trellis-mesh/trellis/internal/cli/clienv"
	"github.com/trellis-mesh/trellis/internal/kube"
	"github.com/trellis-mesh/trellis/manifests/base"
	"github.com/trellis-mesh/trellis/manifests/crds"
)

// shippedNamespace is the namespace the manifests are written for; the
// install moves them to --mesh-namespace.
const shippedNamespace = "trellis-system"

// manifestObjects decodes what an install applies: the CRDs and the base
// manifests, moved to the mesh namespace.
func manifestObjects(ns string) ([]*unstructured.Unstructured, error) {
	var out []*unstructured.Unstructured
	for _, src := range []struct {
		fsys fs.FS
		dir  string
	}{{crds.FS, "manifests/crds"}, {base.FS, "manifests/base"}} {
		names, err := fs.Glob(src.fsys, "*.yaml")
		if err != nil {
			return nil, err
		}
		sort.Strings(names)
		for _, name := range names {
			if name == "kustomization.yaml" {
				continue
			}
			b, err := fs.ReadFile(src.fsys, name)
			if err != nil {
				return nil, err
			}
			objs, err := kube.Decode(b)
			if err != nil {
				return nil, fmt.Errorf("%s/%s: %w", src.dir, name, err)
			}
			for _, o := range objs {
				if o.GetNamespace() == shippedNamespace {
					o.SetNamespace(ns)
				}
				if o.GetKind() == "Namespace" && o.GetName() == shippedNamespace {
					o.SetName(ns)
				}
			}
			out = append(out, objs...)
		}
	}
	return out, nil
}

// access is one permission to check, as a comparable key.
type access struct {
	verb, group, resource, sub, name, ns, path string
}

func (a access) String() string {
	if a.path != "" {
		return a.verb + " " + a.path
	}
	res := a.resource
	if a.sub != "" {
		res += "/" + a.sub
	}
	if a.group != "" {
		res += "." + a.group
	}
	s := a.verb + " " + res
	if a.name != "" {
		s += " " + a.name
	}
	if a.ns != "" {
		return s + " in namespace " + a.ns
	}
	return s + " (cluster-wide)"
}

func (s *session) mayAccess(ctx context.Context, a access) (bool, error) {
	if a.path != "" {
		return s.may(ctx, nil, &authzv1.NonResourceAttributes{Verb: a.verb, Path: a.path})
	}
	return s.may(ctx, &authzv1.ResourceAttributes{Verb: a.verb, Group: a.group, Resource: a.resource, Subresource: a.sub, Name: a.name, Namespace: a.ns}, nil)
}

// mayMany checks permissions a few at a time and returns the refused ones,
// in the order given.
func (s *session) mayMany(ctx context.Context, as []access) ([]access, error) {
	allowed := make([]bool, len(as))
	errs := make([]error, len(as))
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i := range as {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			allowed[i], errs[i] = s.mayAccess(ctx, as[i])
		}()
	}
	wg.Wait()
	var refused []access
	for i, a := range as {
		if errs[i] != nil {
			return nil, errs[i]
		}
		if !allowed[i] {
			refused = append(refused, a)
		}
	}
	return refused, nil
}

// installRBAC checks that the user may create and server-side apply every
// object of the install, and grant the RBAC in it: RBAC only lets a user
// create a Role or binding that grants what the user holds, unless they
// may escalate and bind.
func installRBAC(ctx context.Context, s *session) outcome {
	objs, err := manifestObjects(s.ns)
	if err != nil {
		return outcome{Status: failed, Detail: []string{err.Error()}}
	}
	groups, err := restmapper.GetAPIGroupResources(s.kube.Discovery())
	if err != nil {
		return outcome{Status: failed, Detail: []string{fmt.Sprintf("discovery: %v", err)}}
	}
	mapper := restmapper.NewDiscoveryRESTMapper(groups)
	var writes, grants []access
	seen := map[access]bool{}
	add := func(list *[]access, a access) {
		if !seen[a] {
			seen[a] = true
			*list = append(*list, a)
		}
	}
	var rbacKinds []string
	for _, o := range objs {
		gvk := o.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			return outcome{Status: failed, Detail: []string{fmt.Sprintf("%s %s: this cluster does not serve %s", gvk.Kind, kube.Name(o), gvk.GroupVersion())}, Hint: "upgrade the cluster"}
		}
		ns := ""
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			ns = o.GetNamespace()
		}
		for _, verb := range []string{"create", "patch"} {
			add(&writes, access{verb: verb, group: m.Resource.Group, resource: m.Resource.Resource, ns: ns})
		}
		var rules []rbacv1.PolicyRule
		switch gvk.Kind {
		case "Role":
			var r rbacv1.Role
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &r); err != nil {
				return outcome{Status: failed, Detail: []string{fmt.Sprintf("Role %s: %v", kube.Name(o), err)}}
			}
			rules = r.Rules
			rbacKinds = append(rbacKinds, "roles")
		case "ClusterRole":
			var r rbacv1.ClusterRole
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &r); err != nil {
				return outcome{Status: failed, Detail: []string{fmt.Sprintf("ClusterRole %s: %v", kube.Name(o), err)}}
			}
			rules = r.Rules
			rbacKinds = append(rbacKinds, "clusterroles")
		}
		for _, rule := range rules {
			for _, a := range ruleAccess(rule, ns) {
				add(&grants, a)
			}
		}
	}
	title := "may install Trellis (create and apply its objects, and grant the RBAC they carry)"
	refusedWrites, err := s.mayMany(ctx, writes)
	if err != nil {
		return outcome{Status: failed, Detail: []string{err.Error()}}
	}
	refusedGrants, err := s.mayMany(ctx, grants)
	if err != nil {
		return outcome{Status: failed, Detail: []string{err.Error()}}
	}
	if len(refusedGrants) > 0 {
		// Without holding them, escalate and bind let one grant them.
		var eb []access
		for _, k := range []string{"roles", "clusterroles"} {
			if slices.Contains(rbacKinds, k) {
				eb = append(eb, access{verb: "escalate", group: rbacv1.GroupName, resource: k}, access{verb: "bind", group: rbacv1.GroupName, resource: k})
			}
		}
		refusedEB, err := s.mayMany(ctx, eb)
		if err != nil {
			return outcome{Status: failed, Detail: []string{err.Error()}}
		}
		if len(refusedEB) == 0 {
			refusedGrants = nil
		}
	}
	if len(refusedWrites)+len(refusedGrants) == 0 {
		return pass(title)
	}
	// One line per resource: "you may not create, patch configmaps in ...".
	var detail []string
	var verbs [][]string
	where := map[access]int{}
	for _, a := range refusedWrites {
		k := a
		k.verb = ""
		i, ok := where[k]
		if !ok {
			i = len(detail)
			where[k] = i
			detail, verbs = append(detail, ""), append(verbs, nil)
		}
		verbs[i] = append(verbs[i], a.verb)
		k.verb = strings.Join(verbs[i], ", ")
		detail[i] = "you may not " + k.String()
	}
	if n := len(refusedGrants); n > 0 {
		var eg []string
		for _, a := range refusedGrants[:min(n, 3)] {
			eg = append(eg, a.String())
		}
		detail = append(detail, fmt.Sprintf("you do not hold %d of the %d permissions the install grants to Trellis (e.g. %s), and may not escalate and bind roles: RBAC lets you grant only what you hold",
			n, len(grants), strings.Join(eg, "; ")))
	}
	return outcome{Status: failed, Check: title, Detail: detail, Hint: "install as a cluster admin (kubectl trellis install --context <admin context>)"}
}

// ruleAccess expands a policy rule into the permissions it grants.
func ruleAccess(rule rbacv1.PolicyRule, ns string) []access {
	var out []access
	for _, verb := range rule.Verbs {
		for _, path := range rule.NonResourceURLs {
			out = append(out, access{verb: verb, path: path})
		}
		for _, g := range rule.APIGroups {
			for _, res := range rule.Resources {
				r, sub, _ := strings.Cut(res, "/")
				if len(rule.ResourceNames) == 0 {
					out = append(out, access{verb: verb, group: g, resource: r, sub: sub, ns: ns})
				}
				for _, n := range rule.ResourceNames {
					out = append(out, access{verb: verb, group: g, resource: r, sub: sub, name: n, ns: ns})
				}
			}
		}
	}
	return out
}

// conflicts looks for Trellis installed in another namespace: the
// cluster-wide objects would be taken over, and two controllers would edit
// CoreDNS.
func conflicts(ctx context.Context, s *session) outcome {
	crb, err := s.kube.RbacV1().ClusterRoleBindings().Get(ctx, controllerName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return pass("no conflicting install (Trellis is not installed yet)")
	case apierrors.IsForbidden(err):
		return outcome{Status: failed, Detail: []string{"you may not get clusterrolebindings.rbac.authorization.k8s.io " + controllerName + " (cluster-wide)"}, Hint: "install as a cluster admin"}
	case err != nil:
		return outcome{Status: failed, Detail: []string{clienv.APIError("get ClusterRoleBinding "+controllerName, err).Error()}}
	}
	var other []string
	for _, sub := range crb.Subjects {
		if sub.Kind == rbacv1.ServiceAccountKind && sub.Namespace != s.ns {
			other = append(other, sub.Namespace)
		}
	}
	if len(other) > 0 {
		return outcome{Status: failed, Check: "no conflicting install",
			Detail: []string{fmt.Sprintf("Trellis is already installed in namespace %s (ClusterRoleBinding %s binds its controller there)", strings.Join(other, ", "), controllerName)},
			Hint:   fmt.Sprintf("upgrade that install (--mesh-namespace %s), or remove it first with kubectl trellis uninstall --mesh-namespace %s", other[0], other[0])}
	}
	return pass(fmt.Sprintf("no conflicting install (Trellis in %s is upgraded in place)", s.ns))
}

// crdOwners warns when SMI CRDs exist that Trellis did not install: another
// mesh may rely on them, and installing replaces them.
func crdOwners(ctx context.Context, s *session) outcome {
	served, err := listCRDs(ctx, s)
	if err != nil {
		return outcome{Status: warning, Check: "the SMI CRDs are Trellis's or absent", Detail: []string{"cannot tell: " + err.Error()}}
	}
	shipped, err := crds.Load()
	if err != nil {
		return outcome{Status: failed, Detail: []string{err.Error()}}
	}
	var foreign []string
	for _, c := range shipped {
		got := served[c.Name]
		if got == nil || got.Labels["app.kubernetes.io/part-of"] == "trellis" {
			continue
		}
		by := got.Labels["app.kubernetes.io/managed-by"]
		if by == "" {
			by = "an unknown installer"
		}
		foreign = append(foreign, fmt.Sprintf("%s (serves %s) was installed by %s", c.Name, strings.Join(servedVersions(got), ", "), by))
	}
	if len(foreign) > 0 {
		return outcome{Status: warning, Detail: foreign,
			Hint: "installing replaces these CRDs with Trellis's (every SMI version served, converted by the Trellis controller); another mesh using them keeps working only while Trellis runs"}
	}
	return pass("")
}
