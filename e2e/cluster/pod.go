package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/runtime"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// podRuntime owns one admitted pod: its network, volumes and containers.
// One goroutine (loop) drives it; other goroutines only send on stopCh or
// volumesDirty.
type podRuntime struct {
	k         *kubelet
	node      node
	uid       types.UID
	key       string
	ns, name  string
	ip        string
	slot      int
	dir       string
	startTime metav1.Time

	stopCh       chan time.Duration // grace period; closed loop ends
	volumesDirty chan struct{}
	stopOnce     sync.Once
	done         chan struct{}

	netns      string
	containers []*container
	volumes    map[string]string // volume name -> folder
	lastStatus *corev1.PodStatus
	failure    string // why the pod cannot start, shown in status
}

// terminate asks the pod to stop with a grace period (idempotent).
func (rt *podRuntime) terminate(grace time.Duration) {
	rt.stopOnce.Do(func() { rt.stopCh <- grace })
}

func (rt *podRuntime) logf(format string, args ...any) {
	runtime.HandleError(fmt.Errorf("pod %s: "+format, append([]any{rt.key}, args...)...))
}

// loop sets the pod up, then supervises its containers until it is told to
// stop, then tears everything down and finishes the deletion.
func (rt *podRuntime) loop(ctx context.Context) {
	defer close(rt.done)
	defer runtime.HandleCrash()
	rt.volumesDirty = make(chan struct{}, 1)
	pod, err := rt.k.pods.Pods(rt.ns).Get(rt.name)
	if err != nil {
		rt.k.release(rt)
		return
	}
	pod = pod.DeepCopy()
	if err := rt.setup(ctx, pod); err != nil {
		rt.failure = err.Error()
		rt.k.recorder.Eventf(pod, corev1.EventTypeWarning, "FailedCreatePodSandBox", "%v", err)
	}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		rt.reconcile(ctx, pod)
		select {
		case grace := <-rt.stopCh:
			rt.shutdown(ctx, pod, grace)
			return
		case <-ctx.Done():
			rt.shutdown(context.Background(), pod, 2*time.Second)
			return
		case <-rt.volumesDirty:
			if p, err := rt.k.pods.Pods(rt.ns).Get(rt.name); err == nil && p.UID == rt.uid {
				_ = rt.writeVolumes(p)
			}
		case <-tick.C:
		}
		if p, err := rt.k.pods.Pods(rt.ns).Get(rt.name); err == nil && p.UID == rt.uid {
			pod = p.DeepCopy()
		}
	}
}

// setup creates the network namespace, volumes and service-account
// credentials, and resolves every container's binary.
func (rt *podRuntime) setup(ctx context.Context, pod *corev1.Pod) error {
	if err := os.MkdirAll(rt.dir, 0o755); err != nil {
		return err
	}
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		rt.containers = append(rt.containers, &container{
			rt: rt, spec: *c.DeepCopy(),
			log: filepath.Join(rt.dir, c.Name+".log"),
		})
	}
	for _, c := range rt.containers {
		bin, err := rt.k.images.Resolve(c.spec.Image)
		if err != nil {
			for _, c2 := range rt.containers {
				c2.waiting = "ErrImagePull"
				c2.message = fmt.Sprintf("container %s: %v", c.spec.Name, err)
			}
			return fmt.Errorf("container %s: %w", c.spec.Name, err)
		}
		c.binary = bin
	}
	if pod.Spec.HostNetwork {
		rt.netns = rt.node.Netns
	} else {
		rt.netns = podNetns(string(rt.uid))
		dns := resolvConf{}
		if pod.Spec.DNSPolicy != corev1.DNSDefault {
			dns = resolvConf{Nameserver: dnsServiceIP, Search: []string{
				pod.Namespace + ".svc." + clusterZone, "svc." + clusterZone, clusterZone,
			}}
		}
		if err := setupPodNetwork(ctx, rt.node, string(rt.uid), rt.ip, dns); err != nil {
			return fmt.Errorf("pod network: %w", err)
		}
	}
	// The token first: the admission-injected kube-api-access volume
	// projects it.
	if err := rt.writeServiceAccount(ctx, pod); err != nil {
		return err
	}
	return rt.writeVolumes(pod)
}

// writeServiceAccount asks the TokenRequest API for a token of the pod's
// ServiceAccount bound to the pod, and writes a kubeconfig and the usual
// token/ca.crt/namespace files.
func (rt *podRuntime) writeServiceAccount(ctx context.Context, pod *corev1.Pod) error {
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	exp := int64(24 * 3600)
	var tr *authv1.TokenRequest
	var err error
	// The ServiceAccount controller creates "default" shortly after the
	// namespace; wait for it instead of failing the pod.
	deadline := time.Now().Add(30 * time.Second)
	for {
		tr, err = rt.k.cs.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, &authv1.TokenRequest{
			Spec: authv1.TokenRequestSpec{
				ExpirationSeconds: &exp,
				BoundObjectRef:    &authv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
			},
		}, metav1.CreateOptions{})
		if err == nil || !apierrors.IsNotFound(err) || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	if err != nil {
		return fmt.Errorf("token for ServiceAccount %s/%s: %w", pod.Namespace, sa, err)
	}
	dir := filepath.Join(rt.dir, "serviceaccount")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	ca, err := os.ReadFile(rt.k.caFile)
	if err != nil {
		return err
	}
	for name, body := range map[string][]byte{"token": []byte(tr.Status.Token), "ca.crt": ca, "namespace": []byte(pod.Namespace)} {
		if err := os.WriteFile(filepath.Join(dir, name), body, 0o644); err != nil {
			return err
		}
	}
	return writeKubeconfigToken(filepath.Join(rt.dir, "kubeconfig"), rt.k.apiURL, filepath.Join(dir, "ca.crt"), filepath.Join(dir, "token"), pod.Namespace)
}

func writeKubeconfigToken(path, server, ca, tokenFile, ns string) error {
	if err := writeKubeconfig(path, server, ca, clientcmdapi.AuthInfo{TokenFile: tokenFile}); err != nil {
		return err
	}
	// The pod's own namespace is the default, as in-cluster config does.
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s := strings.Replace(string(b), "    cluster: trellis-dev\n", "    cluster: trellis-dev\n    namespace: "+ns+"\n", 1)
	return os.WriteFile(path, []byte(s), 0o644)
}

// reconcile starts containers that should run, restarts crashed ones with
// back-off, runs due probes, and reports status when it changed.
func (rt *podRuntime) reconcile(ctx context.Context, pod *corev1.Pod) {
	if rt.failure == "" {
		now := time.Now()
		for _, c := range rt.containers {
			c.step(ctx, pod, now)
		}
	}
	st := rt.status(pod)
	if rt.lastStatus != nil && reflect.DeepEqual(*rt.lastStatus, st) {
		return
	}
	if err := rt.pushStatus(ctx, st); err != nil {
		if !apierrors.IsNotFound(err) {
			rt.logf("status: %v", err)
		}
		return
	}
	rt.lastStatus = &st
}

func (rt *podRuntime) pushStatus(ctx context.Context, st corev1.PodStatus) error {
	cur, err := rt.k.cs.CoreV1().Pods(rt.ns).Get(ctx, rt.name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if cur.UID != rt.uid {
		return apierrors.NewNotFound(corev1.Resource("pods"), rt.name)
	}
	cur.Status = st
	_, err = rt.k.cs.CoreV1().Pods(rt.ns).UpdateStatus(ctx, cur, metav1.UpdateOptions{})
	return err
}

// status derives the PodStatus the kubelet would report.
func (rt *podRuntime) status(pod *corev1.Pod) corev1.PodStatus {
	st := corev1.PodStatus{
		Phase:     corev1.PodPending,
		HostIP:    rt.node.IP,
		HostIPs:   []corev1.HostIP{{IP: rt.node.IP}},
		StartTime: &rt.startTime,
		QOSClass:  pod.Status.QOSClass, // set by the apiserver at creation, immutable
	}
	if rt.failure == "" && rt.netns != "" {
		st.PodIP = rt.ip
		st.PodIPs = []corev1.PodIP{{IP: rt.ip}}
	}
	allRunning, allReady, anyFailed, allDone := true, true, false, true
	for _, c := range rt.containers {
		cs := c.status()
		st.ContainerStatuses = append(st.ContainerStatuses, cs)
		if cs.State.Running == nil {
			allRunning = false
		}
		if !cs.Ready {
			allReady = false
		}
		if t := cs.State.Terminated; t != nil {
			if t.ExitCode != 0 {
				anyFailed = true
			}
		} else {
			allDone = false
		}
	}
	switch {
	case allRunning && len(rt.containers) > 0:
		st.Phase = corev1.PodRunning
	case allDone && len(rt.containers) > 0 && pod.Spec.RestartPolicy != corev1.RestartPolicyAlways:
		st.Phase = corev1.PodSucceeded
		if anyFailed {
			st.Phase = corev1.PodFailed
		}
	}
	if rt.failure != "" {
		st.Message = rt.failure
		st.Reason = "FailedCreatePodSandBox"
	}
	// Conditions keep their transition time until their status changes.
	prev := map[corev1.PodConditionType]corev1.PodCondition{}
	if rt.lastStatus != nil {
		for _, c := range rt.lastStatus.Conditions {
			prev[c.Type] = c
		}
	}
	cond := func(t corev1.PodConditionType, ok bool) corev1.PodCondition {
		s := corev1.ConditionFalse
		if ok {
			s = corev1.ConditionTrue
		}
		if p, found := prev[t]; found && p.Status == s {
			return p
		}
		return corev1.PodCondition{Type: t, Status: s, LastTransitionTime: metav1.Now()}
	}
	ready := allReady && st.Phase == corev1.PodRunning
	st.Conditions = []corev1.PodCondition{
		cond(corev1.PodReadyToStartContainers, rt.failure == "" && rt.netns != ""),
		cond(corev1.PodInitialized, true),
		cond(corev1.ContainersReady, ready),
		cond(corev1.PodReady, ready),
		cond(corev1.PodScheduled, true),
	}
	return st
}

// shutdown stops every container within the grace period (SIGTERM, then
// SIGKILL), removes the pod's network and folder, and completes the
// deletion in the API.
func (rt *podRuntime) shutdown(ctx context.Context, pod *corev1.Pod, grace time.Duration) {
	defer rt.k.release(rt)
	var wg sync.WaitGroup
	for _, c := range rt.containers {
		wg.Add(1)
		go func() { defer wg.Done(); c.stop(ctx, pod, grace) }()
	}
	wg.Wait()
	if rt.netns != "" && rt.netns != rt.node.Netns {
		if err := teardownPodNetwork(context.Background(), string(rt.uid)); err != nil {
			rt.logf("network teardown: %v", err)
		}
	}
	_ = os.RemoveAll(filepath.Join(rt.dir, "volumes"))
	if ctx.Err() == nil {
		if err := rt.k.finalize(ctx, pod); err != nil {
			rt.logf("finalize: %v", err)
		}
	}
}
