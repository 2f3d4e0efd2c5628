package install

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/util/retry"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/controller/app"
	"github.com/trellis-mesh/trellis/controller/dns"
	"github.com/trellis-mesh/trellis/controller/settings"
	"github.com/trellis-mesh/trellis/controller/shadow"
	"github.com/trellis-mesh/trellis/internal/cli/clienv"
)

type uninstallFlags struct {
	crds bool
	yes  bool
	wait time.Duration
}

func uninstallCommand(env *clienv.Env) *cobra.Command {
	f := &uninstallFlags{}
	cmd := &cobra.Command{
		Use:   "uninstall",
		Short: "Remove Trellis from the cluster",
		Long: `Uninstall stops the controller, undoes what it wrote (the trellis-mesh block in
the CoreDNS Corefile, the shadow Services), then deletes every object Trellis
created: the workloads, Services, settings, webhook certificate, leader Lease,
RBAC, the trellis-system namespace and, with --crds, the SMI CRDs (which
deletes every SMI object in the cluster).

It deletes only objects labelled app.kubernetes.io/part-of=trellis that
Trellis ships or its controller writes; your Services and other objects are
never touched. If trellis-system holds objects that are not Trellis's, the
namespace stays. Running it again when nothing is left says so.`,
		Example: `  kubectl trellis uninstall
  kubectl trellis uninstall --crds --yes`,
		Args: cobra.NoArgs,
	}
	cmd.Flags().BoolVar(&f.crds, "crds", false, "also delete the SMI CRDs, and with them every TrafficSplit, TrafficTarget and route group in the cluster")
	cmd.Flags().BoolVarP(&f.yes, "yes", "y", false, "do not ask for confirmation")
	cmd.Flags().DurationVar(&f.wait, "wait", 3*time.Minute, "how long to wait for the controller to stop and the namespace (and CRDs) to be gone; 0 does not wait")
	cmd.PreRunE = func(*cobra.Command, []string) error {
		switch {
		case f.wait < 0:
			return clienv.Usagef("--wait %s: must not be negative", f.wait)
		case env.MeshNamespace != MeshNamespace:
			return clienv.Usagef("--mesh-namespace %q: Trellis installs into %s only", env.MeshNamespace, MeshNamespace)
		}
		return nil
	}
	cmd.RunE = func(c *cobra.Command, _ []string) error {
		un := &uninstaller{env: env, out: env.IO.Out, f: *f}
		return un.run(c.Context())
	}
	return cmd
}

type uninstaller struct {
	env *clienv.Env
	out io.Writer
	f   uninstallFlags
	c   *cluster
}

// target is an object to delete.
type target struct {
	r    ref
	live *unstructured.Unstructured
	note string // appended to the "deleted" line
}

// plan is what uninstall found.
type plan struct {
	settings   settings.Settings
	targets    []target
	controller *target // the controller Deployment, stopped first
	shadows    int
	coreDNS    bool
	kept       []string
	leftovers  []string // things that are already going away
}

func (p *plan) empty() bool { return len(p.targets) == 0 && p.shadows == 0 && !p.coreDNS }

var secretGVR = schema.GroupVersionResource{Version: "v1", Resource: "secrets"}

func (un *uninstaller) run(ctx context.Context) error {
	var err error
	if un.c, err = connect(un.env); err != nil {
		return err
	}
	p, err := un.inventory(ctx)
	if err != nil {
		return err
	}
	if p.empty() {
		fmt.Fprintln(un.out, "Nothing to remove: Trellis is not installed.")
		for _, l := range append(p.leftovers, p.kept...) {
			fmt.Fprintln(un.out, l)
		}
		return nil
	}
	if err := un.checkAccess(ctx, p); err != nil {
		return clienv.APIError("uninstall", err)
	}
	if !un.f.yes {
		un.printPlan(p)
		fmt.Fprint(un.out, "Proceed? [y/N] ")
		answer, _ := bufio.NewReader(un.env.IO.In).ReadString('\n')
		fmt.Fprintln(un.out)
		if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
			return clienv.Fail(clienv.ExitUsage, errors.New("uninstall: not confirmed; nothing was removed"), "answer y, or pass --yes")
		}
	}
	deadline := time.Now().Add(un.f.wait)
	removed := 0
	if p.controller != nil {
		if err := un.stopController(ctx, p.controller, deadline); err != nil {
			return err
		}
	}
	if p.shadows > 0 || p.coreDNS {
		s := p.settings
		s.CoreDNS.Enabled = p.coreDNS
		var report string
		err := retry.OnError(retry.DefaultRetry, apierrors.IsConflict, func() error {
			var err error
			report, err = app.Uninstall(ctx, un.c.kube, s)
			return err
		})
		for _, l := range strings.Split(strings.TrimSpace(report), "\n") {
			if l != "" {
				fmt.Fprintf(un.out, "%s %s\n", un.env.Mark(err == nil), l)
			}
		}
		if err != nil {
			return clienv.APIError("uninstall: undoing the controller's writes (nothing else was removed)", err)
		}
		removed += p.shadows
		if strings.Contains(report, "removed the trellis-mesh block") {
			removed++
		}
	}
	var errs []error
	var gone []target
	for _, t := range p.targets {
		err := retry.OnError(retry.DefaultBackoff, transient, func() error {
			return un.c.resource(t.r).Delete(ctx, t.r.Name, metav1.DeleteOptions{PropagationPolicy: ptr(metav1.DeletePropagationBackground)})
		})
		switch {
		case apierrors.IsNotFound(err):
			continue
		case err != nil:
			fmt.Fprintf(un.out, "%s %s: %v\n", un.env.Mark(false), t.r, err)
			errs = append(errs, clienv.APIError("uninstall: delete "+t.r.String(), err))
			continue
		}
		removed++
		fmt.Fprintf(un.out, "%s deleted %s%s\n", un.env.Mark(true), t.r, t.note)
		if t.r.Kind == "Namespace" || t.r.Kind == "CustomResourceDefinition" {
			gone = append(gone, t)
		}
	}
	if len(errs) > 1 {
		return fmt.Errorf("%w (and %d more failures, above)", errs[0], len(errs)-1)
	}
	if len(errs) == 1 {
		return errs[0]
	}
	if un.f.wait > 0 {
		if err := un.waitGone(ctx, gone, deadline); err != nil {
			return err
		}
	}
	fmt.Fprintf(un.out, "Trellis is uninstalled: removed %s.", plural(removed, "object"))
	if !un.f.crds {
		fmt.Fprint(un.out, " The SMI CRDs and your SMI objects stay (uninstall --crds removes them).")
	}
	fmt.Fprintln(un.out)
	for _, l := range p.kept {
		fmt.Fprintln(un.out, l)
	}
	return nil
}

// inventory finds what Trellis created, reading only.
func (un *uninstaller) inventory(ctx context.Context) (*plan, error) {
	c := un.c
	p := &plan{settings: settings.Default()}
	objs, err := render(renderOptions{NoCRDs: !un.f.crds})
	if err != nil {
		return nil, err
	}
	refs := make([]ref, len(objs))
	var reads []access
	for i, u := range objs {
		if refs[i], err = c.ref(u); err != nil {
			return nil, err
		}
		reads = append(reads, refs[i].access("get"))
	}
	scopes, err := c.listScopes()
	if err != nil {
		return nil, err
	}
	for _, s := range scopes {
		reads = append(reads, s.listAccess())
	}
	reads = append(reads,
		access{Verb: "list", Resource: "services", Namespace: MeshNamespace},
		access{Verb: "list", Resource: "secrets", Namespace: MeshNamespace},
		access{Verb: "list", Group: "rbac.authorization.k8s.io", Resource: "rolebindings"},
		access{Verb: "list", Group: "rbac.authorization.k8s.io", Resource: "clusterrolebindings"},
		access{Verb: "get", Group: leaseGVR.Group, Resource: leaseGVR.Resource, Namespace: MeshNamespace, Name: leaseName})
	if err := c.access.require(ctx, reads); err != nil {
		return nil, clienv.APIError("uninstall", err)
	}

	// The settings say where the controller wrote.
	cm, err := c.get(ctx, ref{GVR: cmGVR, Kind: "ConfigMap", Namespace: MeshNamespace, Name: settingsConfigMap, Namespaced: true})
	if err != nil {
		return nil, err
	}
	if cm != nil {
		text, _, _ := unstructured.NestedString(cm.Object, "data", settingsKey)
		if s, err := settings.Parse([]byte(text)); err == nil {
			p.settings = s
		} else {
			p.kept = append(p.kept, fmt.Sprintf("%s the settings in ConfigMap %s/%s do not parse (%v); using the defaults to find the controller's writes", un.env.Warn(), MeshNamespace, settingsConfigMap, err))
		}
	}
	p.settings.MeshNamespace = MeshNamespace

	seen := map[string]bool{}
	add := func(r ref, live *unstructured.Unstructured) {
		if seen[key(r)] {
			return
		}
		seen[key(r)] = true
		if live.GetDeletionTimestamp() != nil {
			p.leftovers = append(p.leftovers, fmt.Sprintf("%s is still being deleted.", r))
			return
		}
		p.targets = append(p.targets, target{r: r, live: live})
	}
	for _, r := range refs {
		live, err := c.get(ctx, r)
		if err != nil {
			return nil, err
		}
		switch {
		case live == nil:
		case !ours(live):
			p.kept = append(p.kept, fmt.Sprintf("left alone: %s (not labelled %s=%s)", r, PartOfLabel, PartOfValue))
		default:
			add(r, live)
		}
	}
	applied, appliedRefs, err := c.appliedObjects(ctx)
	if err != nil {
		return nil, err
	}
	for i, u := range applied {
		if r := appliedRefs[i]; un.f.crds || r.Kind != "CustomResourceDefinition" {
			add(r, u)
		}
	}
	// What the controller wrote in its namespace besides shadow Services.
	secrets, err := c.dyn.Resource(secretGVR).Namespace(MeshNamespace).List(ctx, metav1.ListOptions{LabelSelector: shadow.LabelManagedBy + "=" + shadow.ManagedBy})
	if err != nil {
		return nil, clienv.APIError("uninstall: list Secrets in "+MeshNamespace, err)
	}
	for i := range secrets.Items {
		u := &secrets.Items[i]
		add(ref{GVR: secretGVR, Kind: "Secret", Namespace: MeshNamespace, Name: u.GetName(), Namespaced: true}, u)
	}
	lr := ref{GVR: leaseGVR, Kind: "Lease", Namespace: MeshNamespace, Name: leaseName, Namespaced: true}
	if l, err := c.get(ctx, lr); err != nil {
		return nil, err
	} else if l != nil {
		add(lr, l)
	}
	svcs, err := c.kube.CoreV1().Services(MeshNamespace).List(ctx, metav1.ListOptions{LabelSelector: shadow.LabelManagedBy + "=" + shadow.ManagedBy})
	if err != nil {
		return nil, clienv.APIError("uninstall: list Services in "+MeshNamespace, err)
	}
	for i := range svcs.Items {
		if shadow.IsShadow(&svcs.Items[i], MeshNamespace) {
			p.shadows++
		}
	}
	if p.settings.CoreDNS.Enabled {
		if p.coreDNS, err = un.coreDNSBlock(ctx, p.settings.CoreDNS); err != nil {
			return nil, err
		}
	}
	// Deletion order: the reverse of apply order.
	sort.SliceStable(p.targets, func(i, j int) bool { return kindRank(p.targets[i].r.Kind) > kindRank(p.targets[j].r.Kind) })
	for i := range p.targets {
		t := &p.targets[i]
		switch {
		case t.r.Kind == "Deployment" && t.r.Name == controllerName && t.r.Namespace == MeshNamespace:
			p.controller = t
		case t.r.Kind == "CustomResourceDefinition":
			t.note = un.crdObjects(ctx, t.live)
		}
	}
	roles := map[string]bool{} // "ClusterRole/NAME", "Role/NS/NAME" that Trellis ships
	for _, u := range objs {
		switch u.GetKind() {
		case "ClusterRole":
			roles["ClusterRole/"+u.GetName()] = true
		case "Role":
			roles["Role/"+u.GetNamespace()+"/"+u.GetName()] = true
		}
	}
	removing := map[string]bool{}
	for _, t := range p.targets {
		switch t.r.Kind {
		case "ClusterRole":
			removing["ClusterRole/"+t.r.Name] = true
		case "Role":
			removing["Role/"+t.r.Namespace+"/"+t.r.Name] = true
		}
	}
	notes, err := un.usersBindings(ctx, removing)
	if err != nil {
		return nil, err
	}
	p.kept = append(p.kept, notes...)
	if err := un.keepForeignNamespace(ctx, p, roles); err != nil {
		return nil, err
	}
	return p, nil
}

// coreDNSBlock reports whether the Corefile has the trellis-mesh block.
func (un *uninstaller) coreDNSBlock(ctx context.Context, cd settings.CoreDNS) (bool, error) {
	if err := un.c.access.require(ctx, []access{{Verb: "get", Resource: "configmaps", Namespace: cd.Namespace, Name: cd.ConfigMap}}); err != nil {
		return false, clienv.APIError("uninstall", err)
	}
	cm, err := un.c.kube.CoreV1().ConfigMaps(cd.Namespace).Get(ctx, cd.ConfigMap, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, clienv.APIError("uninstall: read ConfigMap "+cd.Namespace+"/"+cd.ConfigMap, err)
	}
	_, changed, err := dns.Remove(cm.Data[cd.Key])
	if err != nil {
		// Broken markers: let the controller's uninstall say so.
		return true, nil //nolint:nilerr // reported by app.Uninstall
	}
	return changed, nil
}

// crdObjects says how many objects deleting a CRD deletes with it.
func (un *uninstaller) crdObjects(ctx context.Context, crd *unstructured.Unstructured) string {
	group, _, _ := unstructured.NestedString(crd.Object, "spec", "group")
	resource, _, _ := unstructured.NestedString(crd.Object, "spec", "names", "plural")
	kind, _, _ := unstructured.NestedString(crd.Object, "spec", "names", "kind")
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	version := ""
	for _, v := range versions {
		if vm, ok := v.(map[string]any); ok && vm["storage"] == true {
			version, _ = vm["name"].(string)
		}
	}
	l, err := un.c.dyn.Resource(schema.GroupVersionResource{Group: group, Version: version, Resource: resource}).List(ctx, metav1.ListOptions{})
	if err != nil {
		return " (and every " + kind + " in the cluster)"
	}
	if n := len(l.Items); n > 0 {
		return fmt.Sprintf(" (and with it %s)", plural(n, kind))
	}
	return ""
}

// keepForeignNamespace takes the namespace off the list when it holds
// objects that are not Trellis's: deleting it would delete them.
func (un *uninstaller) keepForeignNamespace(ctx context.Context, p *plan, roles map[string]bool) error {
	idx := -1
	for i, t := range p.targets {
		if t.r.Kind == "Namespace" && t.r.Name == MeshNamespace {
			idx = i
		}
	}
	if idx < 0 {
		return nil
	}
	foreign, err := un.foreignObjects(ctx, roles)
	if err != nil {
		p.kept = append(p.kept, fmt.Sprintf("kept namespace %s: could not check that it holds only Trellis's objects (%v)", MeshNamespace, err))
	} else if len(foreign) > 0 {
		more := ""
		if len(foreign) > 5 {
			more = fmt.Sprintf(" and %d more", len(foreign)-5)
			foreign = foreign[:5]
		}
		p.kept = append(p.kept, fmt.Sprintf("kept namespace %s: it holds objects that are not Trellis's: %s%s", MeshNamespace, strings.Join(foreign, ", "), more))
	} else {
		return nil
	}
	p.targets = append(p.targets[:idx], p.targets[idx+1:]...)
	return nil
}

// foreignObjects lists the objects in the mesh namespace that Trellis did
// not create, of every namespaced kind the cluster serves.
func (un *uninstaller) foreignObjects(ctx context.Context, roles map[string]bool) ([]string, error) {
	lists, err := un.c.disc.ServerPreferredNamespacedResources()
	// An aggregated API that is down (often metrics-server) fails only its
	// own group; the others are listed.
	if err != nil && !(discovery.IsGroupDiscoveryFailedError(err) && len(lists) > 0) {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	var out []string
	for _, l := range lists {
		gv, err := schema.ParseGroupVersion(l.GroupVersion)
		if err != nil {
			return nil, err
		}
		for _, r := range l.APIResources {
			// Events expire by themselves; metrics are views of pods, not
			// objects stored in the namespace.
			if strings.Contains(r.Name, "/") || !hasVerb(r.Verbs, "list") || r.Kind == "Event" || gv.Group == "metrics.k8s.io" {
				continue
			}
			items, err := un.c.quiet.Resource(gv.WithResource(r.Name)).Namespace(MeshNamespace).List(ctx, metav1.ListOptions{})
			if err != nil {
				return nil, fmt.Errorf("list %s in %s: %w", r.Name, MeshNamespace, err)
			}
			for i := range items.Items {
				if u := &items.Items[i]; !createdByTrellisOrCluster(u, r.Kind) && !bindsTo(u, r.Kind, roles) {
					out = append(out, r.Kind+" "+u.GetName())
				}
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

// createdByTrellisOrCluster: objects Trellis made (labelled, or owned by
// such objects), the controller's Lease, and what Kubernetes puts in every
// namespace.
func createdByTrellisOrCluster(u *unstructured.Unstructured, kind string) bool {
	l := u.GetLabels()
	switch {
	case l[PartOfLabel] == PartOfValue, l[shadow.LabelManagedBy] == shadow.ManagedBy, len(u.GetOwnerReferences()) > 0:
		return true
	case kind == "ConfigMap" && u.GetName() == "kube-root-ca.crt",
		kind == "ServiceAccount" && u.GetName() == "default",
		kind == "Lease" && u.GetName() == leaseName:
		return true
	case kind == "Secret":
		// Legacy token Secrets of Trellis's ServiceAccounts.
		sa := u.GetAnnotations()["kubernetes.io/service-account.name"]
		return sa == "default" || sa == controllerName || sa == proxyName
	}
	return false
}

// bindsTo reports whether u is a RoleBinding or ClusterRoleBinding
// granting one of roles (people bind the plugin's roles to themselves).
func bindsTo(u *unstructured.Unstructured, kind string, roles map[string]bool) bool {
	if kind != "RoleBinding" && kind != "ClusterRoleBinding" {
		return false
	}
	refKind, _, _ := unstructured.NestedString(u.Object, "roleRef", "kind")
	refName, _, _ := unstructured.NestedString(u.Object, "roleRef", "name")
	if refKind == "Role" {
		return roles["Role/"+u.GetNamespace()+"/"+refName]
	}
	return roles["ClusterRole/"+refName]
}

// usersBindings finds bindings people made to the roles Trellis ships,
// outside the mesh namespace (those go with it): uninstall leaves them
// alone, and says so.
func (un *uninstaller) usersBindings(ctx context.Context, roles map[string]bool) ([]string, error) {
	var out []string
	crbs, err := un.c.kube.RbacV1().ClusterRoleBindings().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, clienv.APIError("uninstall: list ClusterRoleBindings", err)
	}
	for _, b := range crbs.Items {
		if b.Labels[PartOfLabel] != PartOfValue && roles["ClusterRole/"+b.RoleRef.Name] && b.RoleRef.Kind == "ClusterRole" {
			out = append(out, fmt.Sprintf("left alone: ClusterRoleBinding %s (not Trellis's) grants ClusterRole %s, which this removes; delete it when no longer needed", b.Name, b.RoleRef.Name))
		}
	}
	rbs, err := un.c.kube.RbacV1().RoleBindings(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, clienv.APIError("uninstall: list RoleBindings", err)
	}
	for _, b := range rbs.Items {
		ns := b.Namespace
		if ns == MeshNamespace || b.Labels[PartOfLabel] == PartOfValue {
			continue
		}
		if (b.RoleRef.Kind == "Role" && roles["Role/"+ns+"/"+b.RoleRef.Name]) || (b.RoleRef.Kind == "ClusterRole" && roles["ClusterRole/"+b.RoleRef.Name]) {
			out = append(out, fmt.Sprintf("left alone: RoleBinding %s/%s (not Trellis's) grants %s %s, which this removes; delete it when no longer needed", ns, b.Name, b.RoleRef.Kind, b.RoleRef.Name))
		}
	}
	sort.Strings(out)
	return out, nil
}

func hasVerb(verbs []string, v string) bool {
	for _, x := range verbs {
		if x == v {
			return true
		}
	}
	return false
}

// checkAccess asks, before anything changes, whether the user may do all
// of the uninstall.
func (un *uninstaller) checkAccess(ctx context.Context, p *plan) error {
	var as []access
	if p.controller != nil {
		as = append(as, p.controller.r.access("patch"), access{Verb: "list", Resource: "pods", Namespace: MeshNamespace})
	}
	if p.shadows > 0 {
		as = append(as, access{Verb: "delete", Resource: "services", Namespace: MeshNamespace})
	}
	if p.coreDNS {
		cd := p.settings.CoreDNS
		as = append(as, access{Verb: "update", Resource: "configmaps", Namespace: cd.Namespace, Name: cd.ConfigMap})
	}
	for _, t := range p.targets {
		as = append(as, t.r.access("delete"))
	}
	return un.c.access.require(ctx, as)
}

func (un *uninstaller) printPlan(p *plan) {
	fmt.Fprintln(un.out, "Uninstalling Trellis removes:")
	if p.coreDNS {
		cd := p.settings.CoreDNS
		fmt.Fprintf(un.out, "  the trellis-mesh block in ConfigMap %s/%s\n", cd.Namespace, cd.ConfigMap)
	}
	if p.shadows > 0 {
		fmt.Fprintf(un.out, "  %s in %s\n", plural(p.shadows, "shadow Service"), MeshNamespace)
	}
	for _, t := range p.targets {
		fmt.Fprintf(un.out, "  %s%s\n", t.r, t.note)
	}
	for _, l := range p.kept {
		fmt.Fprintln(un.out, l)
	}
}

// stopController scales the controller to zero and waits for its pods to
// exit, so the leader cannot write the CoreDNS block or shadow Services
// again after they are removed.
func (un *uninstaller) stopController(ctx context.Context, t *target, deadline time.Time) error {
	_, err := un.c.resource(t.r).Patch(ctx, t.r.Name, types.MergePatchType, []byte(`{"spec":{"replicas":0}}`), metav1.PatchOptions{FieldManager: FieldManager})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return clienv.APIError("uninstall: stop the controller (nothing was removed)", err)
	}
	sel, _, _ := unstructured.NestedStringMap(t.live.Object, "spec", "selector", "matchLabels")
	selector := labels.SelectorFromSet(sel).String()
	printed := false
	for {
		pods, err := un.c.kube.CoreV1().Pods(MeshNamespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return clienv.APIError("uninstall: list the controller's pods", err)
		}
		if len(pods.Items) == 0 {
			fmt.Fprintf(un.out, "%s stopped the controller (%s scaled to 0)\n", un.env.Mark(true), t.r)
			return nil
		}
		if un.f.wait == 0 {
			fmt.Fprintf(un.out, "%s %s still stopping (--wait=0); if the leader writes again, run uninstall again\n", un.env.Warn(), plural(len(pods.Items), "controller pod"))
			return nil
		}
		if !printed {
			fmt.Fprintf(un.out, "  waiting for %s to stop\n", plural(len(pods.Items), "controller pod"))
			printed = true
		}
		if !time.Now().Before(deadline) {
			return clienv.Fail(clienv.ExitFailure, fmt.Errorf("uninstall: the controller's pods did not stop within %s (%s is scaled to 0; nothing else was removed)", un.f.wait, t.r),
				"see `kubectl -n "+MeshNamespace+" get pods`, then run uninstall again")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(min(pollInterval, time.Until(deadline)+time.Millisecond)):
		}
	}
}

// waitGone waits until the deleted namespace and CRDs are gone (their
// finalizers delete what they hold).
func (un *uninstaller) waitGone(ctx context.Context, ts []target, deadline time.Time) error {
	if len(ts) == 0 {
		return nil
	}
	what := describe(ts)
	fmt.Fprintf(un.out, "  waiting for %s to be gone\n", what)
	for _, t := range ts {
		for {
			live, err := un.c.get(ctx, t.r)
			if err != nil {
				return err
			}
			if live == nil {
				break
			}
			if !time.Now().Before(deadline) {
				return clienv.Fail(clienv.ExitFailure, fmt.Errorf("uninstall: %s is still terminating after %s", t.r, un.f.wait),
					fmt.Sprintf("see its status and finalizers: `kubectl get %s %s -o yaml`", strings.ToLower(t.r.Kind), t.r.Name))
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(min(pollInterval, time.Until(deadline)+time.Millisecond)):
			}
		}
	}
	fmt.Fprintf(un.out, "%s %s %s gone\n", un.env.Mark(true), what, map[bool]string{true: "is", false: "are"}[len(ts) == 1])
	return nil
}

// describe names a few objects briefly: "Namespace trellis-system and 6
// CustomResourceDefinitions".
func describe(ts []target) string {
	var kinds []string
	byKind := map[string][]target{}
	for _, t := range ts {
		if byKind[t.r.Kind] == nil {
			kinds = append(kinds, t.r.Kind)
		}
		byKind[t.r.Kind] = append(byKind[t.r.Kind], t)
	}
	var parts []string
	for _, k := range kinds {
		if n := len(byKind[k]); n == 1 {
			parts = append(parts, byKind[k][0].r.String())
		} else {
			parts = append(parts, plural(n, k))
		}
	}
	return strings.Join(parts, " and ")
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
