package base

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/controller/settings"
)

type objs struct {
	deploys []*appsv1.Deployment
	ds      []*appsv1.DaemonSet
	cms     []*corev1.ConfigMap
	svcs    []*corev1.Service
	roles   []*rbacv1.Role
	croles  []*rbacv1.ClusterRole
	rbs     []*rbacv1.RoleBinding
	crbs    []*rbacv1.ClusterRoleBinding
	pdbs    []*policyv1.PodDisruptionBudget
	labels  map[string]map[string]string // kind/namespace/name -> labels
}

// load decodes every manifest strictly (unknown fields are errors).
func load(t *testing.T) objs {
	o := objs{labels: map[string]map[string]string{}}
	files, _ := FS.ReadDir(".")
	for _, f := range files {
		if f.Name() == "kustomization.yaml" {
			continue
		}
		b, _ := FS.ReadFile(f.Name())
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
		for {
			var m map[string]any
			if err := dec.Decode(&m); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				t.Fatalf("%s: %v", f.Name(), err)
			}
			u := &unstructured.Unstructured{Object: m}
			o.labels[u.GetKind()+"/"+u.GetNamespace()+"/"+u.GetName()] = u.GetLabels()
			var into any
			switch u.GetKind() {
			case "Deployment":
				d := &appsv1.Deployment{}
				o.deploys, into = append(o.deploys, d), d
			case "DaemonSet":
				d := &appsv1.DaemonSet{}
				o.ds, into = append(o.ds, d), d
			case "ConfigMap":
				c := &corev1.ConfigMap{}
				o.cms, into = append(o.cms, c), c
			case "Service":
				s := &corev1.Service{}
				o.svcs, into = append(o.svcs, s), s
			case "Role":
				r := &rbacv1.Role{}
				o.roles, into = append(o.roles, r), r
			case "ClusterRole":
				r := &rbacv1.ClusterRole{}
				o.croles, into = append(o.croles, r), r
			case "RoleBinding":
				r := &rbacv1.RoleBinding{}
				o.rbs, into = append(o.rbs, r), r
			case "ClusterRoleBinding":
				r := &rbacv1.ClusterRoleBinding{}
				o.crbs, into = append(o.crbs, r), r
			case "PodDisruptionBudget":
				p := &policyv1.PodDisruptionBudget{}
				o.pdbs, into = append(o.pdbs, p), p
			case "Namespace", "ServiceAccount":
				continue
			default:
				t.Fatalf("%s: unexpected kind %s", f.Name(), u.GetKind())
			}
			if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(m, into, true); err != nil {
				t.Fatalf("%s %s: %v", f.Name(), u.GetName(), err)
			}
		}
	}
	return o
}

func TestManifests(t *testing.T) {
	o := load(t)
	if len(o.cms) != 1 {
		t.Fatalf("%d ConfigMaps", len(o.cms))
	}
	s, err := settings.Parse([]byte(o.cms[0].Data["settings.yaml"]))
	if err != nil {
		t.Fatalf("the shipped settings do not parse: %v", err)
	}
	if len(o.deploys) != 1 || *o.deploys[0].Spec.Replicas != 2 {
		t.Fatal("the controller Deployment must run 2 replicas")
	}
	c := o.deploys[0].Spec.Template.Spec.Containers[0]
	if !strings.HasSuffix(c.Image, "/trellis-controller:dev") || o.deploys[0].Spec.Template.Spec.ServiceAccountName != "trellis-controller" {
		t.Errorf("controller image %s", c.Image)
	}
	hasPodName := false
	for _, e := range c.Env {
		hasPodName = hasPodName || (e.Name == "POD_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name")
	}
	if !hasPodName {
		t.Error("the controller needs POD_NAME for leader election")
	}
	if len(o.ds) != 1 {
		t.Fatal("no proxy DaemonSet")
	}
	ds := o.ds[0]
	ru := ds.Spec.UpdateStrategy.RollingUpdate
	if ru == nil || ru.MaxSurge.IntValue() != 1 || ru.MaxUnavailable.IntValue() != 0 {
		t.Errorf("proxy rollout must be maxSurge 1, maxUnavailable 0: %+v", ru)
	}
	for k, v := range s.ProxySelector {
		if ds.Spec.Template.Labels[k] != v {
			t.Errorf("proxy pods lack the label %s=%s that shadow Services select", k, v)
		}
	}
	if ds.Spec.Template.Spec.ServiceAccountName != s.ProxyServiceAccount {
		t.Errorf("proxy runs as %s, the controller accepts %s", ds.Spec.Template.Spec.ServiceAccountName, s.ProxyServiceAccount)
	}
	found := false
	for _, sv := range o.svcs {
		found = found || sv.Name == s.DNSService
	}
	if !found {
		t.Errorf("no Service %s for CoreDNS to forward to", s.DNSService)
	}
	// The proxy has no API permissions: no Role or ClusterRole is bound to it,
	// and nothing grants write access outside trellis-system except the
	// coredns ConfigMap, Events, and the caBundle of the SMI CRDs (named).
	bound := o.boundToWorkloads(t)
	for _, r := range o.croles {
		if !bound["ClusterRole/"+r.Name] {
			continue
		}
		for _, rule := range r.Rules {
			smiCRDsOnly := len(rule.Resources) == 1 && rule.Resources[0] == "customresourcedefinitions" && len(rule.ResourceNames) == 5
			for _, n := range rule.ResourceNames {
				smiCRDsOnly = smiCRDsOnly && strings.Contains(n, ".smi-spec.io")
			}
			for _, v := range rule.Verbs {
				if v == "*" || (v != "get" && v != "list" && v != "watch" && !(len(rule.Resources) == 1 && (rule.Resources[0] == "events" || rule.Resources[0] == "tokenreviews" || rule.Resources[0] == "subjectaccessreviews")) && !(v == "update" && smiCRDsOnly)) {
					t.Errorf("ClusterRole %s grants %s on %v", r.Name, v, rule.Resources)
				}
			}
		}
	}
	for _, r := range o.roles {
		if !bound["Role/"+r.Namespace+"/"+r.Name] {
			continue
		}
		if r.Namespace == "kube-system" && (len(r.Rules) != 1 || len(r.Rules[0].ResourceNames) != 1 || r.Rules[0].ResourceNames[0] != "coredns") {
			t.Errorf("Role %s/%s reaches beyond the coredns ConfigMap", r.Namespace, r.Name)
		}
	}
}

// boundToWorkloads names the roles bound to Trellis's own ServiceAccounts
// ("ClusterRole/NAME", "Role/NS/NAME"). It fails the test if anything is
// bound to the proxy's ServiceAccount: the proxy has no API permissions.
func (o objs) boundToWorkloads(t *testing.T) map[string]bool {
	t.Helper()
	bound := map[string]bool{}
	check := func(binding string, subjects []rbacv1.Subject, ref rbacv1.RoleRef, ns string) {
		for _, s := range subjects {
			if s.Kind != rbacv1.ServiceAccountKind || s.Namespace != "trellis-system" {
				continue
			}
			switch s.Name {
			case "trellis-proxy":
				t.Errorf("%s binds %s %s to the proxy's ServiceAccount; the proxy must have no API permissions", binding, ref.Kind, ref.Name)
			case "trellis-controller":
				if ref.Kind == "ClusterRole" {
					bound["ClusterRole/"+ref.Name] = true
				} else {
					bound["Role/"+ns+"/"+ref.Name] = true
				}
			}
		}
	}
	for _, b := range o.crbs {
		check("ClusterRoleBinding "+b.Name, b.Subjects, b.RoleRef, "")
	}
	for _, b := range o.rbs {
		check("RoleBinding "+b.Namespace+"/"+b.Name, b.Subjects, b.RoleRef, b.Namespace)
	}
	if !bound["ClusterRole/trellis-controller"] || !bound["Role/trellis-system/trellis-controller"] {
		t.Errorf("the controller's roles are not bound to its ServiceAccount: %v", bound)
	}
	return bound
}

// TestLabelled: every object carries app.kubernetes.io/part-of=trellis, the
// label `kubectl trellis uninstall` selects by.
func TestLabelled(t *testing.T) {
	o := load(t)
	for k, l := range o.labels {
		if l["app.kubernetes.io/part-of"] != "trellis" {
			t.Errorf("%s lacks the label app.kubernetes.io/part-of: trellis", k)
		}
	}
	for _, d := range o.deploys {
		if d.Spec.Template.Labels["app.kubernetes.io/part-of"] != "trellis" {
			t.Errorf("Deployment %s: pod template lacks app.kubernetes.io/part-of: trellis", d.Name)
		}
	}
	for _, d := range o.ds {
		if d.Spec.Template.Labels["app.kubernetes.io/part-of"] != "trellis" {
			t.Errorf("DaemonSet %s: pod template lacks app.kubernetes.io/part-of: trellis", d.Name)
		}
	}
}

// TestControllerDisruptionBudget: a drain cannot take both controller
// replicas at once, and the budget selects exactly the controller's pods.
func TestControllerDisruptionBudget(t *testing.T) {
	o := load(t)
	if len(o.pdbs) != 1 || len(o.deploys) != 1 {
		t.Fatalf("%d PodDisruptionBudgets, %d Deployments; want one each", len(o.pdbs), len(o.deploys))
	}
	p, d := o.pdbs[0], o.deploys[0]
	if p.Spec.MinAvailable == nil || p.Spec.MinAvailable.IntValue() != 1 || p.Spec.MaxUnavailable != nil {
		t.Errorf("PodDisruptionBudget %s: want minAvailable 1, got %+v", p.Name, p.Spec)
	}
	if int(*d.Spec.Replicas) <= p.Spec.MinAvailable.IntValue() {
		t.Errorf("PodDisruptionBudget %s: minAvailable %s with %d replicas blocks every drain", p.Name, p.Spec.MinAvailable.String(), *d.Spec.Replicas)
	}
	if p.Namespace != d.Namespace || !reflect.DeepEqual(p.Spec.Selector.MatchLabels, d.Spec.Selector.MatchLabels) {
		t.Errorf("PodDisruptionBudget %s/%s selects %v, the controller's pods are %s/%v", p.Namespace, p.Name, p.Spec.Selector.MatchLabels, d.Namespace, d.Spec.Selector.MatchLabels)
	}
}

// TestHardened: both workloads run as non-root with a read-only root
// filesystem, no capabilities, no privilege escalation, the runtime's
// seccomp profile, probes and resource requests and memory limits.
func TestHardened(t *testing.T) {
	o := load(t)
	type workload struct {
		name string
		spec corev1.PodSpec
	}
	var ws []workload
	for _, d := range o.deploys {
		ws = append(ws, workload{"Deployment " + d.Name, d.Spec.Template.Spec})
	}
	for _, d := range o.ds {
		ws = append(ws, workload{"DaemonSet " + d.Name, d.Spec.Template.Spec})
	}
	if len(ws) != 2 {
		t.Fatalf("%d workloads, want the controller and the proxy", len(ws))
	}
	for _, w := range ws {
		ps := w.spec.SecurityContext
		if ps == nil || ps.RunAsNonRoot == nil || !*ps.RunAsNonRoot || ps.RunAsUser == nil || *ps.RunAsUser == 0 {
			t.Errorf("%s: pod must set runAsNonRoot and a non-zero runAsUser", w.name)
		}
		if ps == nil || ps.SeccompProfile == nil || ps.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("%s: pod must use the RuntimeDefault seccomp profile", w.name)
		}
		if w.spec.HostNetwork || w.spec.HostPID || w.spec.HostIPC {
			t.Errorf("%s: must not share the host's namespaces", w.name)
		}
		for _, c := range w.spec.Containers {
			where := w.name + " container " + c.Name
			sc := c.SecurityContext
			switch {
			case sc == nil:
				t.Errorf("%s: no securityContext", where)
				continue
			case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
				t.Errorf("%s: allowPrivilegeEscalation must be false", where)
			case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
				t.Errorf("%s: readOnlyRootFilesystem must be true", where)
			case sc.Capabilities == nil || !reflect.DeepEqual(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0:
				t.Errorf("%s: must drop ALL capabilities and add none", where)
			case sc.Privileged != nil && *sc.Privileged:
				t.Errorf("%s: privileged", where)
			}
			if c.ReadinessProbe == nil || c.LivenessProbe == nil {
				t.Errorf("%s: needs readiness and liveness probes", where)
			}
			if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
				t.Errorf("%s: needs cpu and memory requests and a memory limit", where)
			}
			for _, p := range c.Ports {
				if p.ContainerPort < 1024 {
					t.Errorf("%s: port %s %d needs a privilege a non-root process lacks", where, p.Name, p.ContainerPort)
				}
			}
			if !slices.ContainsFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, "--log-level=") }) {
				t.Errorf("%s: args must set --log-level (the Helm chart templates it)", where)
			}
		}
	}
}

// TestProxyDrainFitsGracePeriod: the proxy drains on SIGTERM for
// --drain-period, then waits --shutdown-grace for in-flight work; the
// kubelet must not kill it before both have passed.
func TestProxyDrainFitsGracePeriod(t *testing.T) {
	o := load(t)
	if len(o.ds) != 1 {
		t.Fatal("no proxy DaemonSet")
	}
	spec := o.ds[0].Spec.Template.Spec
	var drain, grace time.Duration
	for _, a := range spec.Containers[0].Args {
		name, v, _ := strings.Cut(a, "=")
		d, err := time.ParseDuration(v)
		switch name {
		case "--drain-period":
			drain = d
		case "--shutdown-grace":
			grace = d
		default:
			continue
		}
		if err != nil {
			t.Fatalf("proxy arg %s: %v", a, err)
		}
	}
	if drain == 0 || grace == 0 {
		t.Fatalf("proxy args must set --drain-period and --shutdown-grace: %v", spec.Containers[0].Args)
	}
	if spec.TerminationGracePeriodSeconds == nil || time.Duration(*spec.TerminationGracePeriodSeconds)*time.Second < drain+grace+time.Second {
		t.Errorf("terminationGracePeriodSeconds %v does not cover --drain-period %s + --shutdown-grace %s", spec.TerminationGracePeriodSeconds, drain, grace)
	}
	if len(spec.Tolerations) != 1 || spec.Tolerations[0].Operator != corev1.TolerationOpExists || spec.Tolerations[0].Key != "" {
		t.Errorf("the proxy must tolerate every taint (a node without a proxy cannot reach mesh names): %+v", spec.Tolerations)
	}
}

// TestKustomizationListsEveryFile: `kubectl apply -k` and the installer
// (which reads the kustomization's resources) apply every manifest here,
// and nothing the kustomization names is missing.
func TestKustomizationListsEveryFile(t *testing.T) {
	b, err := FS.ReadFile("kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		Resources []string `json:"resources"`
	}
	if err := yaml.Unmarshal(b, &k); err != nil {
		t.Fatal(err)
	}
	files, err := fs.Glob(FS, "*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if f != "kustomization.yaml" && !slices.Contains(k.Resources, f) {
			t.Errorf("%s is not listed in kustomization.yaml resources", f)
		}
	}
	for _, r := range k.Resources {
		if !slices.Contains(files, r) {
			t.Errorf("kustomization.yaml lists %s, which does not exist", r)
		}
	}
}
