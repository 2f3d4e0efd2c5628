package tests

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/trellis-mesh/trellis/node-proxy/config"
)

// TestProxyStaticConfig: the node proxy runs as a pod on node-3 from a
// static config (ACL on, an 80/20 split). A client pod on node-3 reaches
// whoami backends on other nodes through it over HTTP/1.1, h2c, gRPC, TCP
// and UDP; a client whose ServiceAccount has no rule gets a 403 that says why
// and no TCP data; 1,000 requests split within ±5 points of 80/20.
func TestProxyStaticConfig(t *testing.T) {
	ctx := context.Background()
	ns := "e2e-proxy"
	w1 := whoamiPod(t, ns, "web-1", "node-1", map[string]string{"app": "web"}, "")
	w2 := whoamiPod(t, ns, "web-2", "node-2", map[string]string{"app": "web"}, "")
	good := whoamiPod(t, ns, "good", "node-3", nil, "good")
	bad := whoamiPod(t, ns, "bad", "node-3", nil, "bad")

	ep := func(p *corev1.Pod) config.Endpoint {
		return config.Endpoint{IP: p.Status.PodIP, Node: p.Spec.NodeName, Ready: true}
	}
	allow := []config.AccessRule{{Source: "e2e rule for sa/good", Sources: []config.Identity{{ServiceAccount: "good", Namespace: ns}}}}
	httpPorts := []config.ServicePort{{Name: "http", Port: 80, TargetPort: 8080, Protocol: config.ProtocolHTTP, Scheme: config.SchemeHTTP}}
	cfg := config.Config{
		Node: "node-3", MeshDomain: "mesh", Listeners: config.Listeners{HTTP: 10000}, ACL: config.ACLOn,
		LocalPods: []config.LocalPod{
			{IP: good.Status.PodIP, Name: "good", Identity: config.Identity{ServiceAccount: "good", Namespace: ns}},
			{IP: bad.Status.PodIP, Name: "bad", Identity: config.Identity{ServiceAccount: "bad", Namespace: ns}},
		},
		Services: []config.Service{
			{Namespace: ns, Name: "echo-tcp", Ports: []config.ServicePort{{Name: "tcp", Port: 9000, TargetPort: 9000, Protocol: config.ProtocolTCP, ListenPort: 20000}},
				Endpoints: []config.Endpoint{ep(w1)}, Rules: []config.AccessRule{{Source: allow[0].Source, Sources: allow[0].Sources, Ports: []int32{9000}}}},
			{Namespace: ns, Name: "echo-udp", Ports: []config.ServicePort{{Name: "udp", Port: 9001, TargetPort: 9001, Protocol: config.ProtocolUDP, ListenPort: 20001}},
				Endpoints: []config.Endpoint{ep(w2)}, Rules: []config.AccessRule{{Source: allow[0].Source, Sources: allow[0].Sources, Ports: []int32{9001}}}},
			{Namespace: ns, Name: "web", Ports: httpPorts, Endpoints: []config.Endpoint{ep(w1), ep(w2)}, Rules: allow,
				Split: &config.Split{Source: "e2e split", Backends: []config.Backend{{Service: "web-v1", Weight: 80}, {Service: "web-v2", Weight: 20}}}},
			{Namespace: ns, Name: "web-v1", Ports: httpPorts, Endpoints: []config.Endpoint{ep(w1)}, Rules: allow},
			{Namespace: ns, Name: "grpc", Ports: []config.ServicePort{{Name: "grpc", Port: 80, TargetPort: 8080, Protocol: config.ProtocolHTTP, Scheme: config.SchemeH2C}},
				Endpoints: []config.Endpoint{ep(w1)}, Rules: allow},
			{Namespace: ns, Name: "web-v2", Ports: httpPorts, Endpoints: []config.Endpoint{ep(w2)}, Rules: allow},
		},
	}
	body, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.CS.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "proxy-config", Namespace: ns},
		Data:       map[string]string{"config.json": string(body)},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	proxy := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "proxy", Namespace: ns},
		Spec: corev1.PodSpec{
			NodeName: "node-3",
			Containers: []corev1.Container{{
				Name: "proxy", Image: "ghcr.io/trellis-mesh/trellis-proxy:dev",
				Args: []string{"--config=/etc/trellis/config.json", "--node=node-3", "--admin-addr=:15000", "--access-log=false"},
				ReadinessProbe: &corev1.Probe{PeriodSeconds: 1, ProbeHandler: corev1.ProbeHandler{
					HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromInt32(15000)},
				}},
				VolumeMounts: []corev1.VolumeMount{{Name: "config", MountPath: "/etc/trellis", ReadOnly: true}},
			}},
			Volumes: []corev1.Volume{{Name: "config", VolumeSource: corev1.VolumeSource{
				ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "proxy-config"}},
			}}},
		},
	}
	if _, err := env.CS.CoreV1().Pods(ns).Create(ctx, proxy, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p, err := env.WaitPodReady(ctx, ns, "proxy", 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	proxyIP := p.Status.PodIP
	host := "web." + ns + ".mesh"
	curl := func(client string, args ...string) (string, error) {
		return inPod(ctx, ns, client, append([]string{"curl", "-sS", "--max-time", "5"}, args...)...)
	}

	// HTTP/1.1 and h2c with prior knowledge, from an allowed client.
	for _, mode := range [][]string{{"--http1.1"}, {"--http2-prior-knowledge"}} {
		out, err := curl("good", append(mode, "-H", "Host: "+host, "-w", "\nproto=%{http_version} status=%{http_code}", "http://"+proxyIP+":10000/")...)
		if err != nil {
			t.Fatalf("%v: %v", mode, err)
		}
		want := map[string]string{"--http1.1": "proto=1.1", "--http2-prior-knowledge": "proto=2"}[mode[0]]
		if !strings.Contains(out, want+" status=200") || !strings.HasPrefix(reportField(out, "Hostname"), "web-") {
			t.Errorf("%v through the proxy: %q", mode, out)
		}
		if remote := reportField(out, "RemoteAddr"); !strings.HasPrefix(remote, proxyIP+":") {
			t.Errorf("%v: backend saw %s, want the proxy %s", mode, remote, proxyIP)
		}
	}

	// gRPC (h2c end to end, trailers carry the status) to the health service.
	grpcCheck := func(client string) (string, error) {
		return inPod(ctx, ns, client, bins.Path("whoami"), "--grpc-check", proxyIP+":10000", "--authority", "grpc."+ns+".mesh")
	}
	if out, err := grpcCheck("good"); err != nil || reportField(out, "Hostname") != "web-1" ||
		!strings.HasPrefix(reportField(out, "RemoteAddr"), proxyIP+":") || reportField(out, "Status") != "SERVING" {
		t.Errorf("gRPC through the proxy: %q %v", out, err)
	}
	if out, err := grpcCheck("bad"); err == nil {
		t.Errorf("gRPC from a denied client succeeded: %q", out)
	}

	// A client without a rule: 403 with the reason, and no TCP data.
	out, err := curl("bad", "-i", "-H", "Host: "+host, "http://"+proxyIP+":10000/")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out, "HTTP/1.1 403") || !strings.Contains(strings.ToLower(out), "x-trellis-reason:") {
		t.Errorf("denied client got:\n%s", out)
	}
	tcp := func(client string) (string, error) {
		return inPod(ctx, ns, client, "python3", "-c", `
import socket, sys
s = socket.create_connection((sys.argv[1], 20000), timeout=3)
s.sendall(b"hello\n")
data = b""
try:
    while not data.endswith(b"hello\n"):
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
except OSError:
    pass
sys.stdout.write(data.decode())
`, proxyIP)
	}
	if out, err := tcp("good"); err != nil || !strings.HasPrefix(out, "Hostname: web-1") || !strings.HasSuffix(out, "hello\n") {
		t.Errorf("TCP through the proxy: %q %v", out, err)
	}
	if out, _ := tcp("bad"); strings.Contains(out, "Hostname") {
		t.Errorf("TCP from a denied client got data: %q", out)
	}
	udp, err := inPod(ctx, ns, "good", "python3", "-c", `
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.sendto(b"dgram", (sys.argv[1], 20001))
sys.stdout.write(s.recv(4096).decode())
`, proxyIP)
	if err != nil || !strings.HasPrefix(udp, "Hostname: web-2") || !strings.HasSuffix(udp, "dgram") {
		t.Errorf("UDP through the proxy: %q %v", udp, err)
	}

	// 80/20 over 1,000 requests (curl's URL globbing: one process).
	out, err = curl("good", "-H", "Host: "+host, "http://"+proxyIP+":10000/?n=[1-1000]")
	if err != nil {
		t.Fatal(err)
	}
	v1, v2 := strings.Count(out, "Hostname: web-1\n"), strings.Count(out, "Hostname: web-2\n")
	if v1+v2 != 1000 {
		t.Fatalf("split: %d + %d answers, want 1000", v1, v2)
	}
	if share := float64(v1) / 10; share < 75 || share > 85 {
		t.Errorf("split: web-v1 got %.1f%%, want 80±5", share)
	}
	t.Logf("split over 1,000 requests: web-v1 %d, web-v2 %d", v1, v2)
}
