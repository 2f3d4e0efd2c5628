package author

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/smi"
	"github.com/trellis-mesh/trellis/smi/annotations"
)

// TestCommands runs every command against the real apiserver: first on a
// cluster that only has the old SMI versions Traefik Mesh left behind, then
// with the CRDs Trellis ships. Each step's output is a golden file, and
// each step checks what it left in the cluster, down to the decisions
// Trellis's policy code makes from the objects written.
func TestCommands(t *testing.T) {
	c := newCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	old := oldCRDs(t)
	c.installCRDs(ctx, t, old, map[smi.Kind]string{
		smi.KindTrafficSplit: "v1alpha2", smi.KindTrafficTarget: "v1alpha2", smi.KindHTTPRouteGroup: "v1alpha3", smi.KindTCPRoute: "v1alpha3",
	})
	t.Run("old SMI versions", func(t *testing.T) { testOldVersions(ctx, t, c) })
	c.deleteCRDs(ctx, t, old)
	t.Run("no SMI CRDs", func(t *testing.T) {
		c.runSteps(t, "nocrds", []step{
			{name: "split", args: []string{"split", "web", "-n", "legacy", "--to", "web-v1=100"}, code: 4},
			{name: "deny", args: []string{"deny", "--from", "sa/legacy/a", "--to", "sa/legacy/b"}, code: 4},
		})
	})

	c.installCRDs(ctx, t, shippedCRDs(t), newestVersions())
	t.Run("join and leave", func(t *testing.T) { testMembership(ctx, t, c) })
	t.Run("split", func(t *testing.T) { testSplit(ctx, t, c) })
	t.Run("allow and deny", func(t *testing.T) { testAccess(ctx, t, c) })
	t.Run("RBAC", func(t *testing.T) { testRBAC(ctx, t, c) })
}

// ---------------------------------------------------------------- checks

// policy is what the controller would compile from namespace ns: every SMI
// object there (newest served versions) and its Services.
func (c *cluster) policy(ctx context.Context, t *testing.T, ns string) *smi.Policy {
	t.Helper()
	served, err := smi.Discover(c.disco)
	if err != nil {
		t.Fatal(err)
	}
	var objs []smi.Object
	for _, ki := range smi.Kinds {
		gvr, ok := served.GVR(ki.Kind)
		if !ok {
			continue
		}
		l, err := c.dyn.Resource(gvr).Namespace(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for i := range l.Items {
			o, ps := smi.Decode(&l.Items[i])
			if smi.HasErrors(ps) {
				t.Errorf("%s %s/%s written by the CLI is invalid: %v", ki.Kind, ns, l.Items[i].GetName(), ps)
			}
			if o != nil {
				objs = append(objs, o)
			}
		}
	}
	sl, err := c.kube.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var svcs []*corev1.Service
	for i := range sl.Items {
		svcs = append(svcs, &sl.Items[i])
	}
	return smi.NewPolicy(objs, svcs)
}

// wantSplit checks where Trellis sends req to root: backend -> weight, or
// nil for "to the root Service".
func wantSplit(t *testing.T, pol *smi.Policy, ns, root string, req smi.Request, want map[string]int64) {
	t.Helper()
	d := pol.Split(ns, root, req)
	if want == nil {
		if !d.ToRoot {
			t.Errorf("Split(%s/%s, %v) = %+v, want all traffic to the root Service", ns, root, req, d)
		}
		return
	}
	got := map[string]int64{}
	for _, b := range d.Backends {
		got[b.Service] += b.Weight
	}
	if d.ToRoot || len(got) != len(want) {
		t.Errorf("Split(%s/%s, %v) = %+v, want %v", ns, root, req, d, want)
		return
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("Split(%s/%s, %v): %s gets %d, want %d", ns, root, req, k, got[k], v)
		}
	}
}

func wantAllowed(t *testing.T, pol *smi.Policy, src, dst smi.Identity, req smi.Request, want bool) {
	t.Helper()
	if got, why := pol.Allowed(src, dst, req); got != want {
		t.Errorf("Allowed(%s -> %s, %v) = %v (%s), want %v", src, dst, req, got, why, want)
	}
}

func httpReq(port int32, method, path string, header ...string) smi.Request {
	h := http.Header{}
	for i := 0; i+1 < len(header); i += 2 {
		h.Set(header[i], header[i+1])
	}
	return smi.Request{Protocol: smi.HTTP, Port: port, Method: method, Path: path, Header: h}
}

func (c *cluster) wantNames(ctx context.Context, t *testing.T, kind smi.Kind, ns string, want ...string) {
	t.Helper()
	got := c.names(ctx, t, kind, ns)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("%s in %s: %v, want %v", kind, ns, got, want)
	}
}

func (c *cluster) meshAnnotation(ctx context.Context, t *testing.T, ns, name string) (string, bool) {
	t.Helper()
	svc, err := c.kube.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	v, ok := svc.Annotations[annotations.Mesh]
	return v, ok
}

func (c *cluster) create(ctx context.Context, t *testing.T, kind smi.Kind, manifest string) {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(manifest), &u.Object); err != nil {
		t.Fatal(err)
	}
	served, err := smi.Discover(c.disco)
	if err != nil {
		t.Fatal(err)
	}
	gvr, _ := served.GVR(kind)
	if _, err := c.dyn.Resource(gvr).Namespace(u.GetNamespace()).Create(ctx, u, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func sources(t *testing.T, o smi.Object) []string {
	t.Helper()
	tt, ok := o.(*smi.TrafficTarget)
	if !ok {
		t.Fatalf("%T is not a TrafficTarget", o)
	}
	var out []string
	for _, s := range tt.Sources {
		out = append(out, s.String())
	}
	return out
}

// ---------------------------------------------------------------- old versions

func testOldVersions(ctx context.Context, t *testing.T, c *cluster) {
	ns := "legacy"
	c.namespace(ctx, t, ns, map[string]string{annotations.NamespaceLabel: "enabled"})
	for _, s := range []string{"web", "web-v1", "web-v2"} {
		c.service(ctx, t, ns, s, nil, [2]int32{80, 8080})
	}
	c.serviceAccount(ctx, t, ns, "a")
	c.serviceAccount(ctx, t, ns, "b")
	a, b := smi.Identity{Namespace: ns, Name: "a"}, smi.Identity{Namespace: ns, Name: "b"}
	c.runSteps(t, "old", []step{
		{name: "split-v1alpha2", args: []string{"split", "web", "-n", ns, "--to", "web-v1=90,web-v2=10", "-o", "yaml"}, check: func(t *testing.T) {
			if v := c.get(ctx, t, smi.KindTrafficSplit, ns, "web").GetAPIVersion(); v != "split.smi-spec.io/v1alpha2" {
				t.Errorf("written as %s", v)
			}
			wantSplit(t, c.policy(ctx, t, ns), ns, "web", httpReq(80, "GET", "/"), map[string]int64{"web-v1": 90, "web-v2": 10})
		}},
		{name: "split-match-needs-v1alpha3", args: []string{"split", "web", "-n", ns, "--to", "web-v2=100", "--match", "header:x-canary=true"}, code: 4, check: func(t *testing.T) {
			c.wantNames(ctx, t, smi.KindHTTPRouteGroup, ns)
			wantSplit(t, c.policy(ctx, t, ns), ns, "web", httpReq(80, "GET", "/", "x-canary", "true"), map[string]int64{"web-v1": 90, "web-v2": 10})
		}},
		{name: "allow-one-port", args: []string{"allow", "--from", "sa/legacy/a", "--to", "sa/legacy/b", "--ports", "5432", "-o", "yaml"}, check: func(t *testing.T) {
			pol := c.policy(ctx, t, ns)
			wantAllowed(t, pol, a, b, smi.Request{Protocol: smi.TCP, Port: 5432}, true)
			wantAllowed(t, pol, a, b, smi.Request{Protocol: smi.TCP, Port: 5433}, false)
			wantAllowed(t, pol, b, a, smi.Request{Protocol: smi.TCP, Port: 5432}, false)
		}},
		{name: "allow-ports-need-v1alpha4", args: []string{"allow", "--from", "sa/legacy/a", "--to", "sa/legacy/b", "--ports", "5432,5433"}, code: 4, check: func(t *testing.T) {
			wantAllowed(t, c.policy(ctx, t, ns), a, b, smi.Request{Protocol: smi.TCP, Port: 5433}, false)
		}},
		{name: "allow-http", args: []string{"allow", "--from", "sa/legacy/a", "--to", "sa/legacy/b", "--path", "/api/", "--methods", "GET"}, check: func(t *testing.T) {
			c.wantNames(ctx, t, smi.KindTCPRoute, ns)
			c.wantNames(ctx, t, smi.KindHTTPRouteGroup, ns, "b-from-legacy-a")
			pol := c.policy(ctx, t, ns)
			wantAllowed(t, pol, a, b, httpReq(8080, "GET", "/api/x"), true)
			wantAllowed(t, pol, a, b, httpReq(8080, "POST", "/api/x"), false)
			wantAllowed(t, pol, a, b, smi.Request{Protocol: smi.TCP, Port: 5432}, false)
		}},
		{name: "deny", args: []string{"deny", "--from", "sa/legacy/a", "--to", "sa/legacy/b"}, check: func(t *testing.T) {
			c.wantNames(ctx, t, smi.KindTrafficTarget, ns)
			c.wantNames(ctx, t, smi.KindHTTPRouteGroup, ns)
			wantAllowed(t, c.policy(ctx, t, ns), a, b, httpReq(8080, "GET", "/api/x"), false)
		}},
	})
}

// ---------------------------------------------------------------- join, leave

func testMembership(ctx context.Context, t *testing.T, c *cluster) {
	ns, wide := "join", "join-wide"
	c.namespace(ctx, t, ns, nil)
	c.service(ctx, t, ns, "web", nil, [2]int32{80, 8080})
	c.service(ctx, t, ns, "api", map[string]string{annotations.Mesh: "yes"}, [2]int32{80, 8080})
	c.service(ctx, t, ns, "db", map[string]string{annotations.RetryAttempts: "two", "owner": "team-a"}, [2]int32{5432, 5432})
	c.namespace(ctx, t, wide, nil)
	c.service(ctx, t, wide, "a", map[string]string{annotations.Mesh: "false"}, [2]int32{80, 80})
	c.service(ctx, t, wide, "b", nil, [2]int32{80, 80})
	c.service(ctx, t, wide, "c", map[string]string{annotations.Mesh: "true"}, [2]int32{80, 80})

	annotation := func(svc, want string) func(*testing.T) {
		return func(t *testing.T) {
			if got, ok := c.meshAnnotation(ctx, t, ns, svc); !ok || got != want {
				t.Errorf("Service %s/%s annotation %s = %q (set %v), want %q", ns, svc, annotations.Mesh, got, ok, want)
			}
		}
	}
	label := func(want string) func(*testing.T) {
		return func(t *testing.T) {
			n, err := c.kube.CoreV1().Namespaces().Get(ctx, wide, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got := n.Labels[annotations.NamespaceLabel]; got != want {
				t.Errorf("namespace %s label = %q, want %q", wide, got, want)
			}
		}
	}
	c.runSteps(t, "membership", []step{
		{name: "join", args: []string{"join", "web", "-n", ns}, check: func(t *testing.T) {
			annotation("web", "true")(t)
			// Nothing else in the Service changed.
			svc, err := c.kube.CoreV1().Services(ns).Get(ctx, "web", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if len(svc.Annotations) != 1 || svc.Labels["app"] != "web" || svc.Spec.Selector["app"] != "web" || len(svc.Spec.Ports) != 1 {
				t.Errorf("join changed more than the annotation: %+v", svc)
			}
			n, _ := c.kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
			if m, why, _ := annotations.Meshed(svc, n); !m {
				t.Errorf("Service not meshed after join: %s", why)
			}
		}},
		{name: "join-again", args: []string{"join", "web", "-n", ns}, check: annotation("web", "true")},
		{name: "join-again-json", args: []string{"join", "web", "-n", ns, "-o", "json"}},
		{name: "leave-dry-run", args: []string{"leave", "web", "-n", ns, "--dry-run"}, check: annotation("web", "true")},
		{name: "leave-yaml", args: []string{"leave", "web", "-n", ns, "-o", "yaml"}, check: annotation("web", "false")},
		{name: "join-bad-value", args: []string{"join", "api", "-n", ns}, check: annotation("api", "true")},
		{name: "join-warns", args: []string{"join", "db", "-n", ns}, check: func(t *testing.T) {
			annotation("db", "true")(t)
			svc, _ := c.kube.CoreV1().Services(ns).Get(ctx, "db", metav1.GetOptions{})
			if svc.Annotations["owner"] != "team-a" || svc.Annotations[annotations.RetryAttempts] != "two" {
				t.Errorf("join touched other annotations: %v", svc.Annotations)
			}
		}},
		{name: "unknown-service", args: []string{"join", "nope", "-n", ns}, code: 6},
		{name: "bad-service-name", args: []string{"join", "Web_1", "-n", ns}, code: 2},
		{name: "no-service", args: []string{"join", "-n", ns}, code: 2},
		{name: "two-services", args: []string{"leave", "web", "api", "-n", ns}, code: 2},
		{name: "service-and-namespace-wide", args: []string{"join", "web", "-n", ns, "--namespace-wide"}, code: 2},
		{name: "namespace-wide-without-n", args: []string{"join", "--namespace-wide"}, code: 2, check: label("")},
		{name: "unknown-flag", args: []string{"join", "web", "-n", ns, "--all"}, code: 2},
		{name: "bad-output", args: []string{"join", "web", "-n", ns, "-o", "table"}, code: 2},
		{name: "namespace-wide", args: []string{"join", "-n", wide, "--namespace-wide"}, check: label("enabled")},
		{name: "namespace-wide-again", args: []string{"join", "-n", wide, "--namespace-wide", "-o", "json"}, check: label("enabled")},
		{name: "leave-namespace-wide-dry-run", args: []string{"leave", "-n", wide, "--namespace-wide", "--dry-run"}, check: label("enabled")},
		{name: "leave-namespace-wide", args: []string{"leave", "-n", wide, "--namespace-wide"}, check: label("")},
		{name: "leave-namespace-wide-again", args: []string{"leave", "-n", wide, "--namespace-wide"}, check: label("")},
		{name: "unknown-namespace", args: []string{"join", "-n", "nowhere", "--namespace-wide"}, code: 6},
	})
}

// ---------------------------------------------------------------- split

func testSplit(ctx context.Context, t *testing.T, c *cluster) {
	ns := "split"
	c.namespace(ctx, t, ns, map[string]string{annotations.NamespaceLabel: "enabled"})
	for _, s := range []string{"web", "web-v1", "web-v2", "cart", "cart-v1", "cart-v2"} {
		c.service(ctx, t, ns, s, nil, [2]int32{80, 8080})
	}
	c.service(ctx, t, ns, "other", nil, [2]int32{9090, 9090})
	c.service(ctx, t, ns, "solo", map[string]string{annotations.Mesh: "false"}, [2]int32{80, 8080})
	c.service(ctx, t, ns, "solo-v1", nil, [2]int32{80, 8080})
	c.create(ctx, t, smi.KindTrafficSplit, `
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {name: cart-canary, namespace: split, labels: {team: cart}}
spec: {service: cart, backends: [{service: cart-v1, weight: 1}]}`)

	web90 := func(t *testing.T) {
		pol := c.policy(ctx, t, ns)
		wantSplit(t, pol, ns, "web", httpReq(80, "GET", "/"), map[string]int64{"web-v1": 90, "web-v2": 10})
		wantSplit(t, pol, ns, "web", httpReq(80, "GET", "/", "x-canary", "true"), map[string]int64{"web-v1": 90, "web-v2": 10})
	}
	c.runSteps(t, "split", []step{
		{name: "create", args: []string{"split", "web", "-n", ns, "--to", "web-v1=90,web-v2=10"}, check: func(t *testing.T) {
			web90(t)
			u := c.get(ctx, t, smi.KindTrafficSplit, ns, "web")
			if u.GetLabels()[ManagedByLabel] != ManagedBy || u.GetAPIVersion() != "split.smi-spec.io/v1alpha4" {
				t.Errorf("split: labels %v, apiVersion %s", u.GetLabels(), u.GetAPIVersion())
			}
		}},
		{name: "unchanged", args: []string{"split", "web", "-n", ns, "--to", "web-v1=90", "--to", "web-v2=10"}, check: web90},
		{name: "dry-run", args: []string{"split", "web", "-n", ns, "--to", "web-v1=80,web-v2=20", "--dry-run"}, check: web90},
		{name: "match-dry-run", args: []string{"split", "web", "-n", ns, "--to", "web-v1=50,web-v2=50", "--match", "header:x-canary=true", "--match", "method:GET", "--dry-run", "-o", "yaml"}, check: func(t *testing.T) {
			web90(t)
			c.wantNames(ctx, t, smi.KindHTTPRouteGroup, ns)
		}},
		{name: "match", args: []string{"split", "web", "-n", ns, "--to", "web-v2=100", "--match", "header:x-canary=true", "-o", "json"}, check: func(t *testing.T) {
			pol := c.policy(ctx, t, ns)
			wantSplit(t, pol, ns, "web", httpReq(80, "GET", "/", "x-canary", "true"), map[string]int64{"web-v2": 100})
			wantSplit(t, pol, ns, "web", httpReq(80, "GET", "/"), nil)
			wantSplit(t, pol, ns, "web", smi.Request{Protocol: smi.TCP, Port: 80}, nil)
			c.wantNames(ctx, t, smi.KindTrafficSplit, ns, "web", "cart-canary")
		}},
		{name: "match-text", args: []string{"split", "web", "-n", ns, "--to", "web-v2=100", "--match", "header:x-canary=true", "--match", "path:/api/", "--match", "method:GET,HEAD"}, check: func(t *testing.T) {
			pol := c.policy(ctx, t, ns)
			wantSplit(t, pol, ns, "web", httpReq(80, "HEAD", "/api/x", "x-canary", "true"), map[string]int64{"web-v2": 100})
			wantSplit(t, pol, ns, "web", httpReq(80, "POST", "/api/x", "x-canary", "true"), nil)
			wantSplit(t, pol, ns, "web", httpReq(80, "GET", "/", "x-canary", "true"), nil)
		}},
		{name: "match-removed", args: []string{"split", "web", "-n", ns, "--to", "web-v1=90,web-v2=10"}, check: func(t *testing.T) {
			web90(t)
			c.wantNames(ctx, t, smi.KindHTTPRouteGroup, ns)
		}},
		{name: "second-name", args: []string{"split", "web", "-n", ns, "--to", "web-v1=50,web-v2=50", "--name", "web-2"}, code: 2, check: web90},
		{name: "name-taken", args: []string{"split", "other", "-n", ns, "--to", "web-v1=100", "--name", "web"}, code: 2, check: web90},
		{name: "existing-split-keeps-name", args: []string{"split", "cart", "-n", ns, "--to", "cart-v1=80,cart-v2=20"}, check: func(t *testing.T) {
			wantSplit(t, c.policy(ctx, t, ns), ns, "cart", httpReq(80, "GET", "/"), map[string]int64{"cart-v1": 80, "cart-v2": 20})
			c.wantNames(ctx, t, smi.KindTrafficSplit, ns, "web", "cart-canary")
			u := c.get(ctx, t, smi.KindTrafficSplit, ns, "cart-canary")
			if l := u.GetLabels(); l["team"] != "cart" || l[ManagedByLabel] != "" {
				t.Errorf("labels of the user's split changed: %v", l)
			}
		}},
		{name: "missing-backend", args: []string{"split", "web", "-n", ns, "--to", "web-v1=90,web-v3=10"}, code: 6, check: web90},
		{name: "missing-backends", args: []string{"split", "web", "-n", ns, "--to", "web-v3=50,web-v4=50"}, code: 6, check: web90},
		{name: "missing-root", args: []string{"split", "nope", "-n", ns, "--to", "web-v1=100"}, code: 6},
		{name: "does-not-sum", args: []string{"split", "web", "-n", ns, "--to", "web-v1=90,web-v2=20"}, code: 2, check: web90},
		{name: "all-zero", args: []string{"split", "web", "-n", ns, "--to", "web-v1=0,web-v2=0", "--relative"}, code: 2, check: web90},
		{name: "negative", args: []string{"split", "web", "-n", ns, "--to", "web-v1=110,web-v2=-10"}, code: 2, check: web90},
		{name: "not-a-number", args: []string{"split", "web", "-n", ns, "--to", "web-v1=ninety"}, code: 2, check: web90},
		{name: "repeated-backend", args: []string{"split", "web", "-n", ns, "--to", "web-v1=50,web-v1=50"}, code: 2, check: web90},
		{name: "root-only-backend", args: []string{"split", "web", "-n", ns, "--to", "web=100"}, code: 2, check: web90},
		{name: "no-to", args: []string{"split", "web", "-n", ns}, code: 2},
		{name: "bad-regex", args: []string{"split", "web", "-n", ns, "--to", "web-v2=100", "--match", "path:/api/(v1"}, code: 2, check: web90},
		{name: "bad-match-kind", args: []string{"split", "web", "-n", ns, "--to", "web-v2=100", "--match", "cookie:beta=1"}, code: 2, check: web90},
		{name: "lower-case-method", args: []string{"split", "web", "-n", ns, "--to", "web-v2=100", "--match", "method:get"}, code: 2, check: web90},
		{name: "unknown-flag", args: []string{"split", "web", "-n", ns, "--weights", "web-v1=100"}, code: 2},
		{name: "no-service", args: []string{"split", "-n", ns, "--to", "web-v1=100"}, code: 2},
		{name: "relative-with-root", args: []string{"split", "web", "-n", ns, "--to", "web=1,web-v1=1,web-v2=1", "--relative"}, check: func(t *testing.T) {
			wantSplit(t, c.policy(ctx, t, ns), ns, "web", httpReq(80, "GET", "/"), map[string]int64{"web": 1, "web-v1": 1, "web-v2": 1})
		}},
		{name: "backend-without-port", args: []string{"split", "web", "-n", ns, "--to", "web-v1=50,other=50"}, check: func(t *testing.T) {
			// other has no port 80: Trellis leaves it out on that port.
			wantSplit(t, c.policy(ctx, t, ns), ns, "web", httpReq(80, "GET", "/"), map[string]int64{"web-v1": 50})
		}},
		{name: "root-not-meshed", args: []string{"split", "solo", "-n", ns, "--to", "solo-v1=100"}},
	})
}

// ---------------------------------------------------------------- allow, deny

func testAccess(ctx context.Context, t *testing.T, c *cluster) {
	ns, front := "shop", "front"
	c.namespace(ctx, t, ns, nil)
	c.namespace(ctx, t, front, nil)
	for _, sa := range []string{"api", "db", "legacy-client"} {
		c.serviceAccount(ctx, t, ns, sa)
	}
	for _, sa := range []string{"web", "admin"} {
		c.serviceAccount(ctx, t, front, sa)
	}
	web, admin, legacy := smi.Identity{Namespace: front, Name: "web"}, smi.Identity{Namespace: front, Name: "admin"}, smi.Identity{Namespace: ns, Name: "legacy-client"}
	api, db := smi.Identity{Namespace: ns, Name: "api"}, smi.Identity{Namespace: ns, Name: "db"}
	// A TrafficTarget and route written by hand, shared by two sources.
	c.create(ctx, t, smi.KindHTTPRouteGroup, `
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: handmade-routes, namespace: shop}
spec: {matches: [{name: health, pathRegex: /healthz, methods: [GET]}]}`)
	c.create(ctx, t, smi.KindTrafficTarget, `
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: handmade, namespace: shop}
spec:
  destination: {kind: ServiceAccount, name: api, namespace: shop}
  sources: [{kind: ServiceAccount, name: web, namespace: front}, {kind: ServiceAccount, name: legacy-client, namespace: shop}]
  rules: [{kind: HTTPRouteGroup, name: handmade-routes}]`)

	// The installed controller's settings: ACL mode on.
	c.namespace(ctx, t, "trellis-system", nil)
	settings := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: settingsConfigMap, Namespace: "trellis-system"},
		Data: map[string]string{settingsKey: "meshDomain: mesh\nacl: true\n"}}
	if _, err := c.kube.CoreV1().ConfigMaps("trellis-system").Create(ctx, settings, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	setACL := func(t *testing.T, value string) {
		settings.Data[settingsKey] = "meshDomain: mesh\nacl: " + value + "\n"
		if _, err := c.kube.CoreV1().ConfigMaps("trellis-system").Update(ctx, settings, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	aclOff := func(t *testing.T) { setACL(t, "false") }
	t.Cleanup(func() { setACL(t, "true") })

	httpGrant := func(t *testing.T) {
		pol := c.policy(ctx, t, ns)
		wantAllowed(t, pol, web, api, httpReq(8080, "GET", "/api/items"), true)
		wantAllowed(t, pol, web, api, httpReq(8080, "POST", "/api/items"), true)
		wantAllowed(t, pol, web, api, httpReq(8080, "DELETE", "/api/items"), false)
		wantAllowed(t, pol, web, api, httpReq(8080, "GET", "/admin"), false)
		wantAllowed(t, pol, admin, api, httpReq(8080, "GET", "/api/items"), false)
	}
	c.runSteps(t, "access", []step{
		{name: "allow-http", args: []string{"allow", "--from", "sa/front/web", "--to", "sa/shop/api", "--path", "/api/", "--methods", "GET,POST"}, check: func(t *testing.T) {
			httpGrant(t)
			u := c.get(ctx, t, smi.KindTrafficTarget, ns, "api-from-front-web")
			if u.GetLabels()[ManagedByLabel] != ManagedBy {
				t.Errorf("TrafficTarget labels %v", u.GetLabels())
			}
			g := c.get(ctx, t, smi.KindHTTPRouteGroup, ns, "api-from-front-web")
			if g.GetAnnotations()[ForAnnotation] != "TrafficTarget/api-from-front-web" {
				t.Errorf("HTTPRouteGroup annotations %v", g.GetAnnotations())
			}
		}},
		{name: "allow-http-again", args: []string{"allow", "--from", "sa/front/web", "--to", "sa/shop/api", "--path", "/api/", "--methods", "GET,POST"}, check: httpGrant},
		{name: "allow-tcp-ports", args: []string{"allow", "--from", "sa/front/web", "--to", "sa/shop/api", "--ports", "8080,8443"}, check: func(t *testing.T) {
			pol := c.policy(ctx, t, ns)
			wantAllowed(t, pol, web, api, httpReq(8080, "DELETE", "/admin"), true)
			wantAllowed(t, pol, web, api, smi.Request{Protocol: smi.TCP, Port: 8443}, true)
			wantAllowed(t, pol, web, api, smi.Request{Protocol: smi.TCP, Port: 9090}, false)
			c.wantNames(ctx, t, smi.KindHTTPRouteGroup, ns, "handmade-routes")
			c.wantNames(ctx, t, smi.KindTCPRoute, ns, "api-from-front-web")
		}},
		{name: "allow-http-one-port", args: []string{"allow", "--from", "sa/front/web", "--to", "sa/shop/db", "--path", "/", "--ports", "5432", "-o", "yaml"}, check: func(t *testing.T) {
			pol := c.policy(ctx, t, ns)
			wantAllowed(t, pol, web, db, httpReq(5432, "GET", "/x"), true)
			wantAllowed(t, pol, web, db, httpReq(80, "GET", "/x"), false)
			wantAllowed(t, pol, web, db, smi.Request{Protocol: smi.TCP, Port: 5432}, false)
		}},
		{name: "allow-named", args: []string{"allow", "--from", "sa/front/admin", "--to", "sa/shop/api", "--name", "api-admins", "--methods", "*"}, check: func(t *testing.T) {
			wantAllowed(t, c.policy(ctx, t, ns), admin, api, httpReq(8080, "DELETE", "/admin"), true)
		}},
		{name: "allow-shared-name", args: []string{"allow", "--from", "sa/front/web", "--to", "sa/shop/api", "--name", "api-admins", "--methods", "*"}, check: func(t *testing.T) {
			if got := sources(t, c.decode(ctx, t, smi.KindTrafficTarget, ns, "api-admins")); !slices.Equal(got, []string{"front/admin", "front/web"}) {
				t.Errorf("sources %v", got)
			}
		}},
		{name: "allow-dry-run", args: []string{"allow", "--from", "sa/front/ghost", "--to", "sa/shop/api", "--dry-run", "-o", "yaml"}, check: func(t *testing.T) {
			c.wantNames(ctx, t, smi.KindTrafficTarget, ns, "api-from-front-web", "db-from-front-web", "api-admins", "handmade")
		}},
		{name: "allow-over-user-object", args: []string{"allow", "--from", "sa/front/web", "--to", "sa/shop/api", "--name", "handmade"}, code: 2},
		{name: "allow-name-for-other-destination", args: []string{"allow", "--from", "sa/front/web", "--to", "sa/shop/db", "--name", "api-admins"}, code: 2},
		{name: "identity-missing-namespace", args: []string{"allow", "--from", "sa/front", "--to", "sa/shop/api"}, code: 2},
		{name: "identity-not-sa", args: []string{"allow", "--from", "user/front/web", "--to", "sa/shop/api"}, code: 2},
		{name: "identity-bad-name", args: []string{"allow", "--from", "sa/front/web", "--to", "sa/shop/API"}, code: 2},
		{name: "no-from", args: []string{"allow", "--to", "sa/shop/api"}, code: 2},
		{name: "bad-path", args: []string{"allow", "--from", "sa/front/web", "--to", "sa/shop/api", "--path", "/api/("}, code: 2},
		{name: "bad-method", args: []string{"allow", "--from", "sa/front/web", "--to", "sa/shop/api", "--methods", "get"}, code: 2},
		{name: "bad-port", args: []string{"allow", "--from", "sa/front/web", "--to", "sa/shop/api", "--ports", "70000"}, code: 2},
		{name: "http-several-ports", args: []string{"allow", "--from", "sa/front/web", "--to", "sa/shop/api", "--path", "/", "--ports", "80,443"}, code: 2},
		{name: "unknown-namespace", args: []string{"allow", "--from", "sa/front/web", "--to", "sa/nowhere/api"}, code: 6, check: func(t *testing.T) {
			c.wantNames(ctx, t, smi.KindTCPRoute, "nowhere")
			c.wantNames(ctx, t, smi.KindTrafficTarget, "nowhere")
		}},
		{name: "namespace-conflict", args: []string{"allow", "-n", "front", "--from", "sa/front/web", "--to", "sa/shop/api"}, code: 2},
		{name: "positional-argument", args: []string{"allow", "web", "--from", "sa/front/web", "--to", "sa/shop/api"}, code: 2},
		{name: "deny-dry-run", args: []string{"deny", "--from", "sa/front/web", "--to", "sa/shop/api", "--dry-run"}, check: func(t *testing.T) {
			wantAllowed(t, c.policy(ctx, t, ns), web, api, smi.Request{Protocol: smi.TCP, Port: 8443}, true)
		}},
		{name: "deny", args: []string{"deny", "--from", "sa/front/web", "--to", "sa/shop/api", "-o", "json"}, check: func(t *testing.T) {
			pol := c.policy(ctx, t, ns)
			wantAllowed(t, pol, web, api, smi.Request{Protocol: smi.TCP, Port: 8443}, false)
			wantAllowed(t, pol, web, api, httpReq(8080, "GET", "/healthz"), false)
			wantAllowed(t, pol, web, api, httpReq(8080, "GET", "/api/items"), false)
			wantAllowed(t, pol, admin, api, httpReq(8080, "DELETE", "/admin"), true)
			wantAllowed(t, pol, legacy, api, httpReq(8080, "GET", "/healthz"), true)
			wantAllowed(t, pol, web, db, httpReq(5432, "GET", "/x"), true)
			c.wantNames(ctx, t, smi.KindTrafficTarget, ns, "db-from-front-web", "api-admins", "handmade")
			c.wantNames(ctx, t, smi.KindTCPRoute, ns)
		}},
		{name: "deny-again", args: []string{"deny", "--from", "sa/front/web", "--to", "sa/shop/api"}},
		{name: "deny-named", args: []string{"deny", "--from", "sa/front/admin", "--to", "sa/shop/api", "--name", "api-admins"}, check: func(t *testing.T) {
			wantAllowed(t, c.policy(ctx, t, ns), admin, api, httpReq(8080, "DELETE", "/admin"), false)
			c.wantNames(ctx, t, smi.KindHTTPRouteGroup, ns, "handmade-routes", "db-from-front-web")
		}},
		{name: "deny-named-missing", args: []string{"deny", "--from", "sa/front/admin", "--to", "sa/shop/api", "--name", "api-admins"}},
		{name: "deny-user-object", args: []string{"deny", "--from", "sa/shop/legacy-client", "--to", "sa/shop/api", "-o", "yaml"}, check: func(t *testing.T) {
			c.wantNames(ctx, t, smi.KindTrafficTarget, ns, "db-from-front-web")
			// The user's route may be shared: deny never deletes it.
			c.wantNames(ctx, t, smi.KindHTTPRouteGroup, ns, "handmade-routes", "db-from-front-web")
		}},
		{name: "deny-db", args: []string{"deny", "--from", "sa/front/web", "--to", "sa/shop/db"}, check: func(t *testing.T) {
			c.wantNames(ctx, t, smi.KindTrafficTarget, ns)
			c.wantNames(ctx, t, smi.KindHTTPRouteGroup, ns, "handmade-routes")
		}},
		{name: "deny-bad-identity", args: []string{"deny", "--from", "sa/front/web", "--to", "sa/shop"}, code: 2, check: aclOff},
		{name: "allow-acl-off", args: []string{"allow", "--from", "sa/front/web", "--to", "sa/shop/api", "--dry-run"}},
	})
}

// ---------------------------------------------------------------- RBAC

func testRBAC(ctx context.Context, t *testing.T, c *cluster) {
	ns := "rbac"
	c.namespace(ctx, t, ns, map[string]string{annotations.NamespaceLabel: "enabled"})
	for _, s := range []string{"web", "web-v1", "web-v2"} {
		c.service(ctx, t, ns, s, nil, [2]int32{80, 8080})
	}
	read := []string{"get", "list"}
	user := c.limitedUser(ctx, t, ns, "limited", []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"services"}, Verbs: read},
		{APIGroups: []string{smi.GroupSplit}, Resources: []string{"trafficsplits"}, Verbs: []string{"get", "list", "create", "update"}},
		{APIGroups: []string{smi.GroupSpecs}, Resources: []string{"httproutegroups", "tcproutes"}, Verbs: read},
		{APIGroups: []string{smi.GroupAccess}, Resources: []string{"traffictargets"}, Verbs: []string{"get", "list", "create"}},
	})
	c.serviceAccount(ctx, t, ns, "a")
	c.serviceAccount(ctx, t, ns, "b")
	nothing := func(t *testing.T) {
		for _, k := range []smi.Kind{smi.KindTrafficSplit, smi.KindTrafficTarget, smi.KindHTTPRouteGroup, smi.KindTCPRoute} {
			c.wantNames(ctx, t, k, ns)
		}
	}
	c.runSteps(t, "rbac", []step{
		{name: "split-with-match", kubeconfig: user, args: []string{"split", "web", "-n", ns, "--to", "web-v1=90,web-v2=10", "--match", "header:x-canary=true"}, code: 5, check: nothing},
		{name: "allow", kubeconfig: user, args: []string{"allow", "--from", "sa/rbac/a", "--to", "sa/rbac/b", "--ports", "80"}, code: 5, check: nothing},
		{name: "join", kubeconfig: user, args: []string{"join", "web", "-n", ns}, code: 5, check: func(t *testing.T) {
			if _, ok := c.meshAnnotation(ctx, t, ns, "web"); ok {
				t.Error("annotation written without permission")
			}
		}},
		{name: "other-namespace", kubeconfig: user, args: []string{"split", "web", "-n", "default", "--to", "web-v1=100"}, code: 5},
		{name: "split", kubeconfig: user, args: []string{"split", "web", "-n", ns, "--to", "web-v1=90,web-v2=10"}, check: func(t *testing.T) {
			c.wantNames(ctx, t, smi.KindTrafficSplit, ns, "web")
		}},
		{name: "admin-allows", args: []string{"allow", "--from", "sa/rbac/a", "--to", "sa/rbac/b"}},
		{name: "deny", kubeconfig: user, args: []string{"deny", "--from", "sa/rbac/a", "--to", "sa/rbac/b"}, code: 5, check: func(t *testing.T) {
			c.wantNames(ctx, t, smi.KindTrafficTarget, ns, "b-from-rbac-a")
			c.wantNames(ctx, t, smi.KindTCPRoute, ns, "b-from-rbac-a")
		}},
	})
}
