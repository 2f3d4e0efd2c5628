package cluster

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Client talks to a running cluster on behalf of the CLI and the tests.
type Client struct {
	State  string
	Status *Status
	Config *rest.Config
	CS     kubernetes.Interface
}

// Connect reads the running cluster's status and builds an admin client.
func Connect(stateDir string) (*Client, error) {
	st, err := ReadStatus(stateDir)
	if err != nil {
		return nil, err
	}
	if !st.Alive() {
		return nil, fmt.Errorf("no cluster is running (state %s): start one with `trellis-dev up`", stateDir)
	}
	if st.Phase != PhaseReady {
		return nil, fmt.Errorf("the cluster is %s, not ready yet", st.Phase)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", st.Kubeconfig)
	if err != nil {
		return nil, err
	}
	// Inline the certificate files: client-go caches transports by file
	// path, and a restarted cluster reuses the paths with new keys.
	if err := rest.LoadTLSFiles(cfg); err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &Client{State: stateDir, Status: st, Config: cfg, CS: cs}, nil
}

// PodOptions describes a pod for RunPod.
type PodOptions struct {
	Name, Namespace, Node string
	Image                 string
	ServiceAccount        string
	Labels                map[string]string
	Args                  []string
	Env                   map[string]string
	Ports                 []corev1.ContainerPort
	ReadinessPort         int32         // when set, an httpGet /healthz readiness probe on this port
	Wait                  time.Duration // wait this long for Ready (0: do not wait)
}

// RunPod validates opts, creates the namespace and ServiceAccount when
// missing, creates the Pod bound to its node, and optionally waits for it
// to be Ready. Every validation error names the flag to fix.
func (c *Client) RunPod(ctx context.Context, o PodOptions) (*corev1.Pod, error) {
	if o.Namespace == "" {
		o.Namespace = metav1.NamespaceDefault
	}
	if o.Name == "" {
		return nil, fmt.Errorf("pod name is required")
	}
	if !contains(c.Status.Nodes, o.Node) {
		return nil, fmt.Errorf("--node %q: no such node (nodes: %s)", o.Node, strings.Join(c.Status.Nodes, ", "))
	}
	if _, err := Images(c.Status.Images).Resolve(o.Image); err != nil {
		return nil, fmt.Errorf("--image: %w", err)
	}
	if _, err := c.CS.CoreV1().Pods(o.Namespace).Get(ctx, o.Name, metav1.GetOptions{}); err == nil {
		return nil, fmt.Errorf("pod %s/%s already exists: pick another name or delete it (kubectl delete pod -n %s %s)", o.Namespace, o.Name, o.Namespace, o.Name)
	}
	if err := c.ensureNamespace(ctx, o.Namespace); err != nil {
		return nil, err
	}
	sa := o.ServiceAccount
	if sa == "" {
		sa = "default"
	} else if err := c.ensureServiceAccount(ctx, o.Namespace, sa); err != nil {
		return nil, err
	}
	ctr := corev1.Container{Name: ImageName(o.Image), Image: o.Image, Args: o.Args, Ports: o.Ports}
	keys := make([]string, 0, len(o.Env))
	for k := range o.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		ctr.Env = append(ctr.Env, corev1.EnvVar{Name: k, Value: o.Env[k]})
	}
	if o.ReadinessPort != 0 {
		ctr.ReadinessProbe = &corev1.Probe{PeriodSeconds: 1, ProbeHandler: corev1.ProbeHandler{
			HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intOrStr(o.ReadinessPort)},
		}}
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: o.Name, Namespace: o.Namespace, Labels: o.Labels},
		Spec: corev1.PodSpec{
			NodeName: o.Node, ServiceAccountName: sa, Containers: []corev1.Container{ctr},
			TerminationGracePeriodSeconds: ptr(int64(5)),
		},
	}
	created, err := c.CS.CoreV1().Pods(o.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("creating pod %s/%s: %w", o.Namespace, o.Name, err)
	}
	if o.Wait == 0 {
		return created, nil
	}
	return c.WaitPodReady(ctx, o.Namespace, o.Name, o.Wait)
}

// WaitPodReady polls until the pod is Ready, failing early with the
// container's waiting reason if it cannot start.
func (c *Client) WaitPodReady(ctx context.Context, ns, name string, timeout time.Duration) (*corev1.Pod, error) {
	deadline := time.Now().Add(timeout)
	for {
		p, err := c.CS.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		if PodReady(p) {
			return p, nil
		}
		for _, cs := range p.Status.ContainerStatuses {
			if w := cs.State.Waiting; w != nil && (w.Reason == "ErrImagePull" || w.Reason == "CreateContainerError") {
				return p, fmt.Errorf("pod %s/%s: %s: %s", ns, name, w.Reason, w.Message)
			}
		}
		if time.Now().After(deadline) {
			return p, fmt.Errorf("pod %s/%s not ready after %s (phase %s); see `trellis-dev logs -n %s %s`", ns, name, timeout, p.Status.Phase, ns, name)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// PodReady reports the pod's Ready condition.
func PodReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// Command returns a command that runs argv inside the pod's network
// namespace (with the pod's address and resolv.conf), like kubectl exec.
func (c *Client) Command(ctx context.Context, ns, name string, argv ...string) (*exec.Cmd, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("no command given: use `trellis-dev exec POD -- CMD ARGS...`")
	}
	p, err := c.CS.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("pod %s/%s not found", ns, name)
	}
	if err != nil {
		return nil, err
	}
	netns := podNetns(string(p.UID))
	if p.Spec.HostNetwork {
		netns = fmt.Sprintf(nodeNetnsFmt, nodeIndex(p.Spec.NodeName))
	}
	if _, err := os.Stat(filepath.Join("/run/netns", netns)); err != nil {
		return nil, fmt.Errorf("pod %s/%s has no running sandbox on this machine (phase %s)", ns, name, p.Status.Phase)
	}
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", netns}, argv...)...), nil
}

// LogPath returns the log file of a pod's container ("" = the first).
func (c *Client) LogPath(ctx context.Context, ns, name, ctr string) (string, error) {
	p, err := c.CS.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("pod %s/%s: %w", ns, name, err)
	}
	if ctr == "" {
		ctr = p.Spec.Containers[0].Name
	}
	path := filepath.Join(c.State, "pods", fmt.Sprintf("%s_%s_%s", ns, name, p.UID), ctr+".log")
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("pod %s/%s container %s has no log yet", ns, name, ctr)
	}
	return path, nil
}

// PrintStatus writes nodes and pods as tables.
func (c *Client) PrintStatus(ctx context.Context, w io.Writer) error {
	nodes, err := c.CS.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	pods, err := c.CS.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nNODE\tINTERNAL-IP\tPOD-CIDR\tZONE\tPODS")
	for _, n := range nodes.Items {
		count := 0
		for _, p := range pods.Items {
			if p.Spec.NodeName == n.Name {
				count++
			}
		}
		ip := ""
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				ip = a.Address
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\n", n.Name, ip, n.Spec.PodCIDR, n.Labels["topology.kubernetes.io/zone"], count)
	}
	fmt.Fprintln(tw, "\nNAMESPACE\tPOD\tNODE\tIP\tPHASE\tREADY")
	for _, p := range pods.Items {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%v\n", p.Namespace, p.Name, p.Spec.NodeName, p.Status.PodIP, p.Status.Phase, PodReady(&p))
	}
	return tw.Flush()
}

func (c *Client) ensureNamespace(ctx context.Context, ns string) error {
	_, err := c.CS.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("namespace %s: %w", ns, err)
	}
	return nil
}

func (c *Client) ensureServiceAccount(ctx context.Context, ns, sa string) error {
	_, err := c.CS.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa, Namespace: ns}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("--sa %s: %w", sa, err)
	}
	return nil
}

func nodeIndex(name string) int {
	var i int
	_, _ = fmt.Sscanf(name, "node-%d", &i)
	return i
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func ptr[T any](v T) *T { return &v }

func intOrStr(p int32) intstr.IntOrString { return intstr.FromInt32(p) }

// WaitEndpoints polls until the Service's EndpointSlices list at least n
// ready endpoints.
func (c *Client) WaitEndpoints(ctx context.Context, ns, svc string, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		got, err := c.ReadyEndpoints(ctx, ns, svc)
		if err == nil && len(got) >= n {
			return nil
		}
		if time.Now().After(deadline) {
			if err != nil {
				return fmt.Errorf("service %s/%s: %d ready endpoints after %s, want %d: %w", ns, svc, len(got), timeout, n, err)
			}
			return fmt.Errorf("service %s/%s: %d ready endpoints after %s, want %d", ns, svc, len(got), timeout, n)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ReadyEndpoints lists the ready endpoint addresses of a Service.
func (c *Client) ReadyEndpoints(ctx context.Context, ns, svc string) ([]string, error) {
	slices, err := c.CS.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=" + svc})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, s := range slices.Items {
		for _, e := range s.Endpoints {
			if e.Conditions.Ready == nil || *e.Conditions.Ready {
				out = append(out, e.Addresses...)
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

// ReportField returns the value of "Key: value" in a whoami report ("" if
// absent).
func ReportField(report, key string) string {
	for _, l := range strings.Split(report, "\n") {
		if v, ok := strings.CutPrefix(l, key+": "); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
