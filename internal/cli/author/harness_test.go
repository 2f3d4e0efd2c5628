package author

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/trellis-mesh/trellis/e2e/testenv"
	"github.com/trellis-mesh/trellis/internal/cli/clitest"
	"github.com/trellis-mesh/trellis/manifests/crds"
	"github.com/trellis-mesh/trellis/smi"
	"github.com/trellis-mesh/trellis/smi/conversion"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// cluster is the real test apiserver with admin clients and a kubeconfig
// for the commands.
type cluster struct {
	cfg        *rest.Config
	kube       kubernetes.Interface
	dyn        dynamic.Interface
	ext        apiextensionsclient.Interface
	disco      discovery.DiscoveryInterface
	kubeconfig string
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	cfg := testenv.ControlPlane(t)
	return &cluster{
		cfg:        cfg,
		kube:       kubernetes.NewForConfigOrDie(cfg),
		dyn:        dynamic.NewForConfigOrDie(cfg),
		ext:        apiextensionsclient.NewForConfigOrDie(cfg),
		disco:      discovery.NewDiscoveryClientForConfigOrDie(cfg),
		kubeconfig: clitest.Kubeconfig(t, cfg, "default"),
	}
}

// namespace creates a namespace (with labels) for one group of steps.
func (c *cluster) namespace(ctx context.Context, t *testing.T, name string, labels map[string]string) {
	t.Helper()
	_, err := c.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

// service creates a Service with the given ports (port:targetPort) and
// annotations.
func (c *cluster) service(ctx context.Context, t *testing.T, ns, name string, ann map[string]string, ports ...[2]int32) {
	t.Helper()
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Annotations: ann,
		Labels: map[string]string{"app": name}}, Spec: corev1.ServiceSpec{Selector: map[string]string{"app": name}}}
	for i, p := range ports {
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: fmt.Sprintf("p%d", i), Port: p[0], TargetPort: intstr.FromInt32(p[1])})
	}
	if _, err := c.kube.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func (c *cluster) serviceAccount(ctx context.Context, t *testing.T, ns, name string) {
	t.Helper()
	_, err := c.kube.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

// get reads an SMI object at the newest served version, or nil.
func (c *cluster) get(ctx context.Context, t *testing.T, kind smi.Kind, ns, name string) *unstructured.Unstructured {
	t.Helper()
	served, err := smi.Discover(c.disco)
	if err != nil {
		t.Fatal(err)
	}
	gvr, ok := served.GVR(kind)
	if !ok {
		t.Fatalf("%s not served", kind)
	}
	u, err := c.dyn.Resource(gvr).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// names lists the SMI objects of a kind in a namespace.
func (c *cluster) names(ctx context.Context, t *testing.T, kind smi.Kind, ns string) []string {
	t.Helper()
	served, err := smi.Discover(c.disco)
	if err != nil {
		t.Fatal(err)
	}
	gvr, ok := served.GVR(kind)
	if !ok {
		return nil
	}
	l, err := c.dyn.Resource(gvr).Namespace(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, u := range l.Items {
		out = append(out, u.GetName())
	}
	return out
}

// decode reads an SMI object from the cluster into the model.
func (c *cluster) decode(ctx context.Context, t *testing.T, kind smi.Kind, ns, name string) smi.Object {
	t.Helper()
	u := c.get(ctx, t, kind, ns, name)
	if u == nil {
		t.Fatalf("%s %s/%s does not exist", kind, ns, name)
	}
	obj, ps := smi.Decode(u)
	if smi.HasErrors(ps) {
		t.Fatalf("%s %s/%s is invalid: %v", kind, ns, name, ps)
	}
	return obj
}

// step is one command run, its golden output and what it must leave in the
// cluster.
type step struct {
	name       string // golden file: testdata/<group>/<name>.golden
	args       []string
	code       int
	kubeconfig string // default: the admin's
	check      func(t *testing.T)
}

// runSteps runs steps in order; each one's stdout, stderr and exit code are
// compared with its golden file.
func (c *cluster) runSteps(t *testing.T, group string, steps []step) {
	t.Helper()
	for _, s := range steps {
		kc := s.kubeconfig
		if kc == "" {
			kc = c.kubeconfig
		}
		r := clitest.Run(t, Commands, kc, s.args...)
		got := fmt.Sprintf("$ kubectl trellis %s\nexit %d\n--- stdout\n%s--- stderr\n%s", strings.Join(s.args, " "), r.Code, normalize(r.Out), normalize(r.Err))
		clitest.Golden(t, group+"/"+s.name, got)
		if r.Code != s.code {
			t.Fatalf("%s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", s.name, r.Code, s.code, r.Out, r.Err)
		}
		if s.code != 0 && strings.Count(strings.TrimSpace(r.Err), "\n") != 0 {
			t.Errorf("%s: the error is not one line:\n%s", s.name, r.Err)
		}
		if s.check != nil {
			s.check(t)
		}
	}
}

var volatile = []struct {
	re   *regexp.Regexp
	repl string
}{
	{regexp.MustCompile(`(uid"?: "?)[0-9a-f-]{36}`), "${1}<uid>"},
	{regexp.MustCompile(`(resourceVersion"?: )"[0-9]+"`), `${1}"<rv>"`},
	{regexp.MustCompile(`(creationTimestamp"?: )"[^"]+"`), `${1}"<time>"`},
}

// normalize replaces what changes from run to run (uids, resource
// versions, times) so goldens are stable.
func normalize(s string) string {
	for _, v := range volatile {
		s = v.re.ReplaceAllString(s, v.repl)
	}
	return s
}

// ---------------------------------------------------------------- CRDs

// installCRDs creates CRDs and waits until they are established and
// discovery shows want (kind -> newest served version).
func (c *cluster) installCRDs(ctx context.Context, t *testing.T, list []*apiextensionsv1.CustomResourceDefinition, want map[smi.Kind]string) {
	t.Helper()
	for _, crd := range list {
		if _, err := c.ext.ApiextensionsV1().CustomResourceDefinitions().Create(ctx, crd, metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating CRD %s: %v", crd.Name, err)
		}
	}
	for _, crd := range list {
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			got, err := c.ext.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, crd.Name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			for _, cond := range got.Status.Conditions {
				if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
					return true, nil
				}
				if cond.Type == apiextensionsv1.NamesAccepted && cond.Status == apiextensionsv1.ConditionFalse {
					return false, errors.New(cond.Message)
				}
			}
			return false, nil
		})
		if err != nil {
			t.Fatalf("CRD %s not established: %v", crd.Name, err)
		}
	}
	c.waitServed(ctx, t, want)
}

func (c *cluster) waitServed(ctx context.Context, t *testing.T, want map[smi.Kind]string) {
	t.Helper()
	var served smi.Served
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		var err error
		if served, err = smi.Discover(c.disco); err != nil {
			return false, nil //nolint:nilerr // keep polling until the deadline
		}
		for _, ki := range smi.Kinds {
			got, _ := served.Newest(ki.Kind)
			if got != want[ki.Kind] {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("discovery never showed %v (last: %v)", want, served)
	}
}

func (c *cluster) deleteCRDs(ctx context.Context, t *testing.T, list []*apiextensionsv1.CustomResourceDefinition) {
	t.Helper()
	for _, crd := range list {
		if err := c.ext.ApiextensionsV1().CustomResourceDefinitions().Delete(ctx, crd.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatalf("deleting CRD %s: %v", crd.Name, err)
		}
	}
	for _, crd := range list {
		err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
			_, err := c.ext.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, crd.Name, metav1.GetOptions{})
			return apierrors.IsNotFound(err), nil
		})
		if err != nil {
			t.Fatalf("CRD %s not deleted: %v", crd.Name, err)
		}
	}
	c.waitServed(ctx, t, map[smi.Kind]string{})
}

// shippedCRDs are manifests/crds with conversion pointed at a webhook in
// this process (the apiserver calls it over TLS on loopback), as the
// controller serves it in a real install.
func shippedCRDs(t *testing.T) []*apiextensionsv1.CustomResourceDefinition {
	t.Helper()
	list, err := crds.Load()
	if err != nil {
		t.Fatal(err)
	}
	hook := httptest.NewTLSServer(conversion.Handler{})
	t.Cleanup(hook.Close)
	url := hook.URL + crds.ConversionPath
	crds.SetConversion(list, apiextensionsv1.WebhookClientConfig{
		URL:      &url,
		CABundle: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: hook.Certificate().Raw}),
	})
	return list
}

// oldCRDs serve only the versions Traefik Mesh left behind: TrafficSplit
// and TrafficTarget v1alpha2, HTTPRouteGroup and TCPRoute v1alpha3.
func oldCRDs(t *testing.T) []*apiextensionsv1.CustomResourceDefinition {
	t.Helper()
	shipped, err := crds.Load()
	if err != nil {
		t.Fatal(err)
	}
	var out []*apiextensionsv1.CustomResourceDefinition
	for _, crd := range shipped {
		v, ok := oldVersions[crd.Spec.Names.Kind]
		if !ok {
			continue
		}
		for _, ver := range crd.Spec.Versions {
			if ver.Name == v {
				ver.Storage = true
				crd.Spec.Versions = []apiextensionsv1.CustomResourceDefinitionVersion{ver}
			}
		}
		crd.Spec.Conversion = &apiextensionsv1.CustomResourceConversion{Strategy: apiextensionsv1.NoneConverter}
		out = append(out, crd)
	}
	return out
}

var oldVersions = map[string]string{
	"TrafficSplit":   "v1alpha2",
	"TrafficTarget":  "v1alpha2",
	"HTTPRouteGroup": "v1alpha3",
	"TCPRoute":       "v1alpha3",
}

func newestVersions() map[smi.Kind]string {
	out := map[smi.Kind]string{}
	for _, ki := range smi.Kinds {
		out[ki.Kind] = ki.Newest()
	}
	return out
}

// ---------------------------------------------------------------- RBAC

// limitedUser creates a ServiceAccount bound to a Role with rules in ns,
// and returns a kubeconfig that authenticates with its token: a user with
// only the permissions the test gives it.
func (c *cluster) limitedUser(ctx context.Context, t *testing.T, ns, name string, rules []rbacv1.PolicyRule) string {
	t.Helper()
	c.serviceAccount(ctx, t, ns, name)
	if _, err := c.kube.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Rules: rules}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.kube.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: ns}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	exp := int64(3600)
	tr, err := c.kube.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ucfg := rest.AnonymousClientConfig(c.cfg)
	ucfg.BearerToken = tr.Status.Token
	// Wait until the role binding is in the authorizer's cache.
	kube := kubernetes.NewForConfigOrDie(ucfg)
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := kube.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
		return err == nil, nil
	})
	if err != nil {
		t.Fatalf("user %s/%s cannot list Services: %v", ns, name, err)
	}
	return clitest.Kubeconfig(t, ucfg, ns)
}
