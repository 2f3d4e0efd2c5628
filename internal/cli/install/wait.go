package install

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/trellis-mesh/trellis/internal/cli/clienv"
)

// pollInterval is how often the waits look again (tests shorten it).
var pollInterval = time.Second

var (
	nsGVR    = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
	cmGVR    = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
	crdGVR   = apiextensionsv1.SchemeGroupVersion.WithResource("customresourcedefinitions")
	leaseGVR = schema.GroupVersionResource{Group: "coordination.k8s.io", Version: "v1", Resource: "leases"}
)

// waitAccess is what waiting for readiness reads.
func waitAccess() []access {
	return []access{
		{Verb: "get", Group: crdGVR.Group, Resource: crdGVR.Resource},
		{Verb: "get", Group: "apps", Resource: "deployments", Namespace: MeshNamespace, Name: controllerName},
		{Verb: "get", Group: leaseGVR.Group, Resource: leaseGVR.Resource, Namespace: MeshNamespace, Name: leaseName},
		{Verb: "get", Group: "apps", Resource: "daemonsets", Namespace: MeshNamespace, Name: proxyName},
		{Verb: "list", Resource: "pods", Namespace: MeshNamespace},
	}
}

// stage is one readiness condition: check returns whether it holds and a
// short description of the state ("1 of 2 replicas available").
type stage struct {
	name  string
	check func(context.Context) (bool, string, error)
	// pods selects the pods whose problems explain a timeout.
	pods string
}

// waiter waits for the stages in order, printing a line when a stage
// starts waiting, when what it waits for changes, and when it holds.
type waiter struct {
	env  *clienv.Env
	c    *cluster
	out  io.Writer
	crds []string
	now  func() time.Time
}

func (w *waiter) run(ctx context.Context, limit time.Duration) error {
	if w.now == nil {
		w.now = time.Now
	}
	deadline := time.Now().Add(limit)
	fmt.Fprintf(w.out, "Waiting up to %s for Trellis to be ready\n", limit)
	stages := []stage{
		{name: "CRDs established", check: w.crdsEstablished},
		{name: "controller Deployment " + MeshNamespace + "/" + controllerName + " available", check: w.controllerAvailable, pods: "app.kubernetes.io/name=" + controllerName},
		{name: "leader elected (Lease " + MeshNamespace + "/" + leaseName + ")", check: w.leaderElected, pods: "app.kubernetes.io/name=" + controllerName},
		{name: "proxy DaemonSet " + MeshNamespace + "/" + proxyName + " rolled out on every node", check: w.proxyRolledOut, pods: "app.kubernetes.io/name=" + proxyName},
	}
	for _, s := range stages {
		last := ""
		for {
			ok, detail, err := s.check(ctx)
			if err != nil {
				return err
			}
			if ok {
				fmt.Fprintf(w.out, "%s %s: %s\n", w.env.Mark(true), s.name, detail)
				break
			}
			if detail != last {
				fmt.Fprintf(w.out, "  waiting for %s: %s\n", s.name, detail)
				last = detail
			}
			if !time.Now().Before(deadline) {
				fmt.Fprintf(w.out, "%s %s: %s\n", w.env.Mark(false), s.name, detail)
				msg := fmt.Sprintf("install: timed out after %s waiting for %s (%s)", limit, s.name, detail)
				if s.pods != "" {
					if p := w.podProblems(ctx, s.pods); p != "" {
						msg += "; " + p
					}
				}
				return clienv.Fail(clienv.ExitFailure, fmt.Errorf("%s", msg),
					"the objects are applied; see `kubectl -n "+MeshNamespace+" get pods,events`, then run install again or `kubectl trellis check`")
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(min(pollInterval, time.Until(deadline)+time.Millisecond)):
			}
		}
	}
	return nil
}

func (w *waiter) crdsEstablished(ctx context.Context) (bool, string, error) {
	var pending []string
	for _, name := range w.crds {
		u, err := w.c.dyn.Resource(crdGVR).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			pending = append(pending, name+" (missing)")
			continue
		}
		if err != nil {
			return false, "", clienv.APIError("install: read CustomResourceDefinition "+name, err)
		}
		var crd apiextensionsv1.CustomResourceDefinition
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &crd); err != nil {
			return false, "", err
		}
		established := false
		for _, c := range crd.Status.Conditions {
			if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
				established = true
			}
		}
		if !established {
			pending = append(pending, name)
		}
	}
	if len(pending) > 0 {
		return false, fmt.Sprintf("%d of %d established; waiting for %s", len(w.crds)-len(pending), len(w.crds), strings.Join(pending, ", ")), nil
	}
	return true, fmt.Sprintf("%d of %d", len(w.crds), len(w.crds)), nil
}

// controllerAvailable is `kubectl rollout status` for the Deployment.
func (w *waiter) controllerAvailable(ctx context.Context) (bool, string, error) {
	d, err := w.c.kube.AppsV1().Deployments(MeshNamespace).Get(ctx, controllerName, metav1.GetOptions{})
	if err != nil {
		return false, "", clienv.APIError("install: read Deployment "+MeshNamespace+"/"+controllerName, err)
	}
	return deploymentReady(d)
}

func deploymentReady(d *appsv1.Deployment) (bool, string, error) {
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	st := d.Status
	switch {
	case st.ObservedGeneration < d.Generation:
		return false, "the rollout has not started (spec not observed yet)", nil
	case st.UpdatedReplicas < want:
		return false, fmt.Sprintf("%d of %d replicas updated", st.UpdatedReplicas, want), nil
	case st.Replicas > st.UpdatedReplicas:
		return false, fmt.Sprintf("%d old replicas terminating", st.Replicas-st.UpdatedReplicas), nil
	case st.AvailableReplicas < st.UpdatedReplicas:
		return false, fmt.Sprintf("%d of %d replicas available", st.AvailableReplicas, want), nil
	}
	return true, fmt.Sprintf("%d of %d replicas", st.AvailableReplicas, want), nil
}

// leaderElected: the Lease has a holder whose lease has not run out.
func (w *waiter) leaderElected(ctx context.Context) (bool, string, error) {
	l, err := w.c.kube.CoordinationV1().Leases(MeshNamespace).Get(ctx, leaseName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, "no Lease yet", nil
	}
	if err != nil {
		return false, "", clienv.APIError("install: read Lease "+MeshNamespace+"/"+leaseName, err)
	}
	holder := ""
	if l.Spec.HolderIdentity != nil {
		holder = *l.Spec.HolderIdentity
	}
	if holder == "" {
		return false, "the Lease has no holder", nil
	}
	if l.Spec.RenewTime != nil && l.Spec.LeaseDurationSeconds != nil {
		expires := l.Spec.RenewTime.Add(time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second)
		if w.now().After(expires) {
			return false, holder + "'s lease has expired", nil
		}
	}
	return true, holder + " leads", nil
}

// proxyRolledOut: every node the DaemonSet targets runs an updated,
// available proxy.
func (w *waiter) proxyRolledOut(ctx context.Context) (bool, string, error) {
	d, err := w.c.kube.AppsV1().DaemonSets(MeshNamespace).Get(ctx, proxyName, metav1.GetOptions{})
	if err != nil {
		return false, "", clienv.APIError("install: read DaemonSet "+MeshNamespace+"/"+proxyName, err)
	}
	return daemonSetReady(d)
}

func daemonSetReady(d *appsv1.DaemonSet) (bool, string, error) {
	st := d.Status
	switch {
	case st.ObservedGeneration < d.Generation:
		return false, "the rollout has not started (spec not observed yet)", nil
	case st.UpdatedNumberScheduled < st.DesiredNumberScheduled:
		return false, fmt.Sprintf("%d of %d nodes updated", st.UpdatedNumberScheduled, st.DesiredNumberScheduled), nil
	case st.NumberAvailable < st.DesiredNumberScheduled:
		return false, fmt.Sprintf("%d of %d nodes available", st.NumberAvailable, st.DesiredNumberScheduled), nil
	}
	return true, fmt.Sprintf("%d of %d nodes", st.NumberAvailable, st.DesiredNumberScheduled), nil
}

// podProblems explains why pods are not ready: waiting reasons, restarts,
// unschedulable conditions (first three pods, sorted by name).
func (w *waiter) podProblems(ctx context.Context, selector string) string {
	pods, err := w.c.kube.CoreV1().Pods(MeshNamespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return ""
	}
	if len(pods.Items) == 0 {
		return "no pods exist (see `kubectl -n " + MeshNamespace + " get events`)"
	}
	sort.Slice(pods.Items, func(i, j int) bool { return pods.Items[i].Name < pods.Items[j].Name })
	var out []string
	for _, p := range pods.Items {
		if why := podProblem(&p); why != "" {
			out = append(out, "pod "+p.Name+": "+why)
		}
	}
	if len(out) > 3 {
		out = append(out[:3], fmt.Sprintf("and %d more", len(out)-3))
	}
	return strings.Join(out, "; ")
}

func podProblem(p *corev1.Pod) string {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
			return strings.TrimSpace(c.Reason + " " + c.Message)
		}
	}
	for _, cs := range p.Status.ContainerStatuses {
		switch {
		case cs.State.Waiting != nil && cs.State.Waiting.Reason != "":
			return strings.TrimSpace(fmt.Sprintf("container %s %s %s", cs.Name, cs.State.Waiting.Reason, cs.State.Waiting.Message))
		case cs.State.Terminated != nil:
			return fmt.Sprintf("container %s terminated: %s (exit %d)", cs.Name, cs.State.Terminated.Reason, cs.State.Terminated.ExitCode)
		case !cs.Ready:
			return fmt.Sprintf("container %s not ready (%d restarts)", cs.Name, cs.RestartCount)
		}
	}
	if p.Status.Phase == corev1.PodPending {
		return "Pending"
	}
	return ""
}
