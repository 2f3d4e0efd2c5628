package install

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/controller/dns"
	"github.com/trellis-mesh/trellis/controller/settings"
	"github.com/trellis-mesh/trellis/controller/shadow"
	"github.com/trellis-mesh/trellis/e2e/toolchain"
	"github.com/trellis-mesh/trellis/internal/cli/clitest"
	"github.com/trellis-mesh/trellis/internal/kube"
)

const corefile = `.:53 {
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa
    forward . /etc/resolv.conf
}
`

// TestLifecycle installs, upgrades and uninstalls Trellis on the real test
// apiserver, with a user's objects beside it, and checks what each step
// printed and left behind. The steps share the cluster, so they run in
// order and stop at the first failure.
func TestLifecycle(t *testing.T) {
	f := newFixture(t)
	ctx := f.ctx
	steps := []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"users-objects", func(t *testing.T) { f.usersObjects(t) }},
		{"install", func(t *testing.T) {
			f.golden("install", f.kc, "", 0, "install", "--wait=0")
			f.checkInstalled(t, false, "dev")
		}},
		{"dry-run-accepted-by-kubectl", func(t *testing.T) { f.kubectlDryRun(t) }},
		{"controller-writes", func(t *testing.T) { f.controllerWrites(t) }},
		{"upgrade", func(t *testing.T) {
			before := f.uids(t)
			f.golden("upgrade", f.kc, "", 0, "install", "--wait=0", "--acl", "--image-tag", "v9.9.9")
			f.checkInstalled(t, true, "v9.9.9")
			if after := f.uids(t); !reflect.DeepEqual(before, after) {
				t.Errorf("the upgrade replaced objects instead of updating them:\nbefore %v\nafter  %v", before, after)
			}
			// The controller's caBundle survives re-applying the CRDs.
			crd, err := f.dyn.Resource(crdGVR).Get(ctx, "trafficsplits.split.smi-spec.io", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if b, _, _ := unstructured.NestedString(crd.Object, "spec", "conversion", "webhook", "clientConfig", "caBundle"); b == "" {
				t.Error("re-applying the CRDs dropped the caBundle the controller set")
			}
		}},
		{"upgrade-keeps-settings-and-prunes", func(t *testing.T) {
			// Someone edits the settings; an old version applied an object
			// this one no longer ships.
			cm, err := f.cs.CoreV1().ConfigMaps(MeshNamespace).Get(ctx, settingsConfigMap, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			cm.Data[settingsKey] = strings.Replace(cm.Data[settingsKey], "meshDomain: mesh", "meshDomain: corp", 1)
			if _, err := f.cs.CoreV1().ConfigMaps(MeshNamespace).Update(ctx, cm, metav1.UpdateOptions{FieldManager: "kubectl-edit"}); err != nil {
				t.Fatal(err)
			}
			legacy, err := kube.Decode([]byte(`{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole","metadata":{"name":"trellis-legacy","labels":{"app.kubernetes.io/part-of":"trellis"}},"rules":[]}`))
			if err != nil {
				t.Fatal(err)
			}
			ap, err := kube.NewApplier(f.cfg, FieldManager)
			if err != nil {
				t.Fatal(err)
			}
			if err := ap.Apply(ctx, legacy); err != nil {
				t.Fatal(err)
			}
			f.golden("upgrade-keeps-settings", f.kc, "", 0, "install", "--wait=0")
			s := f.settings(t)
			if !s.ACL || s.MeshDomain != "corp" {
				t.Errorf("the upgrade lost the cluster's settings: acl %v, meshDomain %s", s.ACL, s.MeshDomain)
			}
			if _, err := f.cs.RbacV1().ClusterRoles().Get(ctx, "trellis-legacy", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				t.Errorf("the object an older version applied was not pruned: %v", err)
			}
			f.golden("upgrade-acl-off", f.kc, "", 0, "install", "--wait=0", "--acl=false")
			if s := f.settings(t); s.ACL || s.MeshDomain != "corp" {
				t.Errorf("--acl=false gave acl %v, meshDomain %s", s.ACL, s.MeshDomain)
			}
		}},
		{"wait-for-readiness", func(t *testing.T) { f.waitForReadiness(t) }},
		{"wait-times-out", func(t *testing.T) { f.waitTimesOut(t) }},
		{"restricted-user-cannot-uninstall", func(t *testing.T) {
			kc := f.user("reader", []rbacv1.PolicyRule{{APIGroups: []string{"*"}, Resources: []string{"*"}, Verbs: []string{"get", "list", "watch"}}})
			before := f.snapshot(t)
			f.golden("uninstall-forbidden", kc, "", 5, "uninstall", "--yes")
			f.golden("install-forbidden-upgrade", kc, "", 5, "install", "--wait=0")
			if after := f.snapshot(t); !reflect.DeepEqual(before, after) {
				t.Errorf("a refused command changed the cluster:\nbefore %v\nafter  %v", before, after)
			}
		}},
		{"uninstall-declined", func(t *testing.T) {
			before := f.snapshot(t)
			f.golden("uninstall-declined", f.kc, "n\n", 2, "uninstall")
			if after := f.snapshot(t); !reflect.DeepEqual(before, after) {
				t.Errorf("a declined uninstall changed the cluster")
			}
		}},
		{"uninstall-keeps-a-namespace-holding-users-objects", func(t *testing.T) {
			f.aliceBindings(t)
			note := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "operator-notes", Namespace: MeshNamespace}, Data: map[string]string{"x": "y"}}
			if _, err := f.cs.CoreV1().ConfigMaps(MeshNamespace).Create(ctx, note, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			// A controller pod still runs: uninstall stops it first (the
			// test plays the ReplicaSet controller and the kubelet).
			d, err := f.cs.AppsV1().Deployments(MeshNamespace).Get(ctx, controllerName, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "trellis-controller-7d9f8-abcde", Namespace: MeshNamespace, Labels: d.Spec.Template.Labels},
				Spec: *d.Spec.Template.Spec.DeepCopy()}
			if _, err := f.cs.CoreV1().Pods(MeshNamespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			out := &syncBuffer{}
			args := []string{"uninstall", "--yes", "--wait=30s"}
			done := make(chan clitest.Result, 1)
			go func() { done <- run(t, f.kc, "", out, args...) }()
			waitFor(t, out, "waiting for 1 controller pod to stop")
			if strings.Contains(out.String(), "deleted") || strings.Contains(out.String(), "CoreDNS") {
				t.Errorf("uninstall removed things before the controller stopped:\n%s", out)
			}
			if d, err := f.cs.AppsV1().Deployments(MeshNamespace).Get(ctx, controllerName, metav1.GetOptions{}); err != nil || *d.Spec.Replicas != 0 {
				t.Errorf("the controller was not scaled to 0 (%v)", err)
			}
			if err := f.cs.CoreV1().Pods(MeshNamespace).Delete(ctx, pod.Name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			r := <-done
			clitest.Golden(t, "uninstall-keeps-namespace", transcript(args, r))
			if r.Code != 0 {
				t.Fatalf("exit %d", r.Code)
			}
			left := f.inNamespace(MeshNamespace)
			if !reflect.DeepEqual(left, []string{"ConfigMap operator-notes", "RoleBinding alice-trellis-cli"}) {
				t.Errorf("left in %s: %v, want only the user's ConfigMap and RoleBinding", MeshNamespace, left)
			}
			if err := f.cs.CoreV1().ConfigMaps(MeshNamespace).Delete(ctx, note.Name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}},
		{"uninstall", func(t *testing.T) {
			found := f.playNamespaceController(MeshNamespace)
			f.golden("uninstall", f.kc, "", 0, "uninstall", "--yes", "--wait=30s")
			// Only the user's binding to a Trellis Role goes with the namespace.
			if left := <-found; !reflect.DeepEqual(left, []string{"RoleBinding alice-trellis-cli"}) {
				t.Errorf("the namespace held %v when it was deleted; want only the user's RoleBinding", left)
			}
			f.golden("uninstall-again", f.kc, "", 0, "uninstall", "--yes")
			f.checkUsersObjects(t)
			crds, err := crdNames()
			if err != nil {
				t.Fatal(err)
			}
			want := []string{"ConfigMap shop/dashboards"}
			for _, c := range crds {
				want = append(want, "CustomResourceDefinition "+c)
			}
			slices.Sort(want)
			if got := f.labelled(); !reflect.DeepEqual(got, want) {
				t.Errorf("labelled %s=%s after uninstall:\n got %v\nwant %v (the CRDs stay without --crds; the user's ConfigMap stays)", PartOfLabel, PartOfValue, got, want)
			}
		}},
		{"uninstall-crds", func(t *testing.T) {
			split, err := kube.Decode([]byte(`{"apiVersion":"split.smi-spec.io/v1alpha4","kind":"TrafficSplit","metadata":{"name":"web","namespace":"shop"},"spec":{"service":"web","backends":[{"service":"web-v1","weight":1}]}}`))
			if err != nil {
				t.Fatal(err)
			}
			ap, err := kube.NewApplier(f.cfg, "test")
			if err != nil {
				t.Fatal(err)
			}
			if err := ap.Apply(ctx, split); err != nil {
				t.Fatal(err)
			}
			f.golden("uninstall-crds", f.kc, "", 0, "uninstall", "--crds", "--yes", "--wait=30s")
			f.golden("uninstall-crds-again", f.kc, "", 0, "uninstall", "--crds", "--yes")
			f.checkUsersObjects(t)
			if got := f.labelled(); !reflect.DeepEqual(got, []string{"ConfigMap shop/dashboards"}) {
				t.Errorf("labelled %s=%s after uninstall --crds: %v; want only the user's ConfigMap", PartOfLabel, PartOfValue, got)
			}
		}},
		{"refuses-to-take-over-a-foreign-object", func(t *testing.T) {
			cr := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "trellis-debug"}}
			if _, err := f.cs.RbacV1().ClusterRoles().Create(ctx, cr, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			f.golden("install-foreign-object", f.kc, "", 1, "install", "--wait=0")
			if got := f.labelled(); !reflect.DeepEqual(got, []string{"ConfigMap shop/dashboards"}) {
				t.Errorf("a refused install created %v", got)
			}
			if err := f.cs.RbacV1().ClusterRoles().Delete(ctx, cr.Name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			f.golden("install-no-crds", f.kc, "", 6, "install", "--wait=0", "--crds=false")
			if got := f.labelled(); !reflect.DeepEqual(got, []string{"ConfigMap shop/dashboards"}) {
				t.Errorf("a refused install created %v", got)
			}
		}},
		{"restricted-user-cannot-install", func(t *testing.T) {
			kc := f.user("writer", []rbacv1.PolicyRule{
				{APIGroups: []string{"*"}, Resources: []string{"*"}, Verbs: []string{"get", "list", "watch"}},
				// May create every kind install applies, but does not hold
				// what the controller's roles grant.
				{APIGroups: []string{"", "apps", "policy", "apiextensions.k8s.io", "rbac.authorization.k8s.io"},
					Resources: []string{"namespaces", "serviceaccounts", "configmaps", "services", "deployments", "daemonsets", "poddisruptionbudgets", "customresourcedefinitions", "clusterroles", "clusterrolebindings", "roles", "rolebindings"},
					Verbs:     []string{"create", "patch", "update", "delete"}},
			})
			f.golden("install-escalation-refused", kc, "", 5, "install", "--wait=0")
			f.golden("install-forbidden", f.user("viewer", []rbacv1.PolicyRule{{APIGroups: []string{"*"}, Resources: []string{"*"}, Verbs: []string{"get", "list"}}}), "", 5, "install")
			if got := f.labelled(); !reflect.DeepEqual(got, []string{"ConfigMap shop/dashboards"}) {
				t.Errorf("a refused install created %v", got)
			}
		}},
		{"least-privilege-installer", func(t *testing.T) {
			// manifests/installer-rbac.yaml says what installing needs; a
			// user holding just that installs, upgrades and uninstalls.
			b, err := os.ReadFile("../../../manifests/installer-rbac.yaml")
			if err != nil {
				t.Fatal(err)
			}
			var role rbacv1.ClusterRole
			if err := yaml.UnmarshalStrict(b, &role); err != nil {
				t.Fatal(err)
			}
			kc := f.user("installer", role.Rules)
			for _, args := range [][]string{{"install", "--wait=0"}, {"install", "--wait=0", "--acl"}} {
				if r := run(t, kc, "", nil, args...); r.Code != 0 {
					t.Fatalf("%v as the installer: exit %d\n%s%s", args, r.Code, r.Out, r.Err)
				}
			}
			f.controllerWrites(t)
			found := f.playNamespaceController(MeshNamespace)
			if r := run(t, kc, "", nil, "uninstall", "--crds", "--yes", "--wait=30s"); r.Code != 0 || strings.Contains(r.Out, "kept") {
				t.Fatalf("uninstall as the installer: exit %d\n%s%s", r.Code, r.Out, r.Err)
			}
			if left := <-found; len(left) > 0 {
				t.Errorf("the namespace held %v when it was deleted", left)
			}
			f.checkUsersObjects(t)
			if got := f.labelled(); !reflect.DeepEqual(got, []string{"ConfigMap shop/dashboards"}) {
				t.Errorf("labelled %s=%s after uninstall --crds: %v; want only the user's ConfigMap", PartOfLabel, PartOfValue, got)
			}
		}},
	}
	for _, s := range steps {
		if !t.Run(s.name, func(t *testing.T) {
			f.t = t // the fixture's helpers fail this step, not the whole test
			s.fn(t)
		}) {
			t.FailNow()
		}
	}
}

// usersObjects creates what a user has: a Service (not meshed), a
// ConfigMap that happens to carry the part-of=trellis label, and CoreDNS's
// Corefile.
func (f *fixture) usersObjects(t *testing.T) {
	ctx := f.ctx
	if _, err := f.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", Annotations: map[string]string{"trellis.io/mesh": "true"}},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}
	if _, err := f.cs.CoreV1().Services("shop").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	decoy := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "dashboards", Namespace: "shop", Labels: map[string]string{PartOfLabel: PartOfValue}}}
	if _, err := f.cs.CoreV1().ConfigMaps("shop").Create(ctx, decoy, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cd := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "coredns", Namespace: "kube-system"}, Data: map[string]string{"Corefile": corefile}}
	if _, err := f.cs.CoreV1().ConfigMaps("kube-system").Create(ctx, cd, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := f.labelled(); !reflect.DeepEqual(got, []string{"ConfigMap shop/dashboards"}) {
		t.Fatalf("before install: %v", got)
	}
}

// aliceBindings binds the plugin's roles to a person, as cli-rbac.yaml
// tells a cluster admin to.
func (f *fixture) aliceBindings(t *testing.T) {
	crb := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "alice-trellis-cli"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "trellis-cli-user"},
		Subjects: []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: "alice"}}}
	if _, err := f.cs.RbacV1().ClusterRoleBindings().Create(f.ctx, crb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "alice-trellis-cli", Namespace: MeshNamespace},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "trellis-cli-user"},
		Subjects: []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: "alice"}}}
	if _, err := f.cs.RbacV1().RoleBindings(MeshNamespace).Create(f.ctx, rb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// checkUsersObjects: uninstall left the user's objects as they were, and
// the Corefile as it was before the controller edited it.
func (f *fixture) checkUsersObjects(t *testing.T) {
	ctx := f.ctx
	svc, err := f.cs.CoreV1().Services("shop").Get(ctx, "web", metav1.GetOptions{})
	if err != nil || svc.Annotations["trellis.io/mesh"] != "true" || len(svc.ManagedFields) != 1 {
		t.Errorf("the user's Service shop/web changed: %v %+v", err, svc.ObjectMeta)
	}
	if _, err := f.cs.CoreV1().ConfigMaps("shop").Get(ctx, "dashboards", metav1.GetOptions{}); err != nil {
		t.Errorf("the user's ConfigMap shop/dashboards: %v", err)
	}
	if _, err := f.cs.RbacV1().ClusterRoleBindings().Get(ctx, "alice-trellis-cli", metav1.GetOptions{}); err != nil {
		t.Errorf("the user's ClusterRoleBinding alice-trellis-cli: %v", err)
	}
	cd, err := f.cs.CoreV1().ConfigMaps("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
	if err != nil || cd.Data["Corefile"] != corefile {
		t.Errorf("the Corefile was not restored (%v):\n%s", err, cd.Data["Corefile"])
	}
}

// checkInstalled: every shipped object is there, applied by the installer,
// with the ACL mode and image tag asked for.
func (f *fixture) checkInstalled(t *testing.T, acl bool, tag string) {
	t.Helper()
	objs, err := render(renderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ap, err := kube.NewApplier(f.cfg, "unused")
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range objs {
		ri, err := ap.Resource(u)
		if err != nil {
			t.Fatal(err)
		}
		live, err := ri.Get(f.ctx, u.GetName(), metav1.GetOptions{})
		if err != nil {
			t.Errorf("%s %s: %v", u.GetKind(), kube.Name(u), err)
			continue
		}
		if !ours(live) || !appliedByUs(live) {
			t.Errorf("%s %s: not labelled or not applied by %s", u.GetKind(), kube.Name(u), FieldManager)
		}
	}
	if s := f.settings(t); s.ACL != acl {
		t.Errorf("settings acl %v, want %v", s.ACL, acl)
	}
	d, err := f.cs.AppsV1().Deployments(MeshNamespace).Get(f.ctx, controllerName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if img := d.Spec.Template.Spec.Containers[0].Image; img != "ghcr.io/trellis-mesh/trellis-controller:"+tag {
		t.Errorf("controller image %s, want tag %s", img, tag)
	}
}

func (f *fixture) settings(t *testing.T) settings.Settings {
	t.Helper()
	cm, err := f.cs.CoreV1().ConfigMaps(MeshNamespace).Get(f.ctx, settingsConfigMap, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := settings.Parse([]byte(cm.Data[settingsKey]))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// uids maps every Trellis object to its UID.
func (f *fixture) uids(t *testing.T) map[string]types.UID {
	out := map[string]types.UID{}
	for _, u := range f.objects(t) {
		out[u.GetKind()+" "+kube.Name(&u)] = u.GetUID()
	}
	return out
}

// snapshot maps every Trellis object, and the Corefile, to its
// resourceVersion: any change shows.
func (f *fixture) snapshot(t *testing.T) map[string]string {
	out := map[string]string{}
	for _, u := range f.objects(t) {
		out[u.GetKind()+" "+kube.Name(&u)] = u.GetResourceVersion()
	}
	cd, err := f.cs.CoreV1().ConfigMaps("kube-system").Get(f.ctx, "coredns", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out["coredns"] = cd.ResourceVersion
	return out
}

func (f *fixture) objects(t *testing.T) []unstructured.Unstructured {
	t.Helper()
	return f.labelledObjects()
}

// kubectlDryRun: the real kubectl accepts the dry-run output against the
// cluster, with client-side and with server-side apply.
func (f *fixture) kubectlDryRun(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	root, err := toolchain.RepoRoot(wd)
	if err != nil {
		t.Fatal(err)
	}
	bins, err := toolchain.EnsureUpstream(f.ctx, root, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, format := range []string{"yaml", "json"} {
		r := run(t, "", "", nil, "install", "--dry-run", "-o", format)
		for _, apply := range [][]string{
			{"apply", "--dry-run=server", "-f", "-"},
			{"apply", "--server-side", "--field-manager=" + FieldManager, "--dry-run=server", "-f", "-"},
		} {
			cmd := exec.Command(bins.Path("kubectl"), append([]string{"--kubeconfig", f.kc}, apply...)...)
			cmd.Stdin = strings.NewReader(r.Out)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Errorf("install --dry-run -o %s | kubectl %s: %v\n%s", format, strings.Join(apply, " "), err, out)
			}
			if slices.Contains(apply, "--server-side") && strings.Contains(string(out), "Warning") {
				t.Errorf("kubectl %s warned:\n%s", strings.Join(apply, " "), out)
			}
		}
	}
}

// controllerWrites does what a running controller would: a shadow
// Service, the webhook Secret, the leader Lease, the CoreDNS block and
// the CRDs' caBundle.
func (f *fixture) controllerWrites(t *testing.T) {
	ctx := f.ctx
	sh := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: shadow.Name("shop", "web"), Namespace: MeshNamespace,
		Labels: map[string]string{shadow.LabelManagedBy: shadow.ManagedBy, PartOfLabel: PartOfValue, shadow.LabelOfNamespace: "shop", shadow.LabelOfName: "web"}},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app.kubernetes.io/name": proxyName}, Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}
	if _, err := f.cs.CoreV1().Services(MeshNamespace).Create(ctx, sh, metav1.CreateOptions{FieldManager: "trellis-controller"}); err != nil {
		t.Fatal(err)
	}
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "trellis-controller-webhook", Namespace: MeshNamespace,
		Labels: map[string]string{shadow.LabelManagedBy: shadow.ManagedBy}}, Data: map[string][]byte{"ca.crt": []byte("x")}}
	if _, err := f.cs.CoreV1().Secrets(MeshNamespace).Create(ctx, sec, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.lease(t, "trellis-controller-7d9f8-abcde")
	cd, err := f.cs.CoreV1().ConfigMaps("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	withBlock, changed, err := dns.Apply(cd.Data["Corefile"], dns.Block([]string{"mesh"}, "10.96.0.53"), []string{"mesh"})
	if err != nil || !changed {
		t.Fatalf("adding the block: %v %v", changed, err)
	}
	cd.Data["Corefile"] = withBlock
	if _, err := f.cs.CoreV1().ConfigMaps("kube-system").Update(ctx, cd, metav1.UpdateOptions{FieldManager: "trellis-controller"}); err != nil {
		t.Fatal(err)
	}
	crd, err := f.dyn.Resource(crdGVR).Get(ctx, "trafficsplits.split.smi-spec.io", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := unstructured.SetNestedField(crd.Object, base64.StdEncoding.EncodeToString(caPEM(t)), "spec", "conversion", "webhook", "clientConfig", "caBundle"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.dyn.Resource(crdGVR).Update(ctx, crd, metav1.UpdateOptions{FieldManager: "trellis-controller"}); err != nil {
		t.Fatal(err)
	}
}

// lease makes holder the leader, or removes the Lease for "".
func (f *fixture) lease(t *testing.T, holder string) {
	t.Helper()
	leases := f.cs.CoordinationV1().Leases(MeshNamespace)
	if holder == "" {
		if err := leases.Delete(f.ctx, leaseName, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
		return
	}
	now := metav1.NewMicroTime(time.Now())
	l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: leaseName, Namespace: MeshNamespace},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: ptr(int32(3600)), AcquireTime: &now, RenewTime: &now}}
	if _, err := leases.Create(f.ctx, l, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// setDeploymentStatus plays the Deployment controller.
func (f *fixture) setDeploymentStatus(t *testing.T, available int32) {
	t.Helper()
	d, err := f.cs.AppsV1().Deployments(MeshNamespace).Get(f.ctx, controllerName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: *d.Spec.Replicas, UpdatedReplicas: *d.Spec.Replicas,
		ReadyReplicas: available, AvailableReplicas: available, UnavailableReplicas: *d.Spec.Replicas - available}
	if _, err := f.cs.AppsV1().Deployments(MeshNamespace).UpdateStatus(f.ctx, d, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// setDaemonSetStatus plays the DaemonSet controller on a 3-node cluster.
func (f *fixture) setDaemonSetStatus(t *testing.T, available int32) {
	t.Helper()
	d, err := f.cs.AppsV1().DaemonSets(MeshNamespace).Get(f.ctx, proxyName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d.Status = appsv1.DaemonSetStatus{ObservedGeneration: d.Generation, DesiredNumberScheduled: 3, CurrentNumberScheduled: 3,
		UpdatedNumberScheduled: 3, NumberReady: available, NumberAvailable: available, NumberUnavailable: 3 - available}
	if _, err := f.cs.AppsV1().DaemonSets(MeshNamespace).UpdateStatus(f.ctx, d, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// waitForReadiness: install waits for each stage in turn, saying what it
// waits for, while the test plays the controllers and the leader.
func (f *fixture) waitForReadiness(t *testing.T) {
	f.lease(t, "")
	out := &syncBuffer{}
	args := []string{"install", "--wait=60s"}
	done := make(chan clitest.Result, 1)
	go func() { done <- run(t, f.kc, "", out, args...) }()
	waitFor(t, out, "waiting for controller Deployment")
	f.setDeploymentStatus(t, 2)
	waitFor(t, out, "waiting for leader elected")
	f.lease(t, "trellis-controller-7d9f8-abcde")
	waitFor(t, out, "waiting for proxy DaemonSet")
	f.setDaemonSetStatus(t, 3)
	r := <-done
	clitest.Golden(t, "install-wait", transcript(args, r))
	if r.Code != 0 {
		t.Fatalf("exit %d", r.Code)
	}
}

// waitTimesOut: a proxy that cannot pull its image makes install fail
// after --wait, naming the pod and why.
func (f *fixture) waitTimesOut(t *testing.T) {
	ctx := f.ctx
	f.setDaemonSetStatus(t, 2)
	ds, err := f.cs.AppsV1().DaemonSets(MeshNamespace).Get(ctx, proxyName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "trellis-proxy-x7k2p", Namespace: MeshNamespace, Labels: ds.Spec.Template.Labels},
		Spec: *ds.Spec.Template.Spec.DeepCopy()}
	pod, err = f.cs.CoreV1().Pods(MeshNamespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod.Status.Phase = corev1.PodPending
	pod.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "proxy", Image: pod.Spec.Containers[0].Image,
		State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff", Message: fmt.Sprintf("Back-off pulling image %q", pod.Spec.Containers[0].Image)}}}}
	if _, err := f.cs.CoreV1().Pods(MeshNamespace).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.golden("install-timeout", f.kc, "", 1, "install", "--wait=2s")
	// The kubelet would finish deleting it; there is none.
	if err := f.cs.CoreV1().Pods(MeshNamespace).Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))}); err != nil {
		t.Fatal(err)
	}
	f.setDaemonSetStatus(t, 3)
}

// caPEM is a throwaway CA certificate, like the one the controller puts in
// the CRDs' caBundle.
func caPEM(t *testing.T) []byte {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "trellis-test-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
