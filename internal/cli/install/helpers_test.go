package install

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/cobra"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/trellis-mesh/trellis/e2e/testenv"
	"github.com/trellis-mesh/trellis/internal/cli/clienv"
	"github.com/trellis-mesh/trellis/internal/cli/clitest"
)

func TestMain(m *testing.M) {
	pollInterval = 10 * time.Millisecond
	os.Exit(testenv.Main(m))
}

// syncBuffer is a buffer a test can read while a command writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// run is clitest.Run with a stdin and a stdout the test may watch.
func run(t testing.TB, kubeconfig, stdin string, out io.Writer, args ...string) clitest.Result {
	t.Helper()
	if out == nil {
		out = &syncBuffer{}
	}
	var errb syncBuffer
	env := clienv.New(genericiooptions.IOStreams{In: strings.NewReader(stdin), Out: out, ErrOut: &errb})
	root := &cobra.Command{Use: "kubectl-trellis", SilenceUsage: true, SilenceErrors: true}
	env.AddFlags(root)
	root.AddCommand(Commands(env)...)
	if kubeconfig != "" {
		args = append([]string{"--kubeconfig", kubeconfig}, args...)
	}
	root.SetArgs(args)
	root.SetOut(out)
	root.SetErr(&errb)
	err := clienv.Normalize(root.Execute())
	clienv.Report(&errb, err)
	return clitest.Result{Out: fmt.Sprint(out), Err: errb.String(), Code: clienv.Code(err)}
}

// transcript is a command's output for a golden file.
func transcript(args []string, r clitest.Result) string {
	return fmt.Sprintf("$ kubectl trellis %s\n%s--- stderr\n%s--- exit %d\n", strings.Join(args, " "), r.Out, r.Err, r.Code)
}

// fixture talks to the test apiserver as an admin.
type fixture struct {
	t    *testing.T
	cfg  *rest.Config
	kc   string
	cs   kubernetes.Interface
	dyn  dynamic.Interface
	disc discovery.DiscoveryInterface
	ctx  context.Context
}

func newFixture(t *testing.T) *fixture {
	cfg := testenv.ControlPlane(t)
	f := &fixture{t: t, cfg: cfg, kc: clitest.Kubeconfig(t, cfg, "default"), ctx: context.Background()}
	f.cs = kubernetes.NewForConfigOrDie(cfg)
	quiet := rest.CopyConfig(cfg)
	quiet.WarningHandler = rest.NoWarnings{}
	f.dyn = dynamic.NewForConfigOrDie(quiet)
	f.disc = discovery.NewDiscoveryClientForConfigOrDie(cfg)
	return f
}

// golden runs kubectl trellis with kubeconfig and compares the transcript.
func (f *fixture) golden(name, kubeconfig, stdin string, wantCode int, args ...string) clitest.Result {
	f.t.Helper()
	r := run(f.t, kubeconfig, stdin, nil, args...)
	clitest.Golden(f.t, name, transcript(args, r))
	if r.Code != wantCode {
		f.t.Fatalf("exit %d, want %d:\n%s%s", r.Code, wantCode, r.Out, r.Err)
	}
	return r
}

// labelled lists every object in the cluster labelled part-of=trellis, of
// every resource type the apiserver serves, as "Kind namespace/name".
func (f *fixture) labelled() []string {
	f.t.Helper()
	var out []string
	for _, u := range f.labelledObjects() {
		out = append(out, u.GetKind()+" "+nsName(u.GetNamespace(), u.GetName()))
	}
	sort.Strings(out)
	return out
}

// labelledObjects are the objects labelled part-of=trellis, of every
// resource type the apiserver serves.
func (f *fixture) labelledObjects() []unstructured.Unstructured {
	f.t.Helper()
	lists, err := f.disc.ServerPreferredResources()
	if err != nil {
		f.t.Fatal(err)
	}
	var out []unstructured.Unstructured
	for _, l := range lists {
		gv, err := schema.ParseGroupVersion(l.GroupVersion)
		if err != nil {
			f.t.Fatal(err)
		}
		for _, r := range l.APIResources {
			if strings.Contains(r.Name, "/") || !hasVerb(r.Verbs, "list") {
				continue
			}
			items, err := f.dyn.Resource(gv.WithResource(r.Name)).List(f.ctx, metav1.ListOptions{LabelSelector: PartOfLabel + "=" + PartOfValue})
			if apierrors.IsNotFound(err) {
				continue // a CRD deleted since discovery
			}
			if err != nil {
				f.t.Fatalf("list %s: %v", r.Name, err)
			}
			for _, u := range items.Items {
				u.SetKind(r.Kind)
				out = append(out, u)
			}
		}
	}
	return out
}

// inNamespace lists every object in ns, of every namespaced type (errors
// are listed too: it runs on other goroutines than the test's).
func (f *fixture) inNamespace(ns string) []string {
	var out []string
	for _, o := range f.namespaceObjects(ns) {
		out = append(out, o.desc)
	}
	return out
}

type nsObject struct {
	desc string
	gvr  schema.GroupVersionResource
	name string
}

func (f *fixture) namespaceObjects(ns string) []nsObject {
	lists, err := f.disc.ServerPreferredNamespacedResources()
	if err != nil {
		return []nsObject{{desc: "discovery: " + err.Error()}}
	}
	var out []nsObject
	for _, l := range lists {
		gv, _ := schema.ParseGroupVersion(l.GroupVersion)
		for _, r := range l.APIResources {
			if strings.Contains(r.Name, "/") || !hasVerb(r.Verbs, "list") {
				continue
			}
			if r.Name == "events" {
				// Events (the apiserver's about the shadow Services, say) are
				// nobody's data, come and go on their own schedule, and leave
				// with the namespace; uninstall ignores them too.
				continue
			}
			items, err := f.dyn.Resource(gv.WithResource(r.Name)).Namespace(ns).List(f.ctx, metav1.ListOptions{})
			if apierrors.IsNotFound(err) {
				continue // a CRD deleted since discovery
			}
			if err != nil {
				out = append(out, nsObject{desc: "list " + r.Name + ": " + err.Error()})
				continue
			}
			for _, u := range items.Items {
				out = append(out, nsObject{desc: r.Kind + " " + u.GetName(), gvr: gv.WithResource(r.Name), name: u.GetName()})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].desc < out[j].desc })
	return out
}

// playNamespaceController stands in for kube-controller-manager's namespace
// controller, which the test apiserver lacks: once ns is terminating, it
// notes what uninstall left in it, deletes that, and finalizes the
// namespace. It returns what it found left.
func (f *fixture) playNamespaceController(ns string) <-chan []string {
	done := make(chan []string, 1)
	go func() {
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			n, err := f.cs.CoreV1().Namespaces().Get(f.ctx, ns, metav1.GetOptions{})
			if err == nil && n.DeletionTimestamp != nil {
				var left []string
				for _, o := range f.namespaceObjects(ns) {
					left = append(left, o.desc)
					if o.name != "" {
						if err := f.dyn.Resource(o.gvr).Namespace(ns).Delete(f.ctx, o.name, metav1.DeleteOptions{}); err != nil {
							left = append(left, "delete: "+err.Error())
						}
					}
				}
				n.Spec.Finalizers = nil
				if _, err := f.cs.CoreV1().Namespaces().Finalize(f.ctx, n, metav1.UpdateOptions{}); err != nil {
					left = append(left, "finalize: "+err.Error())
				}
				done <- left
				return
			}
			time.Sleep(5 * time.Millisecond) // polling the apiserver, bounded by the deadline
		}
		done <- []string{"namespace " + ns + " was never deleted"}
	}()
	return done
}

// user makes a ServiceAccount bound to the given ClusterRole rules and
// returns a kubeconfig that authenticates as it (a TokenRequest token).
func (f *fixture) user(name string, rules []rbacv1.PolicyRule) string {
	f.t.Helper()
	ctx := f.ctx
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}}
	if _, err := f.cs.CoreV1().ServiceAccounts("default").Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		f.t.Fatal(err)
	}
	cr := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "test-" + name}, Rules: rules}
	if _, err := f.cs.RbacV1().ClusterRoles().Create(ctx, cr, metav1.CreateOptions{}); err != nil {
		f.t.Fatal(err)
	}
	crb := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "test-" + name},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: cr.Name},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: "default"}}}
	if _, err := f.cs.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil {
		f.t.Fatal(err)
	}
	tr, err := f.cs.CoreV1().ServiceAccounts("default").CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(3600))}}, metav1.CreateOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	uc := &rest.Config{Host: f.cfg.Host, BearerToken: tr.Status.Token,
		TLSClientConfig: rest.TLSClientConfig{CAData: f.cfg.CAData, CAFile: f.cfg.CAFile}}
	// RBAC caches settle quickly, but poll until the binding is in effect.
	ucs := kubernetes.NewForConfigOrDie(uc)
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := ucs.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{})
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond) // polling, bounded by the deadline
	}
	return clitest.Kubeconfig(f.t, uc, "default")
}

// waitFor polls out until it contains s.
func waitFor(t *testing.T, out *syncBuffer, s string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(out.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("output never contained %q:\n%s", s, out.String())
		}
		time.Sleep(5 * time.Millisecond) // polling, bounded by the deadline
	}
}
