package base

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/trellis-mesh/trellis/controller/settings"
)

type objs struct {
	deploys []*appsv1.Deployment
	ds      []*appsv1.DaemonSet
	cms     []*corev1.ConfigMap
	svcs    []*corev1.Service
	roles   []*rbacv1.Role
	croles  []*rbacv1.ClusterRole
}

// load decodes every manifest strictly (unknown fields are errors).
func load(t *testing.T) objs {
	var o objs
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
			case "Namespace", "ServiceAccount", "RoleBinding", "ClusterRoleBinding":
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
	for _, r := range o.croles {
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
		if r.Namespace == "kube-system" && (len(r.Rules) != 1 || len(r.Rules[0].ResourceNames) != 1 || r.Rules[0].ResourceNames[0] != "coredns") {
			t.Errorf("Role %s/%s reaches beyond the coredns ConfigMap", r.Namespace, r.Name)
		}
	}
}
