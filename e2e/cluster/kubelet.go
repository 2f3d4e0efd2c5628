package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
)

// kubelet plays the kubelet for every node of the cluster: it runs each
// scheduled pod's containers as processes in the pod's own network
// namespace, probes them, restarts them, reports status, and stops them
// when the Pod is deleted.
type kubelet struct {
	cs       kubernetes.Interface
	nodes    map[string]node
	images   Images
	self     string // path of trellis-dev, which runs pod-init
	dir      string // pods' folders
	apiURL   string // apiserver URL reachable from pods
	caFile   string
	recorder record.EventRecorder

	pods       corelisters.PodLister
	configMaps corelisters.ConfigMapLister
	secrets    corelisters.SecretLister
	queue      workqueue.TypedRateLimitingInterface[string]

	mu      sync.Mutex
	running map[types.UID]*podRuntime
	slots   map[string]map[int]types.UID // node -> pod IP slot -> pod
}

// run starts informers and workers; it returns when ctx ends, after every
// pod's processes have been stopped.
func (k *kubelet) run(ctx context.Context, factory informers.SharedInformerFactory) {
	podInf := factory.Core().V1().Pods()
	k.pods = podInf.Lister()
	k.configMaps = factory.Core().V1().ConfigMaps().Lister()
	k.secrets = factory.Core().V1().Secrets().Lister()
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			k.queue.Add(key)
		}
	}
	_, _ = podInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueue, UpdateFunc: func(_, o any) { enqueue(o) }, DeleteFunc: enqueue,
	})
	// ConfigMap and Secret changes refresh the volumes of running pods.
	volumeChanged := func(any) { k.refreshVolumes() }
	for _, inf := range []cache.SharedIndexInformer{factory.Core().V1().ConfigMaps().Informer(), factory.Core().V1().Secrets().Informer()} {
		_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: volumeChanged, UpdateFunc: func(_, o any) { volumeChanged(o) }, DeleteFunc: volumeChanged,
		})
	}
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	for range 2 {
		go func() {
			defer runtime.HandleCrash()
			for k.processNext(ctx) {
			}
		}()
	}
	<-ctx.Done()
	k.queue.ShutDown()
	k.mu.Lock()
	rts := make([]*podRuntime, 0, len(k.running))
	for _, rt := range k.running {
		rts = append(rts, rt)
	}
	k.mu.Unlock()
	var wg sync.WaitGroup
	for _, rt := range rts {
		wg.Add(1)
		go func() { defer wg.Done(); rt.terminate(2 * time.Second); <-rt.done }()
	}
	wg.Wait()
}

func (k *kubelet) processNext(ctx context.Context) bool {
	key, quit := k.queue.Get()
	if quit {
		return false
	}
	defer k.queue.Done(key)
	if err := k.sync(ctx, key); err != nil {
		runtime.HandleError(fmt.Errorf("kubelet: pod %s: %w", key, err))
		k.queue.AddRateLimited(key)
		return true
	}
	k.queue.Forget(key)
	return true
}

// sync makes the processes of one pod match its object.
func (k *kubelet) sync(ctx context.Context, key string) error {
	ns, name, _ := cache.SplitMetaNamespaceKey(key)
	pod, err := k.pods.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) {
		// Deleted without us seeing the grace period (e.g. force delete):
		// stop whatever still runs under that name.
		k.mu.Lock()
		for _, rt := range k.running {
			if rt.key == key {
				go rt.terminate(0)
			}
		}
		k.mu.Unlock()
		return nil
	}
	if err != nil {
		return err
	}
	n, ours := k.nodes[pod.Spec.NodeName]
	if !ours {
		return nil
	}
	k.mu.Lock()
	rt := k.running[pod.UID]
	k.mu.Unlock()
	if pod.DeletionTimestamp != nil {
		if rt == nil {
			// Nothing runs: finish the deletion for the API.
			return k.finalize(ctx, pod)
		}
		grace := time.Duration(30) * time.Second
		if pod.DeletionGracePeriodSeconds != nil {
			grace = time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
		}
		rt.terminate(grace)
		return nil
	}
	if rt != nil || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return nil
	}
	rt, err = k.admit(pod, n)
	if err != nil {
		return err
	}
	go rt.loop(ctx)
	return nil
}

// admit allocates the pod's address and registers its runtime.
func (k *kubelet) admit(pod *corev1.Pod, n node) (*podRuntime, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	ip := n.IP
	slot := 0
	if !pod.Spec.HostNetwork {
		used := k.slots[n.Name]
		if used == nil {
			used = map[int]types.UID{}
			k.slots[n.Name] = used
		}
		for s := 2; s < 255; s++ {
			if _, taken := used[s]; !taken {
				slot = s
				break
			}
		}
		if slot == 0 {
			return nil, fmt.Errorf("node %s has no free pod address (253 pods)", n.Name)
		}
		used[slot] = pod.UID
		ip = n.PodIP(slot)
	}
	rt := &podRuntime{
		k: k, node: n, uid: pod.UID, key: pod.Namespace + "/" + pod.Name,
		ns: pod.Namespace, name: pod.Name, ip: ip, slot: slot,
		dir:       filepath.Join(k.dir, fmt.Sprintf("%s_%s_%s", pod.Namespace, pod.Name, pod.UID)),
		stopCh:    make(chan time.Duration, 1),
		done:      make(chan struct{}),
		startTime: metav1.Now(),
	}
	k.running[pod.UID] = rt
	return rt, nil
}

// release frees what admit allocated.
func (k *kubelet) release(rt *podRuntime) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.running, rt.uid)
	if rt.slot != 0 {
		delete(k.slots[rt.node.Name], rt.slot)
	}
}

// finalize removes the Pod object once its processes are gone, as the
// kubelet does with a zero grace period delete bound to the pod's UID.
func (k *kubelet) finalize(ctx context.Context, pod *corev1.Pod) error {
	zero := int64(0)
	uid := pod.UID
	err := k.cs.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: &zero, Preconditions: &metav1.Preconditions{UID: &uid},
	})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	return err
}

func (k *kubelet) refreshVolumes() {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, rt := range k.running {
		select {
		case rt.volumesDirty <- struct{}{}:
		default:
		}
	}
}

// Images maps an image reference to a binary on this machine: the last path
// element of the reference, without tag or digest, names the binary.
type Images map[string]string

// ImageName is the table key of an image reference:
// "ghcr.io/trellis-mesh/trellis-proxy:v1" -> "trellis-proxy".
func ImageName(ref string) string {
	if i := strings.IndexByte(ref, '@'); i >= 0 {
		ref = ref[:i]
	}
	if i := strings.LastIndexByte(ref, '/'); i >= 0 {
		ref = ref[i+1:]
	}
	if i := strings.IndexByte(ref, ':'); i >= 0 {
		ref = ref[:i]
	}
	return ref
}

// Resolve returns the binary for an image reference.
func (im Images) Resolve(ref string) (string, error) {
	if p, ok := im[ImageName(ref)]; ok {
		return p, nil
	}
	known := make([]string, 0, len(im))
	for k := range im {
		known = append(known, k)
	}
	sort.Strings(known)
	return "", fmt.Errorf("image %q is not in the local image table (known: %s)", ref, strings.Join(known, ", "))
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }
