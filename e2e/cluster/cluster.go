package cluster

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"github.com/trellis-mesh/trellis/e2e/toolchain"
	"github.com/trellis-mesh/trellis/internal/kube"
)

//go:embed addons/coredns.yaml
var corednsYAML []byte

// Fixed addresses of the one cluster a machine runs.
const (
	APIServerPort = 6443
	etcdPort      = 32379 // and 32380 for peers; uncommon, to stay clear of a real etcd
)

// Config describes the cluster to run.
type Config struct {
	Nodes    int            // number of nodes, 1..200
	StateDir string         // where state, logs and kubeconfig live
	Bins     toolchain.Bins // built binaries
	Self     string         // path of the trellis-dev binary (runs pod-init)
	Sandbox  bool           // started by SandboxCommand: prepare the sandbox first
}

// Phase of a cluster, as written in status.json.
type Phase string

// Phases.
const (
	PhaseStarting Phase = "starting"
	PhaseReady    Phase = "ready"
	PhaseFailed   Phase = "failed"
	PhaseStopping Phase = "stopping"
)

// Status is what the supervisor reports in StateDir/status.json.
type Status struct {
	Phase      Phase             `json:"phase"`
	PID        int               `json:"pid"`
	Nodes      []string          `json:"nodes"`
	Kubeconfig string            `json:"kubeconfig"`
	APIServer  string            `json:"apiserver"`
	Message    string            `json:"message,omitempty"`
	Progress   []string          `json:"progress"`
	Started    time.Time         `json:"started"`
	ReadyAfter string            `json:"readyAfter,omitempty"`
	Images     map[string]string `json:"images"`
	Sandbox    bool              `json:"sandbox,omitempty"` // runs in an unprivileged user namespace held by PID
}

// DefaultStateDir is $TRELLIS_STATE, else $XDG_STATE_HOME/trellis-dev, else
// ~/.local/state/trellis-dev.
func DefaultStateDir() string {
	if d := os.Getenv("TRELLIS_STATE"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "trellis-dev")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "state", "trellis-dev")
	}
	return filepath.Join(os.TempDir(), "trellis-dev")
}

// ReadStatus reads the supervisor's status; a missing file is a nil status.
func ReadStatus(stateDir string) (*Status, error) {
	b, err := os.ReadFile(filepath.Join(stateDir, "status.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var st Status
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(stateDir, "status.json"), err)
	}
	return &st, nil
}

// Alive reports whether the supervisor that wrote st still runs.
func (st *Status) Alive() bool { return st != nil && alive(st.PID) }

// supervisor is the running cluster.
type supervisor struct {
	cfg    Config
	mu     sync.Mutex
	status Status
	nodes  []node
	cp     *ControlPlane
	procs  []*proc
	// apiRestarts are when the apiserver was last restarted (watch only).
	apiRestarts []time.Time
}

func (s *supervisor) progress(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	line := fmt.Sprintf(format, args...)
	s.status.Progress = append(s.status.Progress, line)
	s.writeStatus()
}

func (s *supervisor) setPhase(p Phase, msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status.Phase, s.status.Message = p, msg
	if p == PhaseReady {
		s.status.ReadyAfter = time.Since(s.status.Started).Round(100 * time.Millisecond).String()
	}
	s.writeStatus()
}

func (s *supervisor) writeStatus() {
	b, _ := json.MarshalIndent(s.status, "", "  ")
	tmp := filepath.Join(s.cfg.StateDir, "status.json.tmp")
	if os.WriteFile(tmp, b, 0o644) == nil {
		_ = os.Rename(tmp, filepath.Join(s.cfg.StateDir, "status.json"))
	}
}

// Run brings the cluster up and keeps it running until ctx ends, then tears
// everything down. It reports progress and phase in StateDir/status.json.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Nodes < 1 || cfg.Nodes > maxNodes {
		return fmt.Errorf("--nodes %d: must be between 1 and %d", cfg.Nodes, maxNodes)
	}
	if err := os.MkdirAll(cfg.StateDir, 0o755); err != nil {
		return err
	}
	s := &supervisor{cfg: cfg, status: Status{
		Phase: PhaseStarting, PID: os.Getpid(), Started: time.Now(),
		Kubeconfig: filepath.Join(cfg.StateDir, "admin.kubeconfig"),
		APIServer:  "https://" + apiserverIP + ":" + strconv.Itoa(APIServerPort),
	}}
	s.status.Images = imageTable(cfg.Bins)
	s.status.Sandbox = cfg.Sandbox
	for i := 1; i <= cfg.Nodes; i++ {
		n := newNode(i)
		s.nodes = append(s.nodes, n)
		s.status.Nodes = append(s.status.Nodes, n.Name)
	}
	s.writeStatus()
	kctx, stopKubelet := context.WithCancel(context.Background())
	kubeletDone := make(chan struct{})
	err := s.start(ctx, kctx, kubeletDone)
	if err != nil {
		s.setPhase(PhaseFailed, err.Error())
	} else {
		s.setPhase(PhaseReady, "")
		err = s.watch(ctx)
	}
	s.setPhase(PhaseStopping, "")
	stopKubelet()
	select {
	case <-kubeletDone:
	case <-time.After(60 * time.Second):
	}
	s.stop()
	if err != nil {
		s.setPhase(PhaseFailed, err.Error())
	}
	return err
}

func (s *supervisor) start(ctx, kctx context.Context, kubeletDone chan struct{}) error {
	cfg := s.cfg
	done := func() { close(kubeletDone) }
	if cfg.Sandbox {
		s.progress("sandbox: unprivileged user, network and mount namespaces (no root needed)")
		if err := prepareSandbox(ctx, cfg.StateDir); err != nil {
			done()
			return err
		}
	}
	if err := Preflight(cfg.Bins); err != nil {
		done()
		return err
	}
	for _, p := range []int{etcdPort, etcdPort + 1} {
		if err := portFree("127.0.0.1", p); err != nil {
			done()
			return err
		}
	}
	s.progress("network: bridge %s (%s), %d node namespaces", bridgeName, bridgeCIDR, len(s.nodes))
	if err := setupBridge(ctx); err != nil {
		done()
		return err
	}
	for _, n := range s.nodes {
		if err := setupNode(ctx, n, s.nodes); err != nil {
			done()
			return err
		}
	}
	s.progress("control plane: etcd and kube-apiserver on %s:%d", apiserverIP, APIServerPort)
	cp, err := StartControlPlane(ctx, ControlPlaneOptions{
		Dir: cfg.StateDir, Bins: cfg.Bins, BindIP: apiserverIP, Port: APIServerPort, EtcdPort: etcdPort,
	})
	if err != nil {
		done()
		return err
	}
	s.cp = cp
	rc, err := cp.RestConfig()
	if err != nil {
		done()
		return err
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		done()
		return err
	}
	s.progress("nodes: %s", strings.Join(s.status.Nodes, ", "))
	for _, n := range s.nodes {
		if err := registerNode(ctx, cs, n); err != nil {
			done()
			return err
		}
	}
	if err := s.startComponents(); err != nil {
		done()
		return err
	}
	// The kubelet stand-in runs pods from here on.
	broadcaster := record.NewBroadcaster(record.WithContext(kctx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: cs.CoreV1().Events("")})
	k := &kubelet{
		cs: cs, images: s.status.Images, self: cfg.Self, dir: filepath.Join(cfg.StateDir, "pods"),
		apiURL: cp.URL, caFile: cp.pki.CA(),
		recorder: broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "kubelet"}),
		nodes:    map[string]node{},
		queue:    workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]()),
		running:  map[types.UID]*podRuntime{}, slots: map[string]map[int]types.UID{},
	}
	for _, n := range s.nodes {
		k.nodes[n.Name] = n
	}
	factory := informers.NewSharedInformerFactory(cs, 0)
	go func() {
		defer done()
		defer broadcaster.Shutdown()
		k.run(kctx, factory)
	}()
	s.progress("cluster DNS: CoreDNS behind kube-dns (%s)", dnsServiceIP)
	ap, err := kube.NewApplier(rc, "trellis-dev")
	if err != nil {
		return err
	}
	objs, err := kube.Decode(corednsYAML)
	if err != nil {
		return err
	}
	if err := ap.Apply(ctx, objs); err != nil {
		return err
	}
	if err := waitDeploymentReady(ctx, cs, "kube-system", "coredns", 120*time.Second, s.healthy); err != nil {
		return fmt.Errorf("CoreDNS did not become ready: %w (see %s)", err, filepath.Join(cfg.StateDir, "pods"))
	}
	return nil
}

// startComponents starts kube-controller-manager, kube-scheduler and one
// kube-proxy per node.
func (s *supervisor) startComponents() error {
	cfg := s.cfg
	kcm, err := s.cp.WriteKubeconfig("controller-manager", "system:kube-controller-manager", nil)
	if err != nil {
		return err
	}
	sched, err := s.cp.WriteKubeconfig("scheduler", "system:kube-scheduler", nil)
	if err != nil {
		return err
	}
	kp, err := s.cp.WriteKubeconfig("kube-proxy", "system:kube-proxy", nil)
	if err != nil {
		return err
	}
	logs, pids := filepath.Join(cfg.StateDir, "logs"), filepath.Join(cfg.StateDir, "pids")
	s.progress("controllers: kube-controller-manager, kube-scheduler")
	specs := []procSpec{
		{Name: "kube-controller-manager", Argv: []string{cfg.Bins.Path("kube-controller-manager"),
			"--kubeconfig=" + kcm, "--leader-elect=false", "--secure-port=0",
			"--controllers=" + strings.Join(kcmControllers, ","),
			"--service-account-private-key-file=" + s.cp.pki.SAKey(),
			"--root-ca-file=" + s.cp.pki.CA(),
			"--use-service-account-credentials=true",
			"--endpointslice-updates-batch-period=0s",
			"--v=1"}},
		{Name: "kube-scheduler", Argv: []string{cfg.Bins.Path("kube-scheduler"),
			"--kubeconfig=" + sched, "--leader-elect=false", "--secure-port=0", "--v=1"}},
	}
	for _, n := range s.nodes {
		specs = append(specs, procSpec{Name: "kube-proxy-" + n.Name, Netns: n.Netns, Argv: []string{cfg.Bins.Path("kube-proxy"),
			"--kubeconfig=" + kp, "--hostname-override=" + n.Name, "--proxy-mode=nftables",
			"--detect-local-mode=NodeCIDR",
			"--conntrack-max-per-core=0", "--conntrack-tcp-timeout-established=0s",
			"--conntrack-tcp-timeout-close-wait=0s", "--oom-score-adj=0", "--v=1"}})
	}
	s.progress("kube-proxy (nftables) in %d node namespaces", len(s.nodes))
	for _, sp := range specs {
		sp.Log, sp.Pids = filepath.Join(logs, sp.Name+".log"), pids
		p, err := startProc(sp)
		if err != nil {
			return err
		}
		s.procs = append(s.procs, p)
	}
	return nil
}

// kcmControllers are the kube-controller-manager controllers the cluster
// runs: enough for Services, Deployments and DaemonSets to behave as in a
// real cluster.
var kcmControllers = []string{
	"endpointslice-controller", "endpointslice-mirroring-controller", "serviceaccount-controller",
	"namespace-controller", "garbage-collector-controller", "deployment-controller",
	"replicaset-controller", "daemonset-controller", "statefulset-controller",
	"disruption-controller", "job-controller", "root-ca-certificate-publisher-controller",
	"clusterrole-aggregation-controller", "service-cidr-controller", "pod-garbage-collector-controller",
}

// watch keeps the cluster running: a control-plane process that exits ends
// the supervisor with an error naming it; others are restarted.
func (s *supervisor) watch(ctx context.Context) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := s.cp.Alive(); err != nil {
			// The apiserver may go away (a test restarts it, or it crashed):
			// start it again, unless it keeps failing. etcd exiting ends
			// the cluster.
			if !s.cp.APIServerExited() || len(recentRestarts(&s.apiRestarts, time.Minute)) > 3 {
				return err
			}
			s.progress("kube-apiserver exited; restarting it")
			if rerr := s.cp.RestartAPIServer(ctx); rerr != nil {
				return fmt.Errorf("%w; restarting it: %w", err, rerr)
			}
			s.progress("kube-apiserver is back")
		}
		for i, p := range s.procs {
			if done, err := p.Exited(); done {
				s.progress("%s exited (%v); restarting", p.name, err)
				np, err := startProc(procSpec{Name: p.name, Argv: p.cmd.Args, Log: filepath.Join(s.cfg.StateDir, "logs", p.name+".log"), Pids: filepath.Join(s.cfg.StateDir, "pids")})
				if err == nil {
					s.procs[i] = np
				}
			}
		}
	}
}

// recentRestarts records a restart now and returns those within window.
func recentRestarts(times *[]time.Time, window time.Duration) []time.Time {
	now := time.Now()
	kept := (*times)[:0]
	for _, t := range *times {
		if now.Sub(t) < window {
			kept = append(kept, t)
		}
	}
	*times = append(kept, now)
	return *times
}

// healthy fails with the log tail of the first component that exited.
func (s *supervisor) healthy() error {
	if err := s.cp.Alive(); err != nil {
		return err
	}
	for _, p := range s.procs {
		if done, err := p.Exited(); done {
			return fmt.Errorf("%s exited (%w):\n%s", p.name, err, tailLogs(s.cfg.StateDir, p.name))
		}
	}
	return nil
}

// stop stops components, the control plane and the network, in that order.
func (s *supervisor) stop() {
	for _, p := range s.procs {
		p.Stop(5 * time.Second)
	}
	if s.cp != nil {
		s.cp.Stop()
	}
	_, _ = Cleanup(context.Background(), s.cfg.StateDir)
}

// registerNode creates the Node object with the status a kubelet reports.
func registerNode(ctx context.Context, cs kubernetes.Interface, n node) error {
	obj := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: map[string]string{
			"kubernetes.io/hostname": n.Name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
			"topology.kubernetes.io/zone": n.Zone,
		}},
		Spec: corev1.NodeSpec{PodCIDR: n.PodCIDR(), PodCIDRs: []string{n.PodCIDR()}},
	}
	created, err := cs.CoreV1().Nodes().Create(ctx, obj, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	capacity := corev1.ResourceList{
		corev1.ResourceCPU: resource.MustParse("4"), corev1.ResourceMemory: resource.MustParse("8Gi"),
		corev1.ResourcePods: resource.MustParse("250"),
	}
	now := metav1.Now()
	created.Status = corev1.NodeStatus{
		Capacity: capacity, Allocatable: capacity,
		Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: n.IP}, {Type: corev1.NodeHostName, Address: n.Name}},
		Conditions: []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			Message: "trellis-dev kubelet is posting ready status", LastHeartbeatTime: now, LastTransitionTime: now,
		}},
		NodeInfo: corev1.NodeSystemInfo{KubeletVersion: "v1.37.1", OperatingSystem: "linux", Architecture: "amd64", ContainerRuntimeVersion: "trellis-dev://1"},
	}
	updated, err := cs.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{})
	if err != nil {
		return fmt.Errorf("node %s status: %w", n.Name, err)
	}
	// The apiserver taints new nodes not-ready; the node lifecycle
	// controller (not run here: there are no kubelet heartbeats to watch)
	// would lift it once Ready, so do that.
	var keep []corev1.Taint
	for _, t := range updated.Spec.Taints {
		if t.Key != corev1.TaintNodeNotReady {
			keep = append(keep, t)
		}
	}
	updated.Spec.Taints = keep
	if _, err := cs.CoreV1().Nodes().Update(ctx, updated, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("node %s taints: %w", n.Name, err)
	}
	return nil
}

// waitDeploymentReady polls until the Deployment has all replicas available.
func waitDeploymentReady(ctx context.Context, cs kubernetes.Interface, ns, name string, timeout time.Duration, healthy func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		if err := healthy(); err != nil {
			return err
		}
		d, err := cs.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil && d.Spec.Replicas != nil && d.Status.AvailableReplicas >= *d.Spec.Replicas && d.Status.ObservedGeneration >= d.Generation {
			return nil
		}
		if time.Now().After(deadline) {
			if err != nil {
				return err
			}
			return fmt.Errorf("deployment %s/%s: %d of %d replicas available after %s", ns, name, d.Status.AvailableReplicas, *d.Spec.Replicas, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// imageTable maps image names to binaries.
func imageTable(b toolchain.Bins) Images {
	im := Images{"coredns": b.Path("coredns")}
	for name := range toolchain.Own {
		if p := b.Path(name); fileExists(p) {
			im[name] = p
		}
	}
	return im
}

// Preflight checks what the cluster needs before anything is created.
func Preflight(b toolchain.Bins) error {
	if os.Geteuid() != 0 {
		return ErrNotRoot
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := lookPath(tool); err != nil {
			pkg := map[string]string{"ip": "iproute2", "nft": "nftables"}[tool]
			return fmt.Errorf("%s not found: kube-proxy's nftables mode and the node network need it; install it with `apt-get update && apt-get install -y %s` (or `go tool task deps`)", tool, pkg)
		}
	}
	for _, m := range toolchain.Upstream {
		for name := range m.Commands {
			if !fileExists(b.Path(name)) {
				return fmt.Errorf("%s is not built: run `go tool task tools` first", name)
			}
		}
	}
	return nil
}

// ErrNotRoot explains why the cluster needs root.
var ErrNotRoot = errors.New("the local cluster needs root or unprivileged user namespaces: it creates network namespaces, veth links and nftables rules (kube-proxy); run it as root (e.g. `sudo -E go tool task demo`), or enable user namespaces (sysctl kernel.unprivileged_userns_clone=1 / user.max_user_namespaces > 0)")
