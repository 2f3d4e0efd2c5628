package tests

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellis-mesh/trellis/internal/kube"
)

// rawInPod sends payload from the pod to addr over one TCP connection
// (whoami --raw) and returns what came back, ending with CLOSED or OPEN.
func rawInPod(t *testing.T, ns, pod, addr, payload string, wait time.Duration, slow bool) string {
	t.Helper()
	args := []string{bins.Path("whoami"), "--raw", addr, "--raw-wait", wait.String()}
	if slow {
		args = append(args, "--raw-slow")
	}
	cmd, err := env.Command(context.Background(), ns, pod, args...)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdin = strings.NewReader(payload)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("raw probe from %s to %s: %v: %s", pod, addr, err, out)
	}
	return string(out)
}

// TestZWAttacksAndBadInput (issue 8 item 5) with access control on: forged
// identity headers, the config API without the proxies' credentials,
// request smuggling, oversized headers, header-count bombs, slowloris and
// a burst of malformed SMI objects. Each is denied, refused, rejected or
// reported, and the allowed client keeps being served throughout.
func TestZWAttacksAndBadInput(t *testing.T) {
	logsOnFailure(t, "trellis-system")
	ctx := context.Background()
	cliOK(t, "install", "--acl", "--wait", "3m")
	ns := "e2e-attack"
	whoamiPod(t, ns, "web-1", "node-1", map[string]string{"app": "web"}, "web")
	good := whoamiPod(t, ns, "good", "node-3", map[string]string{"app": "good"}, "good")
	whoamiPod(t, ns, "evil", "node-3", map[string]string{"app": "evil"}, "evil")
	service(t, ns, "web", map[string]string{"app": "web"}, false)
	cliOK(t, "join", "web", "-n", ns)
	cliOK(t, "allow", "--from", "sa/"+ns+"/good", "--to", "sa/"+ns+"/web")
	host := "web." + ns + ".mesh"
	url := "http://" + host + "/"
	code := func(pod string, hdr ...string) string {
		args := []string{"curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "3"}
		for _, h := range hdr {
			args = append(args, "-H", h)
		}
		out, err := inPod(ctx, ns, pod, append(args, url)...)
		if err != nil {
			return "error: " + err.Error()
		}
		return out
	}
	eventually(t, 90*time.Second, "good is allowed, evil denied", func() error {
		if g, e := code("good"), code("evil"); g != "200" || e != "403" {
			return fmt.Errorf("good %s, evil %s", g, e)
		}
		return nil
	})
	lr := startLoad(t, ns, "good", url, 20)

	// Forged identity: headers never grant one.
	for _, h := range []string{
		"X-Forwarded-For: " + good.Status.PodIP, "X-Real-IP: " + good.Status.PodIP,
		"Forwarded: for=" + good.Status.PodIP, "X-Forwarded-Client-Cert: By=spiffe://cluster.local/ns/" + ns + "/sa/good",
		"X-Trellis-Identity: " + ns + "/good",
	} {
		if c := code("evil", h); c != "403" {
			t.Errorf("evil with %q got %s, want 403", h, c)
		}
	}

	// The config API: no token, or a token that is not a proxy's.
	api := "http://trellis-controller.trellis-system.svc.cluster.local:9000/v1/stream"
	if out, _ := inPod(ctx, ns, "evil", "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--http2-prior-knowledge", "--max-time", "5", api); out != "401" {
		t.Errorf("config stream without a token: %s, want 401", out)
	}
	// The token an application pod holds (its ServiceAccount's).
	tr, err := env.CS.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "evil", &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tok := tr.Status.Token
	if out, _ := inPod(ctx, ns, "evil", "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--http2-prior-knowledge", "--max-time", "5",
		"-H", "Authorization: Bearer "+strings.TrimSpace(tok), api); out != "403" {
		t.Errorf("config stream with an application pod's token: %s, want 403", out)
	}
	if out, _ := inPod(ctx, ns, "evil", "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5",
		"-H", "Authorization: Bearer "+strings.TrimSpace(tok), "http://trellis-controller.trellis-system.svc.cluster.local:9000/debug/state"); out != "403" {
		t.Errorf("debug API with an application pod's token: %s, want 403", out)
	}

	// Raw HTTP/1.1 at the mesh name, from the allowed client.
	addr := host + ":80"
	for _, tc := range []struct {
		name, payload, want string
	}{
		{"CL.TE smuggling", "POST / HTTP/1.1\r\nHost: " + host + "\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG", "HTTP/1.1 400"},
		{"TE.CL smuggling", "POST / HTTP/1.1\r\nHost: " + host + "\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n", "HTTP/1.1 400"},
		{"obfuscated TE", "POST / HTTP/1.1\r\nHost: " + host + "\r\nTransfer-Encoding: xchunked\r\nContent-Length: 3\r\n\r\nabc", "HTTP/1.1 "},
		{"duplicate Content-Length", "POST / HTTP/1.1\r\nHost: " + host + "\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", "HTTP/1.1 400"},
		{"oversized header", "GET / HTTP/1.1\r\nHost: " + host + "\r\nX-Big: " + strings.Repeat("a", 40<<10) + "\r\n\r\n", "HTTP/1.1 431"},
		{"header-count bomb", "GET / HTTP/1.1\r\nHost: " + host + "\r\n" + strings.Repeat("X-H: 1\r\n", 200) + "\r\n", "HTTP/1.1 431"},
	} {
		out := rawInPod(t, ns, "good", addr, tc.payload, 5*time.Second, false)
		if !strings.HasPrefix(out, tc.want) || strings.HasPrefix(out, "HTTP/1.1 2") || strings.Contains(out, "SMUGGLED") {
			t.Errorf("%s: answer %.120q, want it to start %q", tc.name, out, tc.want)
		}
		if !strings.Contains(out, "CLOSED") {
			t.Errorf("%s: the connection stayed open after a request that cannot be framed safely", tc.name)
		}
	}
	// Slowloris: headers one byte a second; the proxy's read-header
	// timeout (10s) closes the connection.
	slow := rawInPod(t, ns, "good", addr, "GET / HTTP/1.1\r\nHost: "+host+"\r\nX-Slow: "+strings.Repeat("s", 30)+"\r\n\r\n", 25*time.Second, true)
	if !strings.Contains(slow, "CLOSED after") || strings.Contains(slow, "HTTP/1.1 200") {
		t.Errorf("slowloris: %q, want the proxy to close the connection before the headers end", slow)
	}

	// Malformed SMI objects, many at once: the apiserver's schema rejects
	// what it can; what it lets through is reported by the controller and
	// changes nothing else.
	ap := applier(t)
	rnd := rand.New(rand.NewPCG(8, 8))
	garbage := []string{"", "-", "web", "no-such-svc", strings.Repeat("x", 300), "../../etc", "web\x00", "-1", "1e9"}
	pick := func() string { return garbage[rnd.IntN(len(garbage))] }
	rejected, applied := 0, 0
	for i := range 40 {
		doc := fmt.Sprintf(`
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {name: fuzz-%d, namespace: %s}
spec:
  service: %q
  backends:
    - {service: %q, weight: %d}
    - {service: %q, weight: %d}
`, i, ns, pick(), pick(), rnd.IntN(300)-100, pick(), rnd.IntN(300)-100)
		if i%2 == 1 {
			doc = fmt.Sprintf(`
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: fuzz-%d, namespace: %s}
spec:
  destination: {kind: ServiceAccount, name: %q, namespace: %q}
  sources: [{kind: %q, name: %q, namespace: %q}]
  rules: [{kind: HTTPRouteGroup, name: %q, matches: [%q]}]
`, i, ns, pick(), pick(), pick(), pick(), pick(), pick(), pick())
		}
		objs, err := kube.Decode([]byte(doc))
		if err != nil {
			rejected++
			continue
		}
		if err := ap.Apply(ctx, objs); err != nil {
			rejected++
		} else {
			applied++
		}
	}
	t.Logf("malformed SMI: %d rejected by the apiserver, %d accepted and left to the controller", rejected, applied)
	if g, e := code("good"), code("evil"); g != "200" || e != "403" {
		t.Errorf("after the malformed SMI: good %s, evil %s; want 200 and 403", g, e)
	}
	rep := lr.stop(t)
	t.Logf("the allowed client during the attacks: %d requests, %d failed, p99 %.1f ms", rep.Requests, rep.Failed, rep.P99ms)
	if rep.Requests == 0 || rep.Failed != 0 {
		t.Errorf("%d of %d of the allowed client's requests failed during the attacks: %+v", rep.Failed, rep.Requests, rep.Failures)
	}
	pods, err := env.CS.CoreV1().Pods("trellis-system").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/part-of=trellis"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		for _, cs := range p.Status.ContainerStatuses {
			if cs.RestartCount != 0 {
				t.Errorf("%s restarted %d times during the attacks", p.Name, cs.RestartCount)
			}
		}
	}
}
