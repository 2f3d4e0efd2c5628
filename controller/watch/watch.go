package watch

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/trellis-mesh/trellis/controller/topology"
	"github.com/trellis-mesh/trellis/smi"
)

// Options configure a Watcher.
type Options struct {
	// OnChange is called (from informer goroutines) after any relevant
	// change. It must not block: Debouncer.Nudge fits.
	OnChange func(kind string)
	// Rediscover is how often SMI discovery is repeated (0: 30s).
	Rediscover time.Duration
	// Resync is the informers' resync period (0: none).
	Resync time.Duration
	Log    *zap.Logger
}

// Watcher owns the informers.
type Watcher struct {
	kube  kubernetes.Interface
	dyn   dynamic.Interface
	disco discovery.DiscoveryInterface
	opts  Options
	log   *zap.Logger

	factory    informers.SharedInformerFactory
	services   corelisters.ServiceLister
	pods       corelisters.PodLister
	namespaces corelisters.NamespaceLister
	nodes      corelisters.NodeLister
	slices     discoverylisters.EndpointSliceLister
	synced     []cache.InformerSynced
	// sources reads only ConfigMaps labelled as plugin source.
	sourceFactory informers.SharedInformerFactory
	sources       corelisters.ConfigMapLister

	mu     sync.Mutex
	served smi.Served
	smiInf map[smi.Kind]*smiInformer
	// pluginInf watches MeshPlugins while their CRD is served.
	pluginInf *smiInformer
}

type smiInformer struct {
	gvr    schema.GroupVersionResource
	inf    cache.SharedIndexInformer
	cancel context.CancelFunc
}

// New creates a Watcher; Start starts it.
func New(kube kubernetes.Interface, dyn dynamic.Interface, disco discovery.DiscoveryInterface, o Options) *Watcher {
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.OnChange == nil {
		o.OnChange = func(string) {}
	}
	if o.Rediscover == 0 {
		o.Rediscover = 30 * time.Second
	}
	w := &Watcher{kube: kube, dyn: dyn, disco: disco, opts: o, log: o.Log, smiInf: map[smi.Kind]*smiInformer{}}
	w.factory = informers.NewSharedInformerFactoryWithOptions(kube, o.Resync)
	add := func(kind string, inf cache.SharedIndexInformer, transform cache.TransformFunc, relevant func(old, cur any) bool) {
		_ = inf.SetTransform(transform)
		_, _ = inf.AddEventHandler(w.handler(kind, relevant))
		w.synced = append(w.synced, inf.HasSynced)
	}
	svc := w.factory.Core().V1().Services()
	add("Service", svc.Informer(), slimService, nil)
	w.services = svc.Lister()
	sl := w.factory.Discovery().V1().EndpointSlices()
	add("EndpointSlice", sl.Informer(), slimMeta, nil)
	w.slices = sl.Lister()
	pod := w.factory.Core().V1().Pods()
	add("Pod", pod.Informer(), slimPod, podChanged)
	w.pods = pod.Lister()
	ns := w.factory.Core().V1().Namespaces()
	add("Namespace", ns.Informer(), slimNamespace, labelsChanged)
	w.namespaces = ns.Lister()
	node := w.factory.Core().V1().Nodes()
	add("Node", node.Informer(), slimNode, labelsChanged)
	w.nodes = node.Lister()
	w.sourceFactory = informers.NewSharedInformerFactoryWithOptions(kube, o.Resync, informers.WithTweakListOptions(func(lo *metav1.ListOptions) {
		lo.LabelSelector = topology.PluginSourceLabel + "=true"
	}))
	cm := w.sourceFactory.Core().V1().ConfigMaps()
	add("ConfigMap", cm.Informer(), slimMeta, nil)
	w.sources = cm.Lister()
	return w
}

func (w *Watcher) handler(kind string, relevant func(old, cur any) bool) cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { w.opts.OnChange(kind) },
		UpdateFunc: func(old, cur any) {
			if sameVersion(old, cur) {
				return // a resync: nothing changed
			}
			if relevant != nil && !relevant(old, cur) {
				return
			}
			w.opts.OnChange(kind)
		},
		DeleteFunc: func(any) { w.opts.OnChange(kind) },
	}
}

func sameVersion(old, cur any) bool {
	a, ok1 := old.(metav1.Object)
	b, ok2 := cur.(metav1.Object)
	return ok1 && ok2 && a.GetResourceVersion() == b.GetResourceVersion()
}

// Start starts the informers and SMI discovery, and waits until the caches
// have synced (or ctx ends).
func (w *Watcher) Start(ctx context.Context) error {
	w.factory.Start(ctx.Done())
	w.sourceFactory.Start(ctx.Done())
	if err := w.discover(ctx); err != nil {
		// Not fatal: without discovery there is no SMI; retried below.
		w.log.Warn("SMI discovery failed; retrying", zap.Error(err))
	}
	go func() {
		defer func() {
			if r := recover(); r != nil {
				w.log.Error("SMI rediscovery panicked", zap.Any("panic", r))
			}
		}()
		t := time.NewTicker(w.opts.Rediscover)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				w.stopSMI()
				return
			case <-t.C:
				if err := w.discover(ctx); err != nil {
					w.log.Warn("SMI discovery failed", zap.Error(err))
				}
			}
		}
	}()
	synced := append([]cache.InformerSynced(nil), w.synced...)
	w.mu.Lock()
	for _, si := range w.smiInf {
		synced = append(synced, si.inf.HasSynced)
	}
	if w.pluginInf != nil {
		synced = append(synced, w.pluginInf.inf.HasSynced)
	}
	w.mu.Unlock()
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return fmt.Errorf("caches did not sync: %w", ctx.Err())
	}
	return nil
}

// Served is the result of the last SMI discovery.
func (w *Watcher) Served() smi.Served {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.served
}

// discover (re)starts SMI informers at the newest served versions.
func (w *Watcher) discover(ctx context.Context) error {
	served, err := smi.Discover(w.disco)
	if err != nil {
		return fmt.Errorf("SMI discovery: %w", err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	changed := false
	for _, ki := range smi.Kinds {
		gvr, ok := served.GVR(ki.Kind)
		cur := w.smiInf[ki.Kind]
		if cur != nil && (!ok || cur.gvr != gvr) {
			cur.cancel()
			delete(w.smiInf, ki.Kind)
			changed = true
			w.log.Info("stopped SMI informer", zap.String("kind", string(ki.Kind)), zap.String("version", cur.gvr.Version))
		}
		if ok && w.smiInf[ki.Kind] == nil {
			ictx, cancel := context.WithCancel(ctx)
			inf := dynamicinformer.NewFilteredDynamicInformer(w.dyn, gvr, metav1.NamespaceAll, w.opts.Resync, cache.Indexers{}, nil).Informer()
			_ = inf.SetTransform(slimMeta)
			_, _ = inf.AddEventHandler(w.handler(string(ki.Kind), nil))
			go inf.Run(ictx.Done())
			w.smiInf[ki.Kind] = &smiInformer{gvr: gvr, inf: inf, cancel: cancel}
			changed = true
			w.log.Info("watching SMI kind", zap.String("kind", string(ki.Kind)), zap.String("version", gvr.Version))
		}
	}
	if w.discoverPlugins(ctx) {
		changed = true
	}
	w.served = served
	if changed {
		w.opts.OnChange("SMI discovery")
	}
	return nil
}

func (w *Watcher) stopSMI() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for k, si := range w.smiInf {
		si.cancel()
		delete(w.smiInf, k)
	}
	if w.pluginInf != nil {
		w.pluginInf.cancel()
		w.pluginInf = nil
	}
}

// discoverPlugins starts or stops the MeshPlugin informer as the CRD
// appears or goes; w.mu is held. It reports whether anything changed.
func (w *Watcher) discoverPlugins(ctx context.Context) bool {
	gvr := schema.GroupVersionResource{Group: topology.PluginGroup, Version: topology.PluginVersion, Resource: topology.PluginResource}
	served := false
	if rl, err := w.disco.ServerResourcesForGroupVersion(gvr.GroupVersion().String()); err == nil {
		for _, r := range rl.APIResources {
			served = served || r.Name == gvr.Resource
		}
	}
	switch {
	case served && w.pluginInf == nil:
		ictx, cancel := context.WithCancel(ctx)
		inf := dynamicinformer.NewFilteredDynamicInformer(w.dyn, gvr, metav1.NamespaceAll, w.opts.Resync, cache.Indexers{}, nil).Informer()
		_ = inf.SetTransform(slimMeta)
		_, _ = inf.AddEventHandler(w.handler(string(topology.PluginKind), nil))
		go inf.Run(ictx.Done())
		w.pluginInf = &smiInformer{gvr: gvr, inf: inf, cancel: cancel}
		w.log.Info("watching MeshPlugins", zap.String("version", gvr.Version))
		return true
	case !served && w.pluginInf != nil:
		w.pluginInf.cancel()
		w.pluginInf = nil
		w.log.Info("stopped watching MeshPlugins: the CRD is not served")
		return true
	}
	return false
}

// Snapshot lists every cache. The objects are shared with the caches:
// callers must not modify them.
func (w *Watcher) Snapshot() (*topology.Snapshot, error) {
	s := &topology.Snapshot{}
	var err error
	if s.Services, err = w.services.List(labels.Everything()); err != nil {
		return nil, err
	}
	if s.EndpointSlices, err = w.slices.List(labels.Everything()); err != nil {
		return nil, err
	}
	if s.Pods, err = w.pods.List(labels.Everything()); err != nil {
		return nil, err
	}
	if s.Namespaces, err = w.namespaces.List(labels.Everything()); err != nil {
		return nil, err
	}
	if s.Nodes, err = w.nodes.List(labels.Everything()); err != nil {
		return nil, err
	}
	if s.PluginSources, err = w.sources.List(labels.Everything()); err != nil {
		return nil, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, si := range w.smiInf {
		for _, o := range si.inf.GetStore().List() {
			if u, ok := o.(*unstructured.Unstructured); ok {
				s.SMI = append(s.SMI, u)
			}
		}
	}
	if w.pluginInf != nil {
		for _, o := range w.pluginInf.inf.GetStore().List() {
			if u, ok := o.(*unstructured.Unstructured); ok {
				s.Plugins = append(s.Plugins, u)
			}
		}
	}
	return s, nil
}

// Services is the Service lister (shadow Services and DNS use it).
func (w *Watcher) Services() corelisters.ServiceLister { return w.services }

// Pods is the Pod lister (stream authentication checks bound pods).
func (w *Watcher) Pods() corelisters.PodLister { return w.pods }

// Synced reports whether the core caches have synced.
func (w *Watcher) Synced() bool {
	for _, s := range w.synced {
		if !s() {
			return false
		}
	}
	return true
}

// ---- transforms: keep only what the controller reads.

func slimMeta(obj any) (any, error) {
	if m, ok := obj.(metav1.Object); ok {
		m.SetManagedFields(nil)
	}
	return obj, nil
}

func slimService(obj any) (any, error) {
	s, ok := obj.(*corev1.Service)
	if !ok {
		return obj, nil
	}
	s.ManagedFields = nil
	delete(s.Annotations, corev1.LastAppliedConfigAnnotation)
	return s, nil
}

func slimPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	out := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, UID: p.UID, ResourceVersion: p.ResourceVersion,
			CreationTimestamp: p.CreationTimestamp, DeletionTimestamp: p.DeletionTimestamp, Labels: p.Labels},
		Spec:   corev1.PodSpec{NodeName: p.Spec.NodeName, ServiceAccountName: p.Spec.ServiceAccountName, HostNetwork: p.Spec.HostNetwork},
		Status: corev1.PodStatus{Phase: p.Status.Phase, PodIP: p.Status.PodIP, PodIPs: p.Status.PodIPs},
	}
	return out, nil
}

func podChanged(old, cur any) bool {
	a, ok1 := old.(*corev1.Pod)
	b, ok2 := cur.(*corev1.Pod)
	if !ok1 || !ok2 {
		return true
	}
	return a.Spec.NodeName != b.Spec.NodeName || a.Spec.ServiceAccountName != b.Spec.ServiceAccountName ||
		a.Spec.HostNetwork != b.Spec.HostNetwork || a.Status.Phase != b.Status.Phase || a.Status.PodIP != b.Status.PodIP ||
		!reflect.DeepEqual(a.Status.PodIPs, b.Status.PodIPs)
}

func slimNamespace(obj any) (any, error) {
	n, ok := obj.(*corev1.Namespace)
	if !ok {
		return obj, nil
	}
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion, Labels: n.Labels}}, nil
}

func slimNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion, Labels: n.Labels}}, nil
}

func labelsChanged(old, cur any) bool {
	a, ok1 := old.(metav1.Object)
	b, ok2 := cur.(metav1.Object)
	return !ok1 || !ok2 || !reflect.DeepEqual(a.GetLabels(), b.GetLabels())
}

var _ = discoveryv1.LabelServiceName
