package inspect

// The fixture: a real etcd + kube-apiserver (e2e/testenv) holding a real
// Trellis install (manifests/base, status set through the status
// subresource since nothing runs pods here), the real controller
// (controller/app, in this process, against that apiserver: real leader
// Lease, real TokenReview and SubjectAccessReview of the CLI's tokens,
// real CoreDNS edit), and one real proxy admin handler (node-proxy/admin)
// per proxy pod, serving the config the controller compiled for its node.
// The apiserver will not proxy to loopback pod IPs, so pod reads go through
// testPods, which maps pod:port to those loopback servers.

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	appsv1 "k8s.io/api/apps/v1"
	authnv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/trellis-mesh/trellis/controller/app"
	"github.com/trellis-mesh/trellis/controller/serve"
	"github.com/trellis-mesh/trellis/controller/settings"
	"github.com/trellis-mesh/trellis/e2e/testenv"
	"github.com/trellis-mesh/trellis/internal/cli/clienv"
	"github.com/trellis-mesh/trellis/internal/cli/clitest"
	"github.com/trellis-mesh/trellis/internal/kube"
	"github.com/trellis-mesh/trellis/internal/version"
	"github.com/trellis-mesh/trellis/manifests/crds"
	"github.com/trellis-mesh/trellis/node-proxy/admin"
	"github.com/trellis-mesh/trellis/node-proxy/config"
)

func TestMain(m *testing.M) {
	// One version for the client, the controller and the proxies, which
	// all run in this process.
	version.Version = "v0.0.0-test"
	os.Exit(testenv.Main(m))
}

const corefile = `.:53 {
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       fallthrough in-addr.arpa ip6.arpa
    }
    forward . /etc/resolv.conf
    cache 30
    reload
}
`

// receivedAgo is how long ago every test proxy says it applied its config.
const receivedAgo = 20 * time.Minute

// created is must for a create that an earlier run in this test binary
// (-count) may have done already.
func created[T any](v T, err error) {
	if err != nil && !apierrors.IsAlreadyExists(err) {
		panic(err)
	}
}

// must panics on setup errors (the test fails with the stack).
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// poll calls f until it returns "" or the deadline passes.
func poll(t testing.TB, what string, d time.Duration, f func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	last := ""
	for time.Now().Before(deadline) {
		if last = f(); last == "" {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: still not true after %s: %s", what, d, last)
}

// testPods is the tests' podGetter: real HTTP to loopback servers, with
// the pod's error answers as *podError, like apiserverProxy.
type testPods struct {
	mu      sync.Mutex
	servers map[string]string // "ns/pod:port" -> base URL
	hits    map[string]int    // "ns/pod:port path" -> count
}

var _ podGetter = (*testPods)(nil)

func (p *testPods) set(ns, pod string, port int, url string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.servers[fmt.Sprintf("%s/%s:%d", ns, pod, port)] = url
}

func (p *testPods) PodGet(ctx context.Context, ns, pod string, port int, path string, header http.Header) ([]byte, error) {
	key := fmt.Sprintf("%s/%s:%d", ns, pod, port)
	p.mu.Lock()
	url, ok := p.servers[key]
	p.hits[key+" "+path]++
	p.mu.Unlock()
	if !ok {
		// What the apiserver says when nothing listens there.
		return nil, clienv.APIError(fmt.Sprintf("GET %s from pod %s/%s port %d", path, ns, pod, port),
			apierrors.NewServiceUnavailable(fmt.Sprintf("error trying to reach service: dial tcp %s:%d: connect: connection refused", pod, port)))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+path, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		return nil, &podError{Code: resp.StatusCode, Msg: podMessage(b)}
	}
	return b, nil
}

// proxyState is a proxy's admin.State: the config the controller compiled
// for the node (so always current), or a fixed older one.
type proxyState struct {
	node     string
	hub      *serve.Hub
	stale    *config.Config
	rejected string
}

var _ admin.State = (*proxyState)(nil)

func (p *proxyState) live() *config.Config {
	if p.stale != nil {
		return p.stale
	}
	res, _, _ := p.hub.Current()
	n := res.Node(p.node)
	if n == nil {
		return nil
	}
	c, err := config.DecodeBytes(n.JSON())
	if err != nil {
		panic(err)
	}
	return c
}

func (p *proxyState) Ready() string {
	if p.live() == nil {
		return "no config received yet"
	}
	return ""
}

func (p *proxyState) Live() (*config.Config, time.Time) {
	return p.live(), time.Now().Add(-receivedAgo)
}

func (p *proxyState) LastRejection() (string, time.Time) {
	if p.rejected == "" {
		return "", time.Time{}
	}
	return p.rejected, time.Now().Add(-receivedAgo / 2)
}

type fixture struct {
	cfg   *rest.Config
	kube  kubernetes.Interface
	dyn   dynamic.Interface
	ctl   *app.Controller
	serve string // the controller's address
	pods  *testPods
	admin string // admin kubeconfig, context namespace shop
}

// newFixture builds the fixture for one test, which owns it (the
// controller stops when that test ends).
func newFixture(t *testing.T) *fixture {
	cfg := testenv.ControlPlane(t)
	ctx := context.Background()
	f := &fixture{cfg: cfg, kube: kubernetes.NewForConfigOrDie(cfg), dyn: dynamic.NewForConfigOrDie(cfg),
		pods: &testPods{servers: map[string]string{}, hits: map[string]int{}}}
	f.admin = clitest.Kubeconfig(t, cfg, "shop")

	// The CRDs Trellis ships; conversion between versions needs no
	// webhook here (no controller serves it).
	ext := apiextensionsclient.NewForConfigOrDie(cfg)
	all := must(crds.Load())
	for _, c := range all {
		c.Spec.Conversion = &apiextensionsv1.CustomResourceConversion{Strategy: apiextensionsv1.NoneConverter}
		if _, err := ext.ApiextensionsV1().CustomResourceDefinitions().Create(ctx, c, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	poll(t, "CRDs established", 30*time.Second, func() string {
		for _, c := range all {
			got, err := ext.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, c.Name, metav1.GetOptions{})
			if err != nil {
				return err.Error()
			}
			est := false
			for _, cond := range got.Status.Conditions {
				est = est || (cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue)
			}
			if !est {
				return c.Name + " not established"
			}
		}
		return ""
	})

	applier := must(kube.NewApplier(cfg, "inspect-test"))
	// The install, from the real manifests.
	objs := must(manifestObjects("trellis-system"))
	var install []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() != "CustomResourceDefinition" {
			install = append(install, o)
		}
	}
	namespacesFirst(install)
	if err := applier.Apply(ctx, install); err != nil {
		t.Fatal(err)
	}
	created(f.kube.CoreV1().ConfigMaps("kube-system").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "coredns", Namespace: "kube-system"},
		Data: map[string]string{"Corefile": corefile}}, metav1.CreateOptions{}))

	// The workloads.
	b := must(os.ReadFile("testdata/cluster.yaml"))
	if err := applier.Apply(ctx, must(kube.Decode(b))); err != nil {
		t.Fatal(err)
	}
	for _, p := range []struct{ ns, name, ip string }{
		{"shop", "web-v1-a", "10.1.0.10"}, {"shop", "web-v2-b", "10.2.0.20"}, {"shop", "db-b", "10.2.0.30"},
		{"shop", "client-a", "10.1.0.11"}, {"other", "api-a", "10.1.0.20"},
	} {
		f.setPodStatus(t, p.ns, p.name, p.ip, true)
	}

	// Mesh namespaces: trellis-system is the real install; the others are
	// copies in a chosen state, whose controller pods reach the same
	// controller.
	f.meshNamespace(t, "trellis-system", meshState{})
	f.meshNamespace(t, "mesh-unready", meshState{controllerUnready: true, lease: "trellis-controller-0"})
	f.meshNamespace(t, "mesh-noleader", meshState{lease: "-"})
	f.meshNamespace(t, "mesh-behind", meshState{lease: "trellis-controller-1", surge: true})
	f.meshNamespace(t, "mesh-nobinding", meshState{lease: "trellis-controller-0", noCLIBinding: true})
	f.people(t)

	// The controller, with the shipped settings.
	var s settings.Settings
	for _, o := range objs {
		if o.GetKind() == "ConfigMap" && o.GetName() == "trellis-controller" {
			data, _, _ := unstructured.NestedString(o.Object, "data", "settings.yaml")
			s = must(settings.Parse([]byte(data)))
		}
	}
	addrs := make(chan net.Addr, 1)
	ctl, err := app.New(app.Options{
		Settings: s, Kube: f.kube, Dynamic: f.dyn, Discovery: discovery.NewDiscoveryClientForConfigOrDie(cfg),
		Identity: "trellis-controller-0", ServeAddr: "127.0.0.1:0",
		LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 300 * time.Millisecond,
		Log:      zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel)).Named("controller"),
		OnListen: func(s, _ net.Addr) { addrs <- s },
	})
	if err != nil {
		t.Fatal(err)
	}
	f.ctl = ctl
	cctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ctl.Run(cctx) }()
	select {
	case a := <-addrs:
		f.serve = "http://" + a.String()
	case err := <-done:
		t.Fatalf("controller: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("the controller did not listen")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("controller stopped with %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("the controller did not stop")
		}
	})

	// Proxy admin servers: one per proxy pod; the scenario namespaces'
	// controller pods all reach the one controller.
	proxyServer := func(ns, n string, st *proxyState) {
		srv := httptest.NewServer(admin.Handler(st, prometheus.NewRegistry()))
		t.Cleanup(srv.Close)
		f.pods.set(ns, "trellis-proxy-"+n, 15000, srv.URL)
	}
	for _, ns := range []string{"trellis-system", "mesh-unready", "mesh-noleader", "mesh-behind", "mesh-nobinding"} {
		for _, c := range []string{"trellis-controller-0", "trellis-controller-1"} {
			f.pods.set(ns, c, 9000, f.serve)
		}
		for _, n := range []string{"a", "b"} {
			if ns != "mesh-behind" || n != "b" {
				proxyServer(ns, n, &proxyState{node: "node-" + n, hub: ctl.Hub()})
			}
		}
	}

	// Settled: the leader holds the Lease, edited CoreDNS, wrote the shadow
	// Services (db's TCP port is assigned) and found no problem.
	poll(t, "the mesh settles", 90*time.Second, func() string {
		if res, _, _ := ctl.Hub().Current(); res == nil || len(res.Pending) > 0 {
			return "TCP ports still waiting for their proxy port"
		}
		r := clitest.Run(t, f.commands, f.admin, "check")
		if r.Code != 0 {
			return r.Out + r.Err
		}
		return ""
	})
	// A proxy behind: it holds the settled config as it was before the
	// split changed, and rejected the next one.
	proxyServer("mesh-behind", "b", &proxyState{node: "node-b", stale: f.staleConfig(t, "node-b"),
		rejected: "services[1].ports[0].listenPort: 20000 is in use by another process on the node"})
	return f
}

// staleConfig is the node's current config with web's split at 50/50: what
// the proxy held before the TrafficSplit changed to 90/10.
func (f *fixture) staleConfig(t *testing.T, node string) *config.Config {
	var c *config.Config
	poll(t, "a config for "+node, 60*time.Second, func() string {
		res, _, _ := f.ctl.Hub().Current()
		n := res.Node(node)
		if n == nil {
			return "none yet"
		}
		c = must(config.DecodeBytes(n.JSON()))
		return ""
	})
	for i := range c.Services {
		if sp := c.Services[i].Split; sp != nil {
			for j := range sp.Backends {
				sp.Backends[j].Weight = 50
			}
		}
	}
	c.Version = c.Hash()
	return c
}

func (f *fixture) commands(env *clienv.Env) []*cobra.Command {
	return commands(env, deps{pods: f.pods, now: time.Now})
}

func (f *fixture) setPodStatus(t *testing.T, ns, name, ip string, ready bool) {
	ctx := context.Background()
	p := must(f.kube.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{}))
	cond := corev1.ConditionTrue
	if !ready {
		cond = corev1.ConditionFalse
	}
	p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: cond}}}
	must(f.kube.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}))
}

type meshState struct {
	controllerUnready bool
	// lease is the holder to write into a fresh Lease; "-" writes a
	// released one; "" leaves the Lease to the real controller.
	lease string
	// noCLIBinding leaves trellis-cli without the debug API's RBAC.
	noCLIBinding bool
	// surge adds a third proxy pod whose admin port does not answer.
	surge bool
}

// meshNamespace installs Trellis's namespaced objects in ns (the real
// manifests, moved there), its controller and proxy pods, their statuses
// and the Lease.
func (f *fixture) meshNamespace(t *testing.T, ns string, st meshState) {
	ctx := context.Background()
	if ns != "trellis-system" {
		applier := must(kube.NewApplier(f.cfg, "inspect-test"))
		var objs []*unstructured.Unstructured
		for _, o := range must(manifestObjects(ns)) {
			if o.GetNamespace() == ns || (o.GetKind() == "Namespace" && o.GetName() == ns) {
				objs = append(objs, o)
			}
		}
		namespacesFirst(objs)
		if err := applier.Apply(ctx, objs); err != nil {
			t.Fatal(err)
		}
		// The trellis-cli ServiceAccount of this namespace may read the
		// debug API, as in trellis-system.
		if !st.noCLIBinding {
			created(f.kube.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: "trellis-cli-" + ns},
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "trellis-cli"},
				Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "trellis-cli", Namespace: ns}},
			}, metav1.CreateOptions{}))
		}
	}
	dep := must(f.kube.AppsV1().Deployments(ns).Get(ctx, controllerName, metav1.GetOptions{}))
	ds := must(f.kube.AppsV1().DaemonSets(ns).Get(ctx, proxyName, metav1.GetOptions{}))
	for i, node := range []string{"node-a", "node-b"} {
		f.pod(t, ns, fmt.Sprintf("trellis-controller-%d", i), node, dep.Spec.Template, fmt.Sprintf("10.%d.0.%d", i+1, 100+len(ns)), !st.controllerUnready)
		f.pod(t, ns, "trellis-proxy-"+node[len(node)-1:], node, ds.Spec.Template, fmt.Sprintf("10.%d.0.%d", i+1, 200+len(ns)), true)
	}
	if st.surge {
		// A rolling update's new proxy, started but not answering yet.
		f.pod(t, ns, "trellis-proxy-c", "node-b", ds.Spec.Template, "10.2.0.250", false)
	}
	ready := int32(2)
	if st.controllerUnready {
		ready = 0
	}
	dep.Status = appsv1.DeploymentStatus{ObservedGeneration: dep.Generation, Replicas: 2, UpdatedReplicas: 2, ReadyReplicas: ready, AvailableReplicas: ready}
	if ready == 0 {
		dep.Status.UnavailableReplicas = 2
	}
	must(f.kube.AppsV1().Deployments(ns).UpdateStatus(ctx, dep, metav1.UpdateOptions{}))
	ds.Status = appsv1.DaemonSetStatus{ObservedGeneration: ds.Generation, DesiredNumberScheduled: 2, CurrentNumberScheduled: 2, UpdatedNumberScheduled: 2, NumberReady: 2, NumberAvailable: 2}
	must(f.kube.AppsV1().DaemonSets(ns).UpdateStatus(ctx, ds, metav1.UpdateOptions{}))
	if st.lease != "" {
		holder := st.lease
		if holder == "-" {
			holder = ""
		}
		dur := int32(3600)
		now := metav1.NewMicroTime(time.Now())
		created(f.kube.CoordinationV1().Leases(ns).Create(ctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: controllerName},
			Spec:       coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &dur, AcquireTime: &now, RenewTime: &now},
		}, metav1.CreateOptions{}))
	}
}

// namespacesFirst orders Namespaces before what they hold.
func namespacesFirst(objs []*unstructured.Unstructured) {
	sort.SliceStable(objs, func(i, j int) bool { return objs[i].GetKind() == "Namespace" && objs[j].GetKind() != "Namespace" })
}

func (f *fixture) pod(t *testing.T, ns, name, node string, tmpl corev1.PodTemplateSpec, ip string, ready bool) {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: tmpl.Labels}, Spec: *tmpl.Spec.DeepCopy()}
	p.Spec.NodeName = node
	created(f.kube.CoreV1().Pods(ns).Create(context.Background(), p, metav1.CreateOptions{}))
	f.setPodStatus(t, ns, name, ip, ready)
}

// people are users with bearer tokens and various RBAC: name -> kubeconfig.
var people = map[string]string{}

// people creates ServiceAccounts in the people namespace that stand for
// users, binds them as named, and writes a kubeconfig with a token for each.
func (f *fixture) people(t *testing.T) {
	ctx := context.Background()
	role := func(name string, rules ...rbacv1.PolicyRule) {
		created(f.kube.RbacV1().Roles("trellis-system").Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: rules}, metav1.CreateOptions{}))
	}
	reads := rbacv1.PolicyRule{APIGroups: []string{"apps"}, Resources: []string{"deployments", "daemonsets"}, Verbs: []string{"get", "list"}}
	leases := rbacv1.PolicyRule{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get"}}
	proxy := rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"pods/proxy"}, Verbs: []string{"get"}}
	role("test-reads", reads, leases)
	role("test-reads-proxy", reads, leases, proxy)
	for _, u := range []struct {
		name         string
		clusterRoles []string
		roles        []string // in trellis-system
	}{
		{name: "nobody"},
		{name: "noproxy", clusterRoles: []string{"trellis-cli-user"}, roles: []string{"test-reads"}},
		{name: "notoken", clusterRoles: []string{"trellis-cli-user"}, roles: []string{"test-reads-proxy"}},
		{name: "user", clusterRoles: []string{"trellis-cli-user"}, roles: []string{"trellis-cli-user"}},
		{name: "debugger", clusterRoles: []string{"trellis-cli-user", "trellis-debug"}, roles: []string{"test-reads-proxy"}},
	} {
		created(f.kube.CoreV1().ServiceAccounts("people").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: u.name}}, metav1.CreateOptions{}))
		subj := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: u.name, Namespace: "people"}}
		for _, cr := range u.clusterRoles {
			created(f.kube.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "people-" + u.name + "-" + cr},
				RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: cr}, Subjects: subj}, metav1.CreateOptions{}))
		}
		for _, r := range u.roles {
			created(f.kube.RbacV1().RoleBindings("trellis-system").Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "people-" + u.name + "-" + r},
				RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: r}, Subjects: subj}, metav1.CreateOptions{}))
		}
		exp := int64(3600)
		tok := must(f.kube.CoreV1().ServiceAccounts("people").CreateToken(ctx, u.name, &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{}))
		rc := &rest.Config{Host: f.cfg.Host, BearerToken: tok.Status.Token,
			TLSClientConfig: rest.TLSClientConfig{CAData: f.cfg.CAData, CAFile: f.cfg.CAFile}}
		people[u.name] = clitest.Kubeconfig(t, rc, "shop")
	}
}

var (
	timestamps = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)`)
	hashes     = regexp.MustCompile(`sha256-tree:[0-9a-f]+`)
)

// normalise replaces what changes between runs: times, and config
// versions (content hashes that any change to the config contract moves).
func normalise(s string) string {
	s = timestamps.ReplaceAllString(s, "<time>")
	// Same length, so that table columns stay aligned.
	return hashes.ReplaceAllStringFunc(s, func(h string) string {
		return "sha256-tree:" + strings.Repeat("x", len(h)-len("sha256-tree:"))
	})
}

// golden runs the command and compares stdout, stderr and the exit code
// with testdata/<name>.golden.
func (f *fixture) golden(t *testing.T, name, kubeconfig string, wantCode int, args ...string) clitest.Result {
	t.Helper()
	r := clitest.Run(t, f.commands, kubeconfig, args...)
	got := fmt.Sprintf("$ kubectl trellis %s\n%s", strings.Join(args, " "), r.Out)
	if r.Err != "" {
		got += "--- stderr\n" + r.Err
	}
	got += fmt.Sprintf("--- exit %d\n", r.Code)
	clitest.Golden(t, name, normalise(got))
	if r.Code != wantCode {
		t.Errorf("exit %d, want %d", r.Code, wantCode)
	}
	return r
}
