package inspect

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"

	"github.com/trellis-mesh/trellis/internal/cli/clienv"
)

// The objects an install holds (manifests/base), in the mesh namespace.
const (
	controllerName    = "trellis-controller" // Deployment and leader Lease
	proxyName         = "trellis-proxy"      // DaemonSet
	cliServiceAccount = "trellis-cli"
	streamPortName    = "stream" // the controller's streams and debug API
	defaultStreamPort = 9000
	adminPortName     = "admin" // the proxy's admin endpoints
	defaultAdminPort  = 15000
)

// install is what a Trellis install looks like from the API.
type install struct {
	ns     string
	deploy *appsv1.Deployment
	// ds is nil when the proxy DaemonSet is missing.
	ds *appsv1.DaemonSet
	// controllers are the Deployment's pods, by name.
	controllers []corev1.Pod
	// proxies are the DaemonSet's pods, by node then name.
	proxies []corev1.Pod
	// lease is nil when no replica ever led.
	lease *coordinationv1.Lease
}

// notInstalled is the one line every command prints when the mesh
// namespace holds no controller Deployment.
func notInstalled(ns string) error {
	//nolint:staticcheck // ST1005: "Trellis" is a name; this is the whole line users see
	return clienv.Fail(clienv.ExitNotFound, fmt.Errorf("Trellis is not installed in namespace %s", ns),
		"run kubectl trellis install (or pass --mesh-namespace if it runs elsewhere)")
}

// findInstall reads the install in the session's mesh namespace.
func (s *session) findInstall(ctx context.Context) (*install, error) {
	in := &install{ns: s.ns}
	var err error
	in.deploy, err = s.kube.AppsV1().Deployments(s.ns).Get(ctx, controllerName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, notInstalled(s.ns)
	}
	if err != nil {
		return nil, clienv.APIError(fmt.Sprintf("get Deployment %s/%s", s.ns, controllerName), err)
	}
	if in.controllers, err = s.podsOf(ctx, in.deploy.Spec.Selector, "Deployment "+controllerName); err != nil {
		return nil, err
	}
	in.ds, err = s.kube.AppsV1().DaemonSets(s.ns).Get(ctx, proxyName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		in.ds = nil
	case err != nil:
		return nil, clienv.APIError(fmt.Sprintf("get DaemonSet %s/%s", s.ns, proxyName), err)
	default:
		if in.proxies, err = s.podsOf(ctx, in.ds.Spec.Selector, "DaemonSet "+proxyName); err != nil {
			return nil, err
		}
		sort.SliceStable(in.proxies, func(i, j int) bool { return in.proxies[i].Spec.NodeName < in.proxies[j].Spec.NodeName })
	}
	in.lease, err = s.kube.CoordinationV1().Leases(s.ns).Get(ctx, controllerName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		in.lease = nil
	case err != nil:
		return nil, clienv.APIError(fmt.Sprintf("get Lease %s/%s", s.ns, controllerName), err)
	}
	return in, nil
}

func (s *session) podsOf(ctx context.Context, sel *metav1.LabelSelector, owner string) ([]corev1.Pod, error) {
	selector, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return nil, fmt.Errorf("%s in %s has an invalid selector: %w", owner, s.ns, err)
	}
	list, err := s.kube.CoreV1().Pods(s.ns).List(ctx, metav1.ListOptions{LabelSelector: selector.String()})
	if err != nil {
		return nil, clienv.APIError(fmt.Sprintf("list the pods of %s in %s", owner, s.ns), err)
	}
	pods := list.Items
	sort.Slice(pods, func(i, j int) bool { return pods[i].Name < pods[j].Name })
	return pods, nil
}

// podReady: running, Ready, not being deleted.
func podReady(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// podRunning: a pod whose admin port can answer (readiness aside: a proxy
// that is not ready still tells why on /debug/config).
func podRunning(p *corev1.Pod) bool {
	return p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning
}

// containerPort finds a named container port, else def.
func containerPort(spec *corev1.PodSpec, name string, def int) int {
	for _, c := range spec.Containers {
		for _, p := range c.Ports {
			if p.Name == name {
				return int(p.ContainerPort)
			}
		}
	}
	return def
}

// leader describes the Lease: who holds it and whether the hold is fresh.
type leader struct {
	holder string
	fresh  bool
	// why explains a missing or stale leader.
	why string
}

func leaseLeader(l *coordinationv1.Lease, ns string, now time.Time) leader {
	name := ns + "/" + controllerName
	if l == nil {
		return leader{why: fmt.Sprintf("there is no Lease %s: no replica has led yet", name)}
	}
	var holder string
	if l.Spec.HolderIdentity != nil {
		holder = *l.Spec.HolderIdentity
	}
	if holder == "" {
		return leader{why: fmt.Sprintf("the Lease %s has no holder: the last leader released it and no replica took it", name)}
	}
	if l.Spec.RenewTime == nil || l.Spec.LeaseDurationSeconds == nil {
		return leader{holder: holder, why: fmt.Sprintf("the Lease %s held by %s was never renewed", name, holder)}
	}
	age := now.Sub(l.Spec.RenewTime.Time)
	if age > time.Duration(*l.Spec.LeaseDurationSeconds)*time.Second {
		return leader{holder: holder, why: fmt.Sprintf("the Lease %s held by %s was last renewed %s ago (it lasts %ds)", name, holder, duration.HumanDuration(age), *l.Spec.LeaseDurationSeconds)}
	}
	return leader{holder: holder, fresh: true}
}

// controllerPod picks the replica to ask: the leader when it is ready
// (only the leader knows how DNS integration went), else any ready one.
func (in *install) controllerPod(now time.Time) (*corev1.Pod, error) {
	ld := leaseLeader(in.lease, in.ns, now)
	var first *corev1.Pod
	for i := range in.controllers {
		p := &in.controllers[i]
		if !podReady(p) {
			continue
		}
		if ld.fresh && p.Name == ld.holder {
			return p, nil
		}
		if first == nil {
			first = p
		}
	}
	if first == nil {
		return nil, clienv.Fail(clienv.ExitFailure,
			fmt.Errorf("no pod of Deployment %s/%s is ready (%d of %d)", in.ns, controllerName, in.deploy.Status.ReadyReplicas, replicas(in.deploy)),
			fmt.Sprintf("kubectl -n %s describe deployment %s", in.ns, controllerName))
	}
	return first, nil
}

func replicas(d *appsv1.Deployment) int32 {
	if d.Spec.Replicas == nil {
		return 1
	}
	return *d.Spec.Replicas
}

// tokenAudiences are the audiences the controller's TokenReview asks for
// (its --token-audiences flag); empty means the apiserver's own.
func tokenAudiences(d *appsv1.Deployment) []string {
	var out []string
	for _, c := range d.Spec.Template.Spec.Containers {
		args := append(append([]string(nil), c.Command...), c.Args...)
		for i, a := range args {
			var v string
			switch {
			case strings.HasPrefix(a, "--token-audiences="):
				v = strings.TrimPrefix(a, "--token-audiences=")
			case a == "--token-audiences" && i+1 < len(args):
				v = args[i+1]
			default:
				continue
			}
			for _, s := range strings.Split(v, ",") {
				if s = strings.TrimSpace(s); s != "" {
					out = append(out, s)
				}
			}
		}
	}
	return out
}

// controllerScheme is the pods/proxy scheme prefix for the controller's
// stream port: "https:" when it serves TLS (--tls-cert), else "" (h2c, as
// the base manifests run it). The apiserver does not verify the pod's
// certificate; the token check is the controller's.
func controllerScheme(d *appsv1.Deployment) string {
	for _, c := range d.Spec.Template.Spec.Containers {
		for _, a := range append(append([]string(nil), c.Command...), c.Args...) {
			if a == "--tls-cert" || strings.HasPrefix(a, "--tls-cert=") {
				return "https:"
			}
		}
	}
	return ""
}
