package tests

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/trellis-mesh/trellis/e2e/cluster"
)

// whoamiPod runs a whoami pod and waits for it to be Ready.
func whoamiPod(t *testing.T, ns, name, node string, labels map[string]string, sa string) *corev1.Pod {
	t.Helper()
	p, err := env.RunPod(context.Background(), cluster.PodOptions{
		Name: name, Namespace: ns, Node: node, Image: "whoami", Labels: labels, ServiceAccount: sa,
		Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}, ReadinessPort: 8080,
		Wait: 60 * time.Second,
	})
	if err != nil {
		t.Fatalf("pod %s/%s: %v", ns, name, err)
	}
	return p
}

func service(t *testing.T, ns, name string, selector map[string]string, local bool) *corev1.Service {
	t.Helper()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.ServiceSpec{
			Selector: selector,
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}},
		},
	}
	if local {
		p := corev1.ServiceInternalTrafficPolicyLocal
		svc.Spec.InternalTrafficPolicy = &p
	}
	out, err := env.CS.CoreV1().Services(ns).Create(context.Background(), svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("service %s/%s: %v", ns, name, err)
	}
	return out
}

// answers calls url from the client pod n times and counts who answered.
func answers(ns, client, url string, n int) (map[string]int, []string, error) {
	seen := map[string]int{}
	var remotes []string
	for range n {
		out, err := inPod(context.Background(), ns, client, "curl", "-sS", "--max-time", "5", url)
		if err != nil {
			return seen, remotes, fmt.Errorf("curl %s from %s: %w", url, client, err)
		}
		seen[reportField(out, "Hostname")]++
		remote := reportField(out, "RemoteAddr")
		remotes = append(remotes, remote[:max(strings.LastIndexByte(remote, ':'), 0)])
	}
	return seen, remotes, nil
}

// TestServiceAcrossNodes: a Service with pods on two nodes answers from both
// through its DNS name and its ClusterIP, from a pod on a third node, and the
// backends see the client's own pod address.
func TestServiceAcrossNodes(t *testing.T) {
	ns := "e2e-svc"
	a := whoamiPod(t, ns, "web-a", "node-1", map[string]string{"app": "web"}, "")
	b := whoamiPod(t, ns, "web-b", "node-2", map[string]string{"app": "web"}, "")
	client := whoamiPod(t, ns, "client", "node-3", map[string]string{"app": "client"}, "")
	if a.Status.PodIP == b.Status.PodIP || !strings.HasPrefix(a.Status.PodIP, "198.19.1.") || !strings.HasPrefix(b.Status.PodIP, "198.19.2.") {
		t.Fatalf("pod IPs %s, %s: want distinct addresses from node-1's and node-2's ranges", a.Status.PodIP, b.Status.PodIP)
	}
	svc := service(t, ns, "web", map[string]string{"app": "web"}, false)
	if err := env.WaitEndpoints(context.Background(), ns, "web", 2, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, url := range []string{
		"http://web." + ns + ".svc.cluster.local/", // DNS through CoreDNS
		"http://web/",                        // the search path
		"http://" + svc.Spec.ClusterIP + "/", // kube-proxy's DNAT
	} {
		t.Run(url, func(t *testing.T) {
			eventually(t, 30*time.Second, "both pods answer "+url, func() error {
				// kube-proxy programs a new Service shortly after its EndpointSlice.
				seen, remotes, err := answers(ns, "client", url, 12)
				if err != nil {
					return err
				}
				for _, r := range remotes {
					if r != client.Status.PodIP {
						t.Fatalf("backend saw source %s, want the client pod's own address %s", r, client.Status.PodIP)
					}
				}
				if seen["web-a"] == 0 || seen["web-b"] == 0 {
					return fmt.Errorf("answers %v", seen)
				}
				return nil
			})
		})
	}
}

// TestInternalTrafficPolicyLocal: only the pod on the client's node answers,
// and a client on a node without an endpoint gets no answer.
func TestInternalTrafficPolicyLocal(t *testing.T) {
	ns := "e2e-local"
	whoamiPod(t, ns, "web-a", "node-1", map[string]string{"app": "web"}, "")
	whoamiPod(t, ns, "web-b", "node-2", map[string]string{"app": "web"}, "")
	whoamiPod(t, ns, "client-1", "node-1", nil, "")
	whoamiPod(t, ns, "client-3", "node-3", nil, "")
	svc := service(t, ns, "web", map[string]string{"app": "web"}, true)
	if err := env.WaitEndpoints(context.Background(), ns, "web", 2, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	url := "http://" + svc.Spec.ClusterIP + "/"
	// kube-proxy programs the rules shortly after the EndpointSlice changes.
	eventually(t, 20*time.Second, "local endpoint answers", func() error {
		_, err := inPod(context.Background(), ns, "client-1", "curl", "-sS", "--max-time", "2", url)
		return err
	})
	seen, _, err := answers(ns, "client-1", url, 20)
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != 1 || seen["web-a"] != 20 {
		t.Fatalf("from node-1 with internalTrafficPolicy Local: answers %v, want only web-a", seen)
	}
	if out, err := inPod(context.Background(), ns, "client-3", "curl", "-sS", "--max-time", "2", url); err == nil {
		t.Fatalf("from node-3 (no local endpoint) the Service answered: %s", out)
	}
}

// TestPodDeletion: deleting a Pod removes it from the EndpointSlice, stops
// its process after SIGTERM and removes its network namespace.
func TestPodDeletion(t *testing.T) {
	ns := "e2e-delete"
	a := whoamiPod(t, ns, "web-a", "node-1", map[string]string{"app": "web"}, "")
	whoamiPod(t, ns, "web-b", "node-2", map[string]string{"app": "web"}, "")
	service(t, ns, "web", map[string]string{"app": "web"}, false)
	if err := env.WaitEndpoints(context.Background(), ns, "web", 2, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	pid := containerPID(t, a)
	if !cluster.Alive(pid) {
		t.Fatalf("pod web-a's process %d is not running before deletion", pid)
	}
	if err := env.CS.CoreV1().Pods(ns).Delete(context.Background(), "web-a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "web-a leaves the EndpointSlice", func() error {
		eps, err := env.ReadyEndpoints(context.Background(), ns, "web")
		if err != nil {
			return err
		}
		for _, e := range eps {
			if e == a.Status.PodIP {
				return fmt.Errorf("endpoints still list %s: %v", e, eps)
			}
		}
		return nil
	})
	eventually(t, 30*time.Second, "web-a's process stops", func() error {
		if cluster.Alive(pid) {
			return fmt.Errorf("process %d still runs", pid)
		}
		return nil
	})
	eventually(t, 30*time.Second, "web-a's object and namespace are gone", func() error {
		if _, err := env.CS.CoreV1().Pods(ns).Get(context.Background(), "web-a", metav1.GetOptions{}); err == nil {
			return fmt.Errorf("pod object still exists")
		}
		if _, err := os.Stat(filepath.Join("/run/netns", "trlp-"+string(a.UID))); err == nil {
			return fmt.Errorf("network namespace still exists")
		}
		return nil
	})
}

// TestPodIdentityAndRestart: a pod's processes talk to the apiserver as
// their own ServiceAccount, get downward-API env, and a crashed container
// is restarted.
func TestPodIdentityAndRestart(t *testing.T) {
	ns := "e2e-pod"
	p := whoamiPod(t, ns, "app", "node-2", nil, "robot")
	kubeconfig := filepath.Join(state, "pods", fmt.Sprintf("%s_%s_%s", ns, p.Name, p.UID), "kubeconfig")
	out, err := inPod(context.Background(), ns, "app", bins.Path("kubectl"), "--kubeconfig", kubeconfig, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
	if err != nil {
		t.Fatalf("kubectl auth whoami from the pod: %v", err)
	}
	if want := "system:serviceaccount:" + ns + ":robot"; out != want {
		t.Fatalf("pod identity %q, want %q", out, want)
	}
	pid := containerPID(t, p)
	envb, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(envb), "HOSTNAME=app\x00") || !strings.Contains(string(envb), "KUBECONFIG="+kubeconfig) {
		t.Fatalf("container environment lacks HOSTNAME/KUBECONFIG: %q", envb)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the crashed container restarts and is ready", func() error {
		cur, err := env.CS.CoreV1().Pods(ns).Get(context.Background(), "app", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(cur.Status.ContainerStatuses) == 0 || cur.Status.ContainerStatuses[0].RestartCount < 1 || !cluster.PodReady(cur) {
			return fmt.Errorf("restarts %v ready %v", cur.Status.ContainerStatuses, cluster.PodReady(cur))
		}
		return nil
	})
}

// TestWorkloadControllers: a Deployment and a DaemonSet roll out through the
// real controllers and scheduler, and a DaemonSet update with maxSurge 1
// replaces every pod while keeping one ready per node.
func TestWorkloadControllers(t *testing.T) {
	ns := "e2e-workloads"
	ctx := context.Background()
	if _, err := env.CS.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{"app": "ds"}
	tmpl := corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: labels},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "whoami", Image: "ghcr.io/trellis-mesh/whoami:dev", Args: []string{"--name", "v1"},
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
			ReadinessProbe: &corev1.Probe{PeriodSeconds: 1, ProbeHandler: corev1.ProbeHandler{
				HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http")},
			}},
		}}},
	}
	one := intstr.FromInt32(1)
	zero := intstr.FromInt32(0)
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "ds", Namespace: ns},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: tmpl,
			UpdateStrategy: appsv1.DaemonSetUpdateStrategy{Type: appsv1.RollingUpdateDaemonSetStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDaemonSet{MaxSurge: &one, MaxUnavailable: &zero}},
		},
	}
	if _, err := env.CS.AppsV1().DaemonSets(ns).Create(ctx, ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dtmpl := tmpl.DeepCopy()
	dtmpl.Labels = map[string]string{"app": "deploy"}
	replicas := int32(2)
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "deploy", Namespace: ns},
		Spec:       appsv1.DeploymentSpec{Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: dtmpl.Labels}, Template: *dtmpl},
	}
	if _, err := env.CS.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dsReady := func(gen int64) func() error {
		return func() error {
			d, err := env.CS.AppsV1().DaemonSets(ns).Get(ctx, "ds", metav1.GetOptions{})
			if err != nil {
				return err
			}
			s := d.Status
			if s.ObservedGeneration < gen || s.DesiredNumberScheduled != 3 || s.UpdatedNumberScheduled != 3 || s.NumberReady != 3 || s.NumberAvailable != 3 {
				return fmt.Errorf("daemonset status %+v", s)
			}
			return nil
		}
	}
	eventually(t, 90*time.Second, "daemonset ready on 3 nodes", dsReady(1))
	eventually(t, 90*time.Second, "deployment 2/2 available", func() error {
		d, err := env.CS.AppsV1().Deployments(ns).Get(ctx, "deploy", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if d.Status.AvailableReplicas != 2 {
			return fmt.Errorf("deployment status %+v", d.Status)
		}
		return nil
	})
	// Roll the DaemonSet; with maxUnavailable 0 every node keeps a ready pod.
	cur, err := env.CS.AppsV1().DaemonSets(ns).Get(ctx, "ds", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur.Spec.Template.Spec.Containers[0].Args = []string{"--name", "v2"}
	upd, err := env.CS.AppsV1().DaemonSets(ns).Update(ctx, cur, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(120 * time.Second)
	for dsReady(upd.Generation)() != nil {
		pods, err := env.CS.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=ds"})
		if err != nil {
			t.Fatal(err)
		}
		readyPerNode := map[string]int{}
		for i := range pods.Items {
			if cluster.PodReady(&pods.Items[i]) && pods.Items[i].DeletionTimestamp == nil {
				readyPerNode[pods.Items[i].Spec.NodeName]++
			}
		}
		for _, n := range []string{"node-1", "node-2", "node-3"} {
			if readyPerNode[n] == 0 {
				t.Fatalf("during the rollout %s had no ready pod (maxUnavailable 0): %v", n, readyPerNode)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemonset rollout not done: %v", dsReady(upd.Generation)())
		}
		time.Sleep(100 * time.Millisecond) // polling interval, bounded by the deadline
	}
}

// TestBadInput: the CLI refuses mistakes with one clear line and creates
// nothing.
func TestBadInput(t *testing.T) {
	whoamiPod(t, "e2e-bad", "taken", "node-1", nil, "")
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"pod", "run", "x1", "--image", "nginx"}, `image "nginx" is not in the local image table`},
		{[]string{"pod", "run", "x2", "--node", "node-9"}, `--node "node-9": no such node`},
		{[]string{"pod", "run", "taken", "-n", "e2e-bad", "--node", "node-2"}, "pod e2e-bad/taken already exists"},
		{[]string{"pod", "run", "x3", "--label", "novalue"}, `--label "novalue": want key=value`},
		{[]string{"exec", "nosuchpod", "--", "true"}, "pod default/nosuchpod not found"},
		{[]string{"up", "--nodes", "5"}, "a cluster with 3 nodes is already up"},
	}
	for _, c := range cases {
		out, err := dev(c.args...)
		if err == nil {
			t.Errorf("trellis-dev %s: succeeded, want an error", strings.Join(c.args, " "))
			continue
		}
		if !strings.Contains(out, c.want) || strings.Count(strings.TrimSpace(out), "\n") > 0 {
			t.Errorf("trellis-dev %s: output %q, want one line containing %q", strings.Join(c.args, " "), out, c.want)
		}
	}
	for _, name := range []string{"x1", "x2", "x3"} {
		if _, err := env.CS.CoreV1().Pods("default").Get(context.Background(), name, metav1.GetOptions{}); err == nil {
			t.Errorf("pod default/%s was created by a refused command", name)
		}
	}
	out, err := dev("up")
	if err != nil || !strings.Contains(out, "cluster already up") {
		t.Errorf("second `up`: %v %q, want it to say the cluster is already up", err, out)
	}
}

func containerPID(t *testing.T, p *corev1.Pod) int {
	t.Helper()
	cur, err := env.CS.CoreV1().Pods(p.Namespace).Get(context.Background(), p.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	id := cur.Status.ContainerStatuses[0].ContainerID
	pid, err := strconv.Atoi(strings.TrimPrefix(id, "trellis-dev://"))
	if err != nil {
		t.Fatalf("containerID %q: %v", id, err)
	}
	// The recorded process is `ip netns exec`, which execs pod-init, which
	// execs the binary: one pid all along.
	return pid
}

// TestCoreDNSReloadsConfigMap: cluster DNS reads its Corefile from the
// kube-system/coredns ConfigMap as in real clusters; an edit reaches the
// mounted file and CoreDNS's reload plugin serves it, and reverting it
// takes the name away again.
func TestCoreDNSReloadsConfigMap(t *testing.T) {
	ctx := context.Background()
	whoamiPod(t, "e2e-dns", "client", "node-2", nil, "")
	cms := env.CS.CoreV1().ConfigMaps("kube-system")
	cm, err := cms.Get(ctx, "coredns", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	original := cm.Data["Corefile"]
	const name = "api.trellis.test"
	lookup := func() (string, error) {
		out, err := inPod(ctx, "e2e-dns", "client", "getent", "hosts", name)
		return strings.TrimSpace(out), err
	}
	if out, err := lookup(); err == nil {
		t.Fatalf("%s resolves before the edit: %s", name, out)
	}
	cm.Data["Corefile"] = strings.Replace(original, "    errors\n", "    errors\n    hosts {\n        198.18.0.1 "+name+"\n        fallthrough\n    }\n", 1)
	if cm.Data["Corefile"] == original {
		t.Fatal("could not find the errors plugin line in the Corefile to insert after")
	}
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 45*time.Second, name+" resolves after the ConfigMap edit", func() error {
		out, err := lookup()
		if err != nil {
			return err
		}
		if !strings.HasPrefix(out, "198.18.0.1") {
			return fmt.Errorf("resolved to %q", out)
		}
		return nil
	})
	cm, err = cms.Get(ctx, "coredns", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm.Data["Corefile"] = original
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 45*time.Second, name+" stops resolving after the revert", func() error {
		if out, err := lookup(); err == nil {
			return fmt.Errorf("still resolves: %s", out)
		}
		return nil
	})
}
