package app_test

// Tests against a real etcd + kube-apiserver (e2e/testenv): informers and
// the debounced rebuild, shadow Services, stable port assignments, the DNS
// responder, the CoreDNS edit, Events on bad objects, TokenReview-based
// stream authentication with real pod-bound tokens, leader election and
// fail-over between two replicas, opt-out and uninstall.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/trellis-mesh/trellis/controller/app"
	ctrldns "github.com/trellis-mesh/trellis/controller/dns"
	"github.com/trellis-mesh/trellis/controller/settings"
	"github.com/trellis-mesh/trellis/controller/shadow"
	"github.com/trellis-mesh/trellis/e2e/testenv"
	"github.com/trellis-mesh/trellis/manifests/crds"
	"github.com/trellis-mesh/trellis/node-proxy/config"
	"github.com/trellis-mesh/trellis/node-proxy/source"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

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

// poll calls f until it returns "" or the deadline passes.
func poll(t *testing.T, what string, d time.Duration, f func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	last := ""
	for time.Now().Before(deadline) {
		if last = f(); last == "" {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: still not true after %s: %s", what, d, last)
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

type replica struct {
	c      *app.Controller
	cancel context.CancelFunc
	done   chan error
	serve  string
	dns    string
}

func startReplica(t *testing.T, cfg *rest.Config, name string, s settings.Settings) *replica {
	kube := kubernetes.NewForConfigOrDie(cfg)
	addrs := make(chan [2]net.Addr, 1)
	c, err := app.New(app.Options{
		Settings: s, Kube: kube, Dynamic: dynamic.NewForConfigOrDie(cfg), Discovery: discovery.NewDiscoveryClientForConfigOrDie(cfg),
		Identity: name, ServeAddr: "127.0.0.1:0", DNSAddr: "127.0.0.1:0",
		LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 300 * time.Millisecond,
		Log:      zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)).Named(name),
		OnListen: func(s, d net.Addr) { addrs <- [2]net.Addr{s, d} },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &replica{c: c, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- c.Run(ctx) }()
	select {
	case a := <-addrs:
		r.serve, r.dns = a[0].String(), a[1].String()
	case err := <-r.done:
		t.Fatalf("replica %s: %v", name, err)
	case <-time.After(30 * time.Second):
		t.Fatalf("replica %s did not listen", name)
	}
	return r
}

func (r *replica) stop(t *testing.T) {
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("replica stopped with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Error("replica did not stop")
	}
}

func lookup(addr, name string) ([]string, int, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	r, _, err := (&dns.Client{Timeout: 2 * time.Second}).Exchange(m, addr)
	if err != nil {
		return nil, 0, err
	}
	var out []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			out = append(out, a.A.String())
		}
	}
	return out, r.Rcode, nil
}

func TestController(t *testing.T) {
	cfg := testenv.ControlPlane(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	kube := kubernetes.NewForConfigOrDie(cfg)
	dyn := dynamic.NewForConfigOrDie(cfg)

	// --- cluster setup: namespaces, CRDs, CoreDNS ConfigMap, nodes, DNS Service.
	for _, ns := range []*corev1.Namespace{
		{ObjectMeta: metav1.ObjectMeta{Name: "trellis-system"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{"trellis.io/mesh": "enabled"}}},
	} {
		if _, err := kube.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	ext := apiextensionsclient.NewForConfigOrDie(cfg)
	all, err := crds.Load()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range all {
		c.Spec.Conversion = &apiextensionsv1.CustomResourceConversion{Strategy: apiextensionsv1.NoneConverter}
		if _, err := ext.ApiextensionsV1().CustomResourceDefinitions().Create(ctx, c, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	must(kube.CoreV1().ConfigMaps("kube-system").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "coredns", Namespace: "kube-system"},
		Data: map[string]string{"Corefile": corefile}}, metav1.CreateOptions{}))
	for _, n := range []string{"node-a", "node-b"} {
		must(kube.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n, Labels: map[string]string{"topology.kubernetes.io/zone": "z-" + n}}}, metav1.CreateOptions{}))
	}
	dnsSvc := must(kube.CoreV1().Services("trellis-system").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "trellis-dns"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "trellis-controller"}, Ports: []corev1.ServicePort{{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}}}}, metav1.CreateOptions{}))

	// --- workloads: pods (status set by hand: no kubelet here), services, slices.
	pod := func(ns, name, node, sa, ip string) {
		p := must(kube.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": name}},
			Spec: corev1.PodSpec{NodeName: node, ServiceAccountName: sa, Containers: []corev1.Container{{Name: "c", Image: "x"}}}}, metav1.CreateOptions{}))
		p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}
		must(kube.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}))
	}
	for _, sa := range []struct{ ns, name string }{{"shop", "web"}, {"shop", "db"}, {"trellis-system", "trellis-proxy"}, {"trellis-system", "operator"}} {
		if _, err := kube.CoreV1().ServiceAccounts(sa.ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa.name}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	pod("shop", "web-v1-a", "node-a", "web", "10.1.0.10")
	pod("shop", "web-v2-b", "node-b", "web", "10.2.0.20")
	pod("shop", "db-b", "node-b", "db", "10.2.0.30")
	pod("trellis-system", "proxy-a", "node-a", "trellis-proxy", "10.1.0.2")
	service := func(name string, port int32, ann map[string]string) {
		must(kube.CoreV1().Services("shop").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: ann},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": name}, Ports: []corev1.ServicePort{{Name: "p", Port: port}}}}, metav1.CreateOptions{}))
	}
	slice := func(svc, podName, node, ip string, port int32) {
		ready := true
		must(kube.DiscoveryV1().EndpointSlices("shop").Create(ctx, &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: svc + "-x", Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr("p"), Port: &port}},
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{ip}, NodeName: &node, Conditions: discoveryv1.EndpointConditions{Ready: &ready},
				TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "shop", Name: podName}}},
		}, metav1.CreateOptions{}))
	}
	service("web", 80, nil)
	service("web-v1", 80, nil)
	service("web-v2", 80, nil)
	service("db", 5432, map[string]string{"trellis.io/traffic-type": "tcp"})
	service("broken", 80, map[string]string{"trellis.io/timeout": "forever"})
	slice("web-v1", "web-v1-a", "node-a", "10.1.0.10", 8080)
	slice("web-v2", "web-v2-b", "node-b", "10.2.0.20", 8080)
	slice("db", "db-b", "node-b", "10.2.0.30", 5432)
	splitGVR := schema.GroupVersionResource{Group: "split.smi-spec.io", Version: "v1alpha4", Resource: "trafficsplits"}
	split := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "split.smi-spec.io/v1alpha4", "kind": "TrafficSplit",
		"metadata": map[string]any{"name": "web", "namespace": "shop"},
		"spec": map[string]any{"service": "web", "backends": []any{
			map[string]any{"service": "web-v1", "weight": int64(90)}, map[string]any{"service": "web-v2", "weight": int64(10)}}},
	}}
	must(dyn.Resource(splitGVR).Namespace("shop").Create(ctx, split, metav1.CreateOptions{}))

	// --- two replicas.
	s := settings.Default()
	s.ExtraDomains = []string{"traefik.mesh"}
	r0 := startReplica(t, cfg, "ctrl-0", s)
	r1 := startReplica(t, cfg, "ctrl-1", s)
	replicas := []*replica{r0, r1}
	leader := func() *replica {
		var l *replica
		for _, r := range replicas {
			if r.c.Leading() {
				if l != nil {
					return nil // two leaders: not settled (must never stay so)
				}
				l = r
			}
		}
		return l
	}
	poll(t, "one leader", 20*time.Second, func() string {
		if leader() == nil {
			return "no single leader"
		}
		return ""
	})
	lead := leader()
	follower := r0
	if lead == r0 {
		follower = r1
	}

	// --- shadow Services.
	var webShadow, dbShadow *corev1.Service
	poll(t, "shadow Services", 20*time.Second, func() string {
		list := must(kube.CoreV1().Services("trellis-system").List(ctx, metav1.ListOptions{LabelSelector: shadow.LabelManagedBy + "=" + shadow.ManagedBy}))
		webShadow, dbShadow = nil, nil
		for i := range list.Items {
			sv := &list.Items[i]
			switch sv.Name {
			case shadow.Name("shop", "web"):
				webShadow = sv
			case shadow.Name("shop", "db"):
				dbShadow = sv
			}
		}
		if webShadow == nil || dbShadow == nil || len(list.Items) != 5 {
			return fmt.Sprintf("%d shadows", len(list.Items))
		}
		return ""
	})
	if *webShadow.Spec.InternalTrafficPolicy != corev1.ServiceInternalTrafficPolicyLocal || webShadow.Spec.Ports[0].TargetPort.IntVal != s.ProxyHTTPPort ||
		webShadow.Labels[shadow.LabelOfName] != "web" || webShadow.Spec.Selector["app.kubernetes.io/name"] != "trellis-proxy" {
		t.Errorf("web shadow: %+v %+v", webShadow.Labels, webShadow.Spec)
	}
	dbPort := dbShadow.Spec.Ports[0].TargetPort.IntVal
	if dbPort < s.ListenPorts.Min || dbPort > s.ListenPorts.Max {
		t.Errorf("db proxy port %d outside the range", dbPort)
	}

	// --- DNS on both replicas (each from its own caches).
	for _, r := range replicas {
		poll(t, "mesh name resolves on "+r.dns, 10*time.Second, func() string {
			ips, rc, err := lookup(r.dns, "web.shop.mesh.")
			if err != nil || rc != dns.RcodeSuccess || len(ips) != 1 || ips[0] != webShadow.Spec.ClusterIP {
				return fmt.Sprintf("%v %v %v (want %s)", ips, rc, err, webShadow.Spec.ClusterIP)
			}
			return ""
		})
	}
	if ips, _, _ := lookup(follower.dns, "db.shop.traefik.mesh."); len(ips) != 1 {
		t.Errorf("extra domain: %v", ips)
	}

	// --- CoreDNS stub block, pointing at the DNS Service.
	poll(t, "Corefile block", 10*time.Second, func() string {
		cm := must(kube.CoreV1().ConfigMaps("kube-system").Get(ctx, "coredns", metav1.GetOptions{}))
		want := ctrldns.Block(s.Domains(), dnsSvc.Spec.ClusterIP)
		if !strings.HasSuffix(cm.Data["Corefile"], want) || !strings.HasPrefix(cm.Data["Corefile"], corefile) {
			return cm.Data["Corefile"]
		}
		return ""
	})

	// --- Events on the bad object.
	poll(t, "Event on shop/broken", 15*time.Second, func() string {
		evs := must(kube.CoreV1().Events("shop").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=broken"}))
		for _, e := range evs.Items {
			if e.Reason == "TrellisInvalid" && strings.Contains(e.Message, `metadata.annotations["trellis.io/timeout"]`) {
				return ""
			}
		}
		return fmt.Sprintf("%d events", len(evs.Items))
	})

	// --- a proxy stream with a real pod-bound token, on the follower.
	tok := must(kube.CoreV1().ServiceAccounts("trellis-system").CreateToken(ctx, "trellis-proxy", &authv1.TokenRequest{Spec: authv1.TokenRequestSpec{
		BoundObjectRef: &authv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: "proxy-a", UID: must(kube.CoreV1().Pods("trellis-system").Get(ctx, "proxy-a", metav1.GetOptions{})).UID},
	}}, metav1.CreateOptions{}))
	tokFile := t.TempDir() + "/token"
	if err := os.WriteFile(tokFile, []byte(tok.Status.Token), 0o600); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []*config.Config
	var events []source.StreamEvent
	sctx, scancel := context.WithCancel(ctx)
	defer scancel()
	// This proxy cannot load the headers plugin (plugins compile on the
	// proxies): it says so in its acks.
	st := &source.Stream{URL: "http://" + follower.serve, TokenFile: tokFile, MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second,
		OnEvent: func(e source.StreamEvent) { mu.Lock(); events = append(events, e); mu.Unlock() },
		PluginErrors: func() map[string]string {
			return map[string]string{"shop/headers": `headers.go:3: import "os/exec" is not allowed`}
		}}
	streamDone := make(chan struct{})
	go func() {
		defer close(streamDone)
		if err := st.Run(sctx, func(_ context.Context, c *config.Config) error {
			mu.Lock()
			got = append(got, c)
			mu.Unlock()
			return nil
		}); err != nil {
			t.Errorf("stream client: %v", err)
		}
	}()
	defer func() { scancel(); <-streamDone }()
	latest := func() *config.Config {
		mu.Lock()
		defer mu.Unlock()
		if len(got) == 0 {
			return nil
		}
		return got[len(got)-1]
	}
	weight := func(c *config.Config) int32 {
		for _, sv := range c.Services {
			if sv.Key() == "shop/web" && sv.Split != nil {
				return sv.Split.Backends[0].Weight
			}
		}
		return -1
	}
	poll(t, "stream delivers node-a's config", 20*time.Second, func() string {
		c := latest()
		if c == nil || c.Node != "node-a" || weight(c) != 90 {
			mu.Lock()
			defer mu.Unlock()
			return fmt.Sprintf("config %v; events %+v", c != nil, events)
		}
		for _, sv := range c.Services {
			if sv.Key() == "shop/db" && sv.Ports[0].ListenPort != dbPort {
				return fmt.Sprintf("db listen port %d, shadow says %d", sv.Ports[0].ListenPort, dbPort)
			}
		}
		return ""
	})

	// --- a TrafficSplit change reaches the stream.
	cur := must(dyn.Resource(splitGVR).Namespace("shop").Get(ctx, "web", metav1.GetOptions{}))
	if err := unstructured.SetNestedSlice(cur.Object, []any{map[string]any{"service": "web-v1", "weight": int64(20)}, map[string]any{"service": "web-v2", "weight": int64(80)}}, "spec", "backends"); err != nil {
		t.Fatal(err)
	}
	must(dyn.Resource(splitGVR).Namespace("shop").Update(ctx, cur, metav1.UpdateOptions{}))
	poll(t, "split change streamed", 10*time.Second, func() string {
		if c := latest(); c == nil || weight(c) != 20 {
			return "old weights"
		}
		return ""
	})

	// --- the debug API: the proxy's token is refused, an operator with RBAC is not.
	must(kube.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "trellis-debug"},
		Rules: []rbacv1.PolicyRule{{NonResourceURLs: []string{"/trellis/debug"}, Verbs: []string{"get"}}}}, metav1.CreateOptions{}))
	must(kube.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "trellis-debug-operator"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "trellis-debug"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: "trellis-system", Name: "operator"}}}, metav1.CreateOptions{}))
	opTok := must(kube.CoreV1().ServiceAccounts("trellis-system").CreateToken(ctx, "operator", &authv1.TokenRequest{}, metav1.CreateOptions{})).Status.Token
	debug := func(tok string) (int, string) {
		req, _ := http.NewRequest("GET", "http://"+follower.serve+"/debug/problems", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := debug(tok.Status.Token); code != 403 {
		t.Errorf("proxy token on the debug API: %d %s", code, body)
	}
	poll(t, "operator reads the debug API", 10*time.Second, func() string {
		code, body := debug(opTok)
		if code != 200 || !strings.Contains(body, "trellis.io/timeout") {
			return fmt.Sprintf("%d %s", code, body)
		}
		var v []any
		if json.Unmarshal([]byte(body), &v) != nil {
			return "not JSON"
		}
		return ""
	})

	// --- plugins: a MeshPlugin whose source is a labelled ConfigMap reaches
	// every node's config on web; editing the source gives a new version; a
	// MeshPlugin naming a missing ConfigMap gets an Event and stays out.
	pluginGVR := schema.GroupVersionResource{Group: "trellis.io", Version: "v1alpha1", Resource: "meshplugins"}
	src := must(kube.CoreV1().ConfigMaps("shop").Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "headers-src", Labels: map[string]string{"trellis.io/plugin-source": "true"}},
		Data:       map[string]string{"headers.go": "package headers\n"}}, metav1.CreateOptions{}))
	for _, mp := range []map[string]any{
		{"name": "headers", "spec": map[string]any{"module": "example.com/headers", "source": map[string]any{"configMap": "headers-src"},
			"services": []any{"web"}, "config": map[string]any{"set": map[string]any{"X-Mesh": "on"}}}},
		{"name": "orphan", "spec": map[string]any{"module": "example.com/orphan", "source": map[string]any{"configMap": "missing"}, "services": []any{"web"}}},
	} {
		u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "trellis.io/v1alpha1", "kind": "MeshPlugin",
			"metadata": map[string]any{"name": mp["name"], "namespace": "shop"}, "spec": mp["spec"]}}
		must(dyn.Resource(pluginGVR).Namespace("shop").Create(ctx, u, metav1.CreateOptions{}))
	}
	pluginVersion := func(r *replica) (string, string) {
		res, _, _ := r.c.Hub().Current()
		n := res.Node("node-a")
		if n == nil {
			return "", "no config for node-a"
		}
		cfg := n.Config()
		var names []string
		for _, p := range cfg.Plugins {
			names = append(names, p.Name)
		}
		if len(cfg.Plugins) != 1 || cfg.Plugins[0].Name != "shop/headers" || cfg.Plugins[0].Files["headers.go"] == "" {
			return "", fmt.Sprintf("plugins %v", names)
		}
		for _, sv := range cfg.Services {
			if sv.Key() == "shop/web" && strings.Join(sv.Plugins, ",") == "shop/headers" {
				return cfg.Plugins[0].Version, ""
			}
		}
		return "", "shop/web does not list shop/headers"
	}
	var v1 string
	poll(t, "the plugin is in node-a's config on both replicas", 20*time.Second, func() string {
		for _, r := range replicas {
			v, why := pluginVersion(r)
			if why != "" {
				return why
			}
			v1 = v
		}
		return ""
	})
	src.Data["headers.go"] = "package headers\n\n// v2\n"
	must(kube.CoreV1().ConfigMaps("shop").Update(ctx, src, metav1.UpdateOptions{}))
	poll(t, "editing the source gives the plugin a new version", 20*time.Second, func() string {
		v, why := pluginVersion(follower)
		if why != "" {
			return why
		}
		if v == v1 {
			return "version unchanged: " + v
		}
		return ""
	})
	poll(t, "an Event on the MeshPlugin naming the missing ConfigMap", 20*time.Second, func() string {
		evs := must(kube.CoreV1().Events("shop").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=orphan"}))
		for _, e := range evs.Items {
			if e.InvolvedObject.Kind == "MeshPlugin" && strings.Contains(e.Message, `ConfigMap "missing" not found`) {
				return ""
			}
		}
		return fmt.Sprintf("%d events, none naming the ConfigMap", len(evs.Items))
	})

	poll(t, "an Event on the MeshPlugin with the load error its proxy reported", 20*time.Second, func() string {
		evs := must(kube.CoreV1().Events("shop").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=headers"}))
		for _, e := range evs.Items {
			if e.InvolvedObject.Kind == "MeshPlugin" && strings.Contains(e.Message, "could not load it") && strings.Contains(e.Message, `"os/exec" is not allowed`) {
				return ""
			}
		}
		return fmt.Sprintf("%d events on headers, none with the proxy's load error", len(evs.Items))
	})

	// --- fail-over: stop the leader; the follower takes over, its stream stays up.
	mu.Lock()
	disconnectsBefore := count(events, "disconnected")
	mu.Unlock()
	lead.stop(t)
	replicas = []*replica{follower}
	poll(t, "follower becomes leader", 20*time.Second, func() string {
		if !follower.c.Leading() {
			return "not leading"
		}
		return ""
	})
	// The new leader writes: opt web-v2 out; its shadow goes away.
	svc := must(kube.CoreV1().Services("shop").Get(ctx, "web-v2", metav1.GetOptions{}))
	svc.Annotations = map[string]string{"trellis.io/mesh": "false"}
	must(kube.CoreV1().Services("shop").Update(ctx, svc, metav1.UpdateOptions{}))
	poll(t, "opted-out shadow removed and name gone", 20*time.Second, func() string {
		_, err := kube.CoreV1().Services("trellis-system").Get(ctx, shadow.Name("shop", "web-v2"), metav1.GetOptions{})
		if !apierrors.IsNotFound(err) {
			return fmt.Sprintf("shadow still there (%v)", err)
		}
		if _, rc, _ := lookup(follower.dns, "web-v2.shop.mesh."); rc != dns.RcodeNameError {
			return fmt.Sprintf("rcode %d", rc)
		}
		return ""
	})
	mu.Lock()
	if n := count(events, "disconnected"); n != disconnectsBefore {
		t.Errorf("the proxy's stream on the surviving replica was disconnected by the fail-over (%d -> %d)", disconnectsBefore, n)
	}
	mu.Unlock()

	// --- a restarted replica keeps the port assignments.
	again := startReplica(t, cfg, "ctrl-2", s)
	poll(t, "a new replica serves db on its recorded proxy port", 20*time.Second, func() string {
		res, _, _ := again.c.Hub().Current()
		n := res.Node("node-b")
		if !again.c.Ready() || n == nil {
			return "not ready"
		}
		for _, sv := range n.Config().Services {
			if sv.Key() == "shop/db" {
				if sv.Ports[0].ListenPort != dbPort {
					return fmt.Sprintf("db on %d, recorded %d", sv.Ports[0].ListenPort, dbPort)
				}
				return ""
			}
		}
		return "shop/db not in the config"
	})
	again.stop(t)
	scancel()
	follower.stop(t)

	// --- uninstall restores the Corefile and removes every shadow.
	out, err := app.Uninstall(ctx, kube, s)
	if err != nil {
		t.Fatal(err)
	}
	cm := must(kube.CoreV1().ConfigMaps("kube-system").Get(ctx, "coredns", metav1.GetOptions{}))
	if cm.Data["Corefile"] != corefile {
		t.Errorf("Corefile not restored:\n%s", cm.Data["Corefile"])
	}
	left := must(kube.CoreV1().Services("trellis-system").List(ctx, metav1.ListOptions{LabelSelector: shadow.LabelManagedBy + "=" + shadow.ManagedBy}))
	if len(left.Items) != 0 {
		t.Errorf("%d shadows left after uninstall (%s)", len(left.Items), out)
	}
}

func count(evs []source.StreamEvent, kind string) int {
	n := 0
	for _, e := range evs {
		if e.Kind == kind {
			n++
		}
	}
	return n
}

func ptr[T any](v T) *T { return &v }
