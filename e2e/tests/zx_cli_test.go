package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
)

// trellisCLI runs kubectl-trellis against the cluster and returns stdout,
// stderr and the exit code.
func trellisCLI(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bins.Path("kubectl-trellis"), append([]string{"--kubeconfig", env.Status.Kubeconfig}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Stdin = strings.NewReader(stdin)
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("kubectl-trellis %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// cliOK runs a command that must succeed and returns its stdout.
func cliOK(t *testing.T, args ...string) string {
	t.Helper()
	out, errs, code := trellisCLI(t, "", args...)
	if code != 0 {
		t.Fatalf("kubectl trellis %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

// cliJSON runs a command with -o json and decodes its output.
func cliJSON(t *testing.T, args ...string) map[string]any {
	t.Helper()
	var v map[string]any
	out := cliOK(t, append(args, "-o", "json")...)
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("kubectl trellis %s -o json: %v\n%s", strings.Join(args, " "), err, out)
	}
	return v
}

// TestZXCLIOnTheCluster (issue 6) drives Trellis only through kubectl
// trellis: install and check, opt-in, access control explained by why and
// fixed by allow, a 90/10 split measured on live traffic, stat reading the
// proxies, status/config/version, and an uninstall that leaves nothing.
// It runs after the other mesh tests, as it removes Trellis at the end.
func TestZXCLIOnTheCluster(t *testing.T) {
	logsOnFailure(t, "trellis-system")
	ctx := context.Background()

	out := cliOK(t, "install", "--acl", "--wait", "3m")
	if !strings.Contains(out, "rolled out on every node") {
		t.Errorf("install output has no roll-out line:\n%s", out)
	}
	eventually(t, 90*time.Second, "kubectl trellis check passes", func() error {
		out, errs, code := trellisCLI(t, "", "check")
		if code != 0 {
			return fmt.Errorf("exit %d\n%s%s", code, out, errs)
		}
		return nil
	})
	// What install --dry-run prints is accepted by the apiserver as is.
	dry := cliOK(t, "install", "--dry-run", "-o", "yaml")
	kubectl := exec.Command(bins.Path("kubectl"), "--kubeconfig", env.Status.Kubeconfig, "apply", "--dry-run=server", "-f", "-")
	kubectl.Stdin = strings.NewReader(dry)
	if b, err := kubectl.CombinedOutput(); err != nil {
		t.Fatalf("install --dry-run -o yaml | kubectl apply --dry-run=server -f -: %v\n%s", err, b)
	}

	ns := "e2e-cli"
	whoamiPod(t, ns, "web-1", "node-1", map[string]string{"app": "web", "version": "v1"}, "web")
	whoamiPod(t, ns, "web-2", "node-2", map[string]string{"app": "web", "version": "v2"}, "web")
	whoamiPod(t, ns, "client", "node-3", map[string]string{"app": "client"}, "client")
	service(t, ns, "web", map[string]string{"app": "web"}, false)
	service(t, ns, "web-v1", map[string]string{"app": "web", "version": "v1"}, false)
	service(t, ns, "web-v2", map[string]string{"app": "web", "version": "v2"}, false)
	for _, s := range []string{"web", "web-v1", "web-v2"} {
		cliOK(t, "join", s, "-n", ns)
	}
	if _, errs, code := trellisCLI(t, "", "join", "nosuch", "-n", ns); code != 6 || strings.Count(errs, "\n") != 1 {
		t.Errorf("join of an unknown Service: exit %d, %q (want exit 6 and one line)", code, errs)
	}

	url := "http://web." + ns + ".mesh/"
	status := func(want string) func() error {
		return func() error {
			out, err := inPod(ctx, ns, "client", "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "3", url)
			if err != nil {
				return err
			}
			if out != want {
				return fmt.Errorf("status %s, want %s", out, want)
			}
			return nil
		}
	}
	// ACL on, no TrafficTarget: denied, and why says so and how to fix it.
	eventually(t, 90*time.Second, "the client is denied (403) with ACL on", status("403"))
	why := cliJSON(t, "why", "-n", ns, "--from", "client", "--to", "web:80", "--path", "/")
	access, _ := why["access"].(map[string]any)
	fix, _ := access["fix"].(string)
	if access["allowed"] != false || !strings.HasPrefix(fix, "kubectl trellis allow --from sa/"+ns+"/client") {
		t.Fatalf("why before allow: access %v", access)
	}
	cliOK(t, "allow", "--from", "sa/"+ns+"/client", "--to", "sa/"+ns+"/web")
	eventually(t, 60*time.Second, "after allow the client gets 200", status("200"))
	why = cliJSON(t, "why", "-n", ns, "--from", "client", "--to", "web:80", "--path", "/")
	if access, _ = why["access"].(map[string]any); access["allowed"] != true {
		t.Fatalf("why after allow: access %v", access)
	}

	// A 90/10 split, measured on live traffic, while stat reads the proxies.
	cliOK(t, "split", "web", "-n", ns, "--to", "web-v1=90,web-v2=10")
	eventually(t, 60*time.Second, "the split reaches the client's proxy", func() error {
		w := cliJSON(t, "why", "-n", ns, "--from", "client", "--to", "web:80", "--path", "/")
		if sp, _ := w["split"].(map[string]any); sp == nil || sp["applies"] != true {
			return fmt.Errorf("split %v", w["split"])
		}
		out, err := inPod(ctx, ns, "client", "curl", "-sS", "--max-time", "3", url)
		if err != nil {
			return err
		}
		if h := reportField(out, "Hostname"); h != "web-1" && h != "web-2" {
			return fmt.Errorf("answered by %q", h)
		}
		return nil
	})
	lr := startLoad(t, ns, "client", url, 50)
	time.Sleep(3 * time.Second) // let traffic flow before the first scrape (pacing)
	st := cliJSON(t, "stat", "web", "-n", ns, "--interval", "10s")
	rep := lr.stop(t)
	if rep.Failed != 0 {
		t.Errorf("%d of %d requests failed during the split: %+v", rep.Failed, rep.Requests, rep.Failures)
	}
	v2 := float64(rep.Answers["web-2"]) / float64(rep.OK)
	t.Logf("split 90/10 over %d requests: web-1 %d, web-2 %d (%.1f%%)", rep.OK, rep.Answers["web-1"], rep.Answers["web-2"], 100*v2)
	if v2 < 0.05 || v2 > 0.15 {
		t.Errorf("web-2 got %.1f%% of %d requests, want 10%% ± 5", 100*v2, rep.OK)
	}
	svcs, _ := st["services"].([]any)
	if len(svcs) != 1 {
		t.Fatalf("stat web: %v", st)
	}
	s0, _ := svcs[0].(map[string]any)
	rps, _ := s0["rps"].(float64)
	t.Logf("stat web: %.1f req/s, success %v, latency %v", rps, s0["successRate"], s0["latencyMs"])
	if rps < 35 || rps > 65 || s0["successRate"] != 1.0 {
		t.Errorf("stat web: rps %.1f (load 50/s), success %v", rps, s0["successRate"])
	}

	// status, config and version agree with the cluster.
	stat := cliJSON(t, "status", "-A")
	nodes, _ := stat["nodes"].([]any)
	if len(nodes) != 3 {
		t.Fatalf("status: %d nodes: %v", len(nodes), stat["nodes"])
	}
	for _, n := range nodes {
		if m, _ := n.(map[string]any); m["current"] != true {
			t.Errorf("status: node not current: %v", m)
		}
	}
	cfg := cliJSON(t, "config", "node-3")
	if v, _ := cfg["version"].(string); !strings.HasPrefix(v, "sha256") {
		t.Errorf("config node-3: version %v", cfg["version"])
	}
	cliJSON(t, "version")

	// uninstall removes every Trellis object and nothing of the user's.
	out = cliOK(t, "uninstall", "--yes")
	t.Logf("uninstall:\n%s", out)
	eventually(t, 120*time.Second, "nothing labelled part-of=trellis is left but the CRDs", func() error {
		left, err := labelledObjects(ctx, "app.kubernetes.io/part-of=trellis")
		if err != nil {
			return err
		}
		var bad []string
		for _, o := range left {
			if !strings.HasPrefix(o, "customresourcedefinitions/") {
				bad = append(bad, o)
			}
		}
		if len(bad) > 0 {
			return fmt.Errorf("left behind: %v", bad)
		}
		return nil
	})
	if _, err := env.CS.CoreV1().Services(ns).Get(ctx, "web", metav1.GetOptions{}); err != nil {
		t.Errorf("the user's Service web is gone after uninstall: %v", err)
	}
	out = cliOK(t, "uninstall", "--yes")
	if !strings.Contains(out, "Nothing to remove") {
		t.Errorf("second uninstall: %s", out)
	}
}

// labelledObjects lists every object with the label, of every listable
// type, as "resource/namespace/name".
func labelledObjects(ctx context.Context, selector string) ([]string, error) {
	disco := discovery.NewDiscoveryClientForConfigOrDie(env.Config)
	dyn := dynamic.NewForConfigOrDie(env.Config)
	lists, err := disco.ServerPreferredResources()
	if err != nil && len(lists) == 0 {
		return nil, err
	}
	var out []string
	for _, l := range lists {
		gv, err := schema.ParseGroupVersion(l.GroupVersion)
		if err != nil {
			continue
		}
		for _, r := range l.APIResources {
			if strings.Contains(r.Name, "/") || !slices.Contains(r.Verbs, "list") {
				continue
			}
			items, err := dyn.Resource(gv.WithResource(r.Name)).List(ctx, metav1.ListOptions{LabelSelector: selector})
			if err != nil {
				continue // e.g. a served type whose CRD is going away
			}
			for _, it := range items.Items {
				out = append(out, r.Name+"/"+it.GetNamespace()+"/"+it.GetName())
			}
		}
	}
	return out, nil
}
