package inspect

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/trellis-mesh/trellis/internal/cli/clienv"
	"github.com/trellis-mesh/trellis/internal/cli/clitest"
)

// TestInspect runs every command against the fixture (real apiserver, real
// controller, real proxy admin handlers) and compares the output with
// golden files. The subtests share one cluster and run in order; the one
// that adds a bad object runs last.
func TestInspect(t *testing.T) {
	f := newFixture(t)
	admin := f.admin
	type run struct {
		name       string
		kubeconfig string
		code       int
		args       []string
	}
	runs := []run{
		// A healthy mesh.
		{"check", admin, 0, []string{"check"}},
		{"check_json", admin, 0, []string{"check", "-o", "json"}},
		{"check_pre", admin, 0, []string{"check", "--pre"}},
		{"status", admin, 0, []string{"status"}},
		{"ls_all_wide", admin, 0, []string{"ls", "-A", "-o", "wide"}},
		{"status_all_json", admin, 0, []string{"status", "-A", "-o", "json"}},
		{"status_other_yaml", admin, 0, []string{"status", "-n", "other", "-o", "yaml"}},
		{"status_no_services", admin, 0, []string{"status", "-n", "people"}},
		{"config_node", admin, 0, []string{"config", "node-a"}},
		{"config_pod", admin, 0, []string{"config", "shop/db-b"}},
		{"config_pod_json", admin, 0, []string{"config", "-n", "shop", "web-v2-b", "-o", "json"}},
		{"config_unknown", admin, 6, []string{"config", "nosuch"}},
		{"config_bad_output", admin, 2, []string{"config", "node-a", "-o", "wide"}},
		{"version", admin, 0, []string{"version"}},
		{"version_json", admin, 0, []string{"version", "-o", "json"}},
		{"version_client", "", 0, []string{"version", "--client"}},
		{"version_client_yaml", "", 0, []string{"version", "--client", "-o", "yaml"}},

		// Not installed.
		{"check_not_installed", admin, 6, []string{"check", "--mesh-namespace", "nowhere"}},
		{"check_pre_conflict", admin, 3, []string{"check", "--pre", "--mesh-namespace", "nowhere"}},
		{"status_not_installed", admin, 6, []string{"status", "--mesh-namespace", "nowhere"}},
		{"config_not_installed", admin, 6, []string{"config", "node-a", "--mesh-namespace", "nowhere"}},
		{"version_not_installed", admin, 6, []string{"version", "--mesh-namespace", "nowhere"}},

		// Controller not ready, no leader, a proxy behind.
		{"check_controller_unready", admin, 3, []string{"check", "--mesh-namespace", "mesh-unready"}},
		{"status_controller_unready", admin, 1, []string{"status", "--mesh-namespace", "mesh-unready"}},
		{"check_no_leader", admin, 3, []string{"check", "--mesh-namespace", "mesh-noleader"}},
		{"check_proxy_behind", admin, 3, []string{"check", "--mesh-namespace", "mesh-behind"}},
		{"status_proxy_behind", admin, 0, []string{"status", "--mesh-namespace", "mesh-behind", "-o", "wide"}},
		{"config_proxy_behind", admin, 0, []string{"config", "node-b", "--mesh-namespace", "mesh-behind"}},

		// RBAC refused: by the apiserver, and by the controller.
		{"check_rbac_nobody", people["nobody"], 3, []string{"check"}},
		{"check_pre_rbac_nobody", people["nobody"], 3, []string{"check", "--pre"}},
		{"status_rbac_nobody", people["nobody"], 5, []string{"status"}},
		{"status_rbac_no_pods_proxy", people["noproxy"], 5, []string{"status"}},
		{"config_rbac_no_pods_proxy", people["noproxy"], 5, []string{"config", "node-a"}},
		{"status_rbac_no_token", people["notoken"], 5, []string{"status"}},
		{"version_rbac_no_token", people["notoken"], 5, []string{"version"}},
		{"check_rbac_no_token", people["notoken"], 3, []string{"check"}},
		{"config_rbac_no_token", people["notoken"], 0, []string{"config", "node-b"}},
		{"check_user", people["user"], 0, []string{"check"}},
		{"status_user", people["user"], 0, []string{"status"}},
		{"check_own_token", people["debugger"], 0, []string{"check"}},
		{"status_refused_by_controller", admin, 5, []string{"status", "--mesh-namespace", "mesh-nobinding"}},
	}
	for _, r := range runs {
		t.Run(r.name, func(t *testing.T) {
			f.golden(t, r.name, r.kubeconfig, r.code, r.args...)
		})
	}

	// The controller's debug API was read with the CLI's token, through
	// the header the apiserver does not strip.
	f.pods.mu.Lock()
	hits := f.pods.hits["trellis-system/trellis-controller-0:9000 /debug/state"]
	f.pods.mu.Unlock()
	if hits == 0 {
		t.Error("no command read the leader's /debug/state")
	}

	// Config problems: a Service with a bad annotation.
	t.Run("check_problems", func(t *testing.T) {
		ctx := context.Background()
		_, err := f.kube.CoreV1().Services("shop").Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "broken", Annotations: map[string]string{"trellis.io/timeout": "forever"}},
			Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "broken"}, Ports: []corev1.ServicePort{{Name: "http", Port: 80}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = f.kube.CoreV1().Services("shop").Delete(ctx, "broken", metav1.DeleteOptions{}) })
		poll(t, "the controller reports shop/broken", 30*time.Second, func() string {
			r := clitest.Run(t, f.commands, admin, "check")
			if !strings.Contains(r.Out, "Service shop/broken") {
				return r.Out
			}
			return ""
		})
		f.golden(t, "check_problems", admin, 3, "check")
	})
}

// TestFromPod: a failed pods/proxy GET is the pod's own answer unless the
// body is the apiserver's Status.
func TestFromPod(t *testing.T) {
	gr := schema.GroupResource{Resource: "pods"}
	forbidden := clienv.APIError("GET /debug/state from pod trellis-system/c port 9000", apierrors.NewForbidden(gr, "c:9000", errors.New("no")))
	cases := []struct {
		name     string
		body     string
		err      error
		code     int    // podError code, 0: not a podError
		exit     int    // clienv exit code when not a podError
		contains string // in the error
	}{
		{"the apiserver refuses (RBAC)", `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"pods \"c\" is forbidden: User \"bob\" cannot get resource \"pods/proxy\"","reason":"Forbidden","code":403}`,
			forbidden, 0, clienv.ExitForbidden, `GET /debug/state from pod trellis-system/c port 9000: pods "c" is forbidden: User "bob" cannot get resource "pods/proxy"`},
		{"the controller refuses", `{"error":"bob may not read the debug API"}`,
			clienv.APIError("GET", apierrors.NewGenericServerResponse(403, "GET", gr, "c", "unknown", 0, true)), 403, 0, "bob may not read the debug API"},
		{"the proxy answers text", "not ready: draining\n",
			clienv.APIError("GET", apierrors.NewGenericServerResponse(503, "GET", gr, "c", "unknown", 0, true)), 503, 0, "not ready: draining"},
		{"no body", "", forbidden, 0, clienv.ExitForbidden, "forbidden"},
		{"not an API error", "x", errors.New("connection reset"), 0, clienv.ExitFailure, "connection reset"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := fromPod("GET /debug/state from pod trellis-system/c port 9000", []byte(tc.body), tc.err)
			var pe *podError
			if errors.As(err, &pe) != (tc.code != 0) || (pe != nil && pe.Code != tc.code) {
				t.Fatalf("%#v, want pod code %d", err, tc.code)
			}
			if tc.code == 0 && clienv.Code(err) != tc.exit {
				t.Errorf("exit %d, want %d (%v)", clienv.Code(err), tc.exit, err)
			}
			if !strings.Contains(err.Error(), tc.contains) {
				t.Errorf("%q lacks %q", err, tc.contains)
			}
		})
	}
	var pe *podError
	if err := fromPod("GET", []byte(`{"error":"x"}`), forbidden); !errors.As(err, &pe) || pe.Msg != "x" || !strings.Contains(pe.Error(), "403 Forbidden: x") {
		t.Errorf("%v", err)
	}
}

func TestTokenAudiences(t *testing.T) {
	dep := func(cmd, args []string) *appsv1.Deployment {
		d := &appsv1.Deployment{}
		d.Spec.Template.Spec.Containers = []corev1.Container{{Name: "c", Command: cmd, Args: args}}
		return d
	}
	cases := []struct {
		d    *appsv1.Deployment
		want string
	}{
		{dep(nil, []string{"--serve-addr=:9000"}), ""},
		{dep(nil, []string{"--token-audiences=trellis, other ,"}), "trellis,other"},
		{dep([]string{"/trellis-controller", "--token-audiences", "a"}, []string{"--x"}), "a"},
		{dep(nil, []string{"--token-audiences"}), ""},
	}
	for _, tc := range cases {
		if got := strings.Join(tokenAudiences(tc.d), ","); got != tc.want {
			t.Errorf("%v %v: %q, want %q", tc.d.Spec.Template.Spec.Containers[0].Command, tc.d.Spec.Template.Spec.Containers[0].Args, got, tc.want)
		}
	}
}

func TestControllerScheme(t *testing.T) {
	for args, want := range map[string]string{
		"--serve-addr=:9000":                             "",
		"--tls-cert=/tls/tls.crt --tls-key=/tls/tls.key": "https:",
		"--tls-cert /tls/tls.crt":                        "https:",
		"--tls-certificate-authority=x":                  "",
	} {
		d := &appsv1.Deployment{}
		d.Spec.Template.Spec.Containers = []corev1.Container{{Name: "c", Args: strings.Fields(args)}}
		if got := controllerScheme(d); got != want {
			t.Errorf("%s: %q, want %q", args, got, want)
		}
	}
}

func TestLeaseLeader(t *testing.T) {
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	lease := func(holder string, renewed time.Duration, secs int32) *coordinationv1.Lease {
		l := &coordinationv1.Lease{}
		l.Spec.HolderIdentity = &holder
		rt := metav1.NewMicroTime(now.Add(-renewed))
		l.Spec.RenewTime, l.Spec.LeaseDurationSeconds = &rt, &secs
		return l
	}
	cases := []struct {
		name  string
		l     *coordinationv1.Lease
		fresh bool
		why   string
	}{
		{"no lease", nil, false, "no replica has led yet"},
		{"released", lease("", time.Second, 15), false, "has no holder"},
		{"fresh", lease("c-0", 5*time.Second, 15), true, ""},
		{"expired", lease("c-0", 2*time.Minute, 15), false, "held by c-0 was last renewed 2m ago (it lasts 15s)"},
	}
	for _, tc := range cases {
		ld := leaseLeader(tc.l, "trellis-system", now)
		if ld.fresh != tc.fresh || !strings.Contains(ld.why, tc.why) || (tc.why == "" && ld.why != "") {
			t.Errorf("%s: %+v", tc.name, ld)
		}
	}
}

func TestRuleAccess(t *testing.T) {
	got := ruleAccess(rbacv1.PolicyRule{Verbs: []string{"get", "update"}, APIGroups: []string{""}, Resources: []string{"configmaps", "pods/proxy"}, ResourceNames: []string{"coredns"}}, "kube-system")
	var s []string
	for _, a := range got {
		s = append(s, a.String())
	}
	want := "get configmaps coredns in namespace kube-system|get pods/proxy coredns in namespace kube-system|update configmaps coredns in namespace kube-system|update pods/proxy coredns in namespace kube-system"
	if strings.Join(s, "|") != want {
		t.Errorf("%s", strings.Join(s, "|"))
	}
	got = ruleAccess(rbacv1.PolicyRule{Verbs: []string{"get"}, NonResourceURLs: []string{"/trellis/debug"}}, "")
	if len(got) != 1 || got[0].String() != "get /trellis/debug" {
		t.Errorf("%v", got)
	}
}

func TestShortVersion(t *testing.T) {
	for in, want := range map[string]string{
		"":                             "",
		"sha256-tree:0123456789abcdef": "sha256-tree:0123456789ab",
		"sha256-tree:abc":              "sha256-tree:abc",
		"v1":                           "v1",
	} {
		if got := shortVersion(in); got != want {
			t.Errorf("shortVersion(%q) = %q, want %q", in, got, want)
		}
	}
}
