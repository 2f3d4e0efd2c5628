package install

import (
	"context"
	"fmt"
	"strings"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
)

// The apiserver refuses to create a Role, ClusterRole or binding that
// grants more than its creator holds, unless the creator may "escalate"
// (roles) or "bind" (bindings). An access review for "create clusterroles"
// does not see that, so install checks it itself: otherwise a user allowed
// to create RBAC objects but not holding their rules would stop halfway.

type roleInfo struct {
	kind, namespace, name string
	rules                 []rbacv1.PolicyRule
}

// ruleAccess lists what a rule grants, as permissions to check in ns
// ("" for cluster-wide).
func ruleAccess(rule rbacv1.PolicyRule, ns string) []access {
	var out []access
	for _, v := range rule.Verbs {
		for _, p := range rule.NonResourceURLs {
			out = append(out, access{Verb: v, Path: p})
		}
		for _, g := range rule.APIGroups {
			for _, res := range rule.Resources {
				r, sub, _ := strings.Cut(res, "/")
				names := rule.ResourceNames
				if len(names) == 0 {
					names = []string{""}
				}
				for _, n := range names {
					out = append(out, access{Verb: v, Group: g, Resource: r, Subresource: sub, Namespace: ns, Name: n})
				}
			}
		}
	}
	return out
}

// rbacObjects collects the roles and bindings among objs.
func rbacObjects(objs []*unstructured.Unstructured) (map[string]roleInfo, []*unstructured.Unstructured, error) {
	roles := map[string]roleInfo{}
	var bindings []*unstructured.Unstructured
	for _, u := range objs {
		switch u.GetKind() {
		case "Role", "ClusterRole":
			var r rbacv1.ClusterRole // same rules field as Role
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &r); err != nil {
				return nil, nil, fmt.Errorf("%s %s: %w", u.GetKind(), u.GetName(), err)
			}
			roles[u.GetKind()+"/"+u.GetNamespace()+"/"+u.GetName()] = roleInfo{kind: u.GetKind(), namespace: u.GetNamespace(), name: u.GetName(), rules: r.Rules}
		case "RoleBinding", "ClusterRoleBinding":
			bindings = append(bindings, u)
		}
	}
	return roles, bindings, nil
}

// checkEscalation fails if the user may create the RBAC objects among objs
// (already checked) but not grant what they grant.
func (c *cluster) checkEscalation(ctx context.Context, objs []*unstructured.Unstructured) error {
	roles, bindings, err := rbacObjects(objs)
	if err != nil {
		return err
	}
	// grants checks "holds every rule" for one role seen from scope ns.
	grants := func(ri roleInfo, ns string) (string, error) {
		var as []access
		for _, rule := range ri.rules {
			as = append(as, ruleAccess(rule, ns)...)
		}
		ok, err := c.access.allowed(ctx, as)
		if err != nil {
			return "", err
		}
		for i, a := range as {
			if !ok[i] {
				return a.String(), nil
			}
		}
		return "", nil
	}
	for _, u := range objs {
		switch u.GetKind() {
		case "Role", "ClusterRole":
			ri := roles[u.GetKind()+"/"+u.GetNamespace()+"/"+u.GetName()]
			res := "roles"
			if ri.kind == "ClusterRole" {
				res = "clusterroles"
			}
			esc, err := c.access.allowed(ctx, []access{{Verb: "escalate", Group: rbacv1.GroupName, Resource: res, Namespace: ri.namespace, Name: ri.name}})
			if err != nil {
				return err
			}
			if esc[0] {
				continue
			}
			missing, err := grants(ri, ri.namespace)
			if err != nil {
				return err
			}
			if missing != "" {
				return c.access.forbidden(ctx, fmt.Sprintf("create %s %s: it grants %q, which that user lacks (holding it, or the escalate verb on %s, allows this)", ri.kind, nsName(ri.namespace, ri.name), missing, res))
			}
		}
	}
	for _, b := range bindings {
		var rb rbacv1.RoleBinding // same roleRef field as ClusterRoleBinding
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(b.Object, &rb); err != nil {
			return fmt.Errorf("%s %s: %w", b.GetKind(), b.GetName(), err)
		}
		ns := b.GetNamespace()
		refNS, res := ns, "roles"
		if rb.RoleRef.Kind == "ClusterRole" {
			refNS, res = "", "clusterroles"
		}
		bind, err := c.access.allowed(ctx, []access{{Verb: "bind", Group: rbacv1.GroupName, Resource: res, Namespace: refNS, Name: rb.RoleRef.Name}})
		if err != nil {
			return err
		}
		if bind[0] {
			continue
		}
		ri, shipped := roles[rb.RoleRef.Kind+"/"+refNS+"/"+rb.RoleRef.Name]
		if !shipped {
			return c.access.forbidden(ctx, fmt.Sprintf("bind %s %s (needed by %s %s)", rb.RoleRef.Kind, rb.RoleRef.Name, b.GetKind(), nsName(ns, b.GetName())))
		}
		missing, err := grants(ri, ns)
		if err != nil {
			return err
		}
		if missing != "" {
			return c.access.forbidden(ctx, fmt.Sprintf("create %s %s: it grants %q, which that user lacks (holding it, or the bind verb on %s %s, allows this)", b.GetKind(), nsName(ns, b.GetName()), missing, res, rb.RoleRef.Name))
		}
	}
	return nil
}

func nsName(ns, name string) string {
	if ns == "" {
		return name
	}
	return ns + "/" + name
}
