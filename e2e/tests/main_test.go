// Package tests holds Trellis's end-to-end suites. They run on the local
// cluster (e2e/cluster) through the trellis-dev binary, exactly as a user
// would, and need root. TestMain brings a fresh 3-node cluster up and the
// last test takes it down and checks that nothing is left behind.
package tests

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellis-mesh/trellis/e2e/cluster"
	"github.com/trellis-mesh/trellis/e2e/toolchain"
)

var (
	bins  toolchain.Bins
	state string
	env   *cluster.Client
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

// innerEnv marks the copy of this test binary that runs inside the
// sandbox of an unprivileged cluster.
const innerEnv = "TRELLIS_E2E_INNER"

func run(m *testing.M) int {
	ctx := context.Background()
	if os.Getenv(innerEnv) == "1" {
		return runInner(m)
	}
	if cluster.NeedsSandbox() {
		if err := cluster.SandboxAvailable(ctx); err != nil {
			msg := "e2e: " + err.Error()
			if os.Getenv("TRELLIS_E2E") == "required" {
				fmt.Fprintln(os.Stderr, "FAIL:", msg)
				return 1
			}
			fmt.Fprintln(os.Stderr, "SKIP:", msg)
			return 0
		}
	}
	wd, _ := os.Getwd()
	root, err := toolchain.RepoRoot(wd)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if bins, err = toolchain.Ensure(ctx, root, func(f string, a ...any) { fmt.Printf("e2e: "+f+"\n", a...) }); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// One cluster per machine (its bridge and namespaces have fixed names):
	// the suite takes over the user's, starting from a fresh one.
	state = cluster.DefaultStateDir()
	if out, err := dev("down"); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: down before up: %v\n%s", err, out)
		return 1
	}
	start := time.Now()
	out, err := dev("up", "--nodes", "3")
	fmt.Print(out)
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: cluster up: %v\n", err)
		_, _ = dev("down")
		return 1
	}
	fmt.Printf("e2e: cluster up in %s\n", time.Since(start).Round(100*time.Millisecond))
	if cluster.NeedsSandbox() {
		return runOuter()
	}
	if env, err = cluster.Connect(state); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	code := m.Run()
	// The last test takes the cluster down; if it did not run, do it here.
	if st, _ := cluster.ReadStatus(state); st.Alive() {
		if out, err := dev("down"); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: down: %v\n%s", err, out)
			return 1
		}
	}
	return code
}

// dev runs the trellis-dev binary against the suite's state folder and
// returns its combined output.
func dev(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bins.Path("trellis-dev"), append([]string{"--state", state}, args...)...)
	cmd.Env = append(os.Environ(), "TRELLIS_ROOT="+mustRoot())
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func mustRoot() string {
	wd, _ := os.Getwd()
	r, _ := toolchain.RepoRoot(wd)
	return r
}

// eventually polls f until it returns nil or the deadline passes.
func eventually(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = f(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %s: %v", what, timeout, err)
		}
		time.Sleep(100 * time.Millisecond) // polling interval, bounded by the deadline above
	}
}

// logsOnFailure prints the tail of every container log in the namespaces
// when the test fails, while the pods (and their logs) still exist.
func logsOnFailure(t *testing.T, namespaces ...string) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, ns := range namespaces {
			pods, err := env.CS.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
			if err != nil {
				t.Logf("listing pods in %s: %v", ns, err)
				continue
			}
			for _, p := range pods.Items {
				for _, c := range p.Spec.Containers {
					path, err := env.LogPath(ctx, ns, p.Name, c.Name)
					if err != nil {
						t.Logf("%v", err)
						continue
					}
					b, err := os.ReadFile(path)
					if err != nil {
						t.Logf("log of %s/%s: %v", ns, p.Name, err)
						continue
					}
					lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
					if len(lines) > 60 {
						lines = lines[len(lines)-60:]
					}
					t.Logf("--- %s/%s (node %s) container %s, last %d lines:\n%s", ns, p.Name, p.Spec.NodeName, c.Name, len(lines), strings.Join(lines, "\n"))
				}
			}
		}
	})
}

// inPod runs argv inside a pod's network namespace and returns stdout.
func inPod(ctx context.Context, ns, pod string, argv ...string) (string, error) {
	cmd, err := env.Command(ctx, ns, pod, argv...)
	if err != nil {
		return "", err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// reportField extracts "Key: value" from a whoami report.
func reportField(report, key string) string { return cluster.ReportField(report, key) }

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

// runOuter re-runs this test binary inside the sandbox of the cluster it
// just started (the cluster's addresses exist only there), then takes the
// cluster down and checks that none of its processes remain.
func runOuter() int {
	st, err := cluster.ReadStatus(state)
	if err != nil || !st.Alive() {
		fmt.Fprintf(os.Stderr, "e2e: no sandboxed supervisor after up: %v\n", err)
		return 1
	}
	argv := cluster.EnterCommand(st.PID, os.Args)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), cluster.SandboxEnv+"=1", innerEnv+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	code := 0
	if err := cmd.Run(); err != nil {
		code = 1
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() > 0 {
			code = ee.ExitCode()
		}
	}
	if out, err := dev("down"); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: down: %v\n%s", err, out)
		return 1
	}
	if ps := cluster.Processes(state); len(ps) != 0 || cluster.Alive(st.PID) {
		fmt.Fprintf(os.Stderr, "FAIL: e2e: processes left after down: %v (supervisor alive: %v)\n", ps, cluster.Alive(st.PID))
		return 1
	}
	return code
}

// runInner runs the tests inside the sandbox against the running cluster.
func runInner(m *testing.M) int {
	bins = toolchain.Cached()
	state = cluster.DefaultStateDir()
	var err error
	if env, err = cluster.Connect(state); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// rootOnly skips tests that stop and restart the whole cluster, which the
// sandboxed run cannot do from inside its own sandbox; CI runs as root and
// runs them.
func rootOnly(t *testing.T) {
	if cluster.InSandbox() {
		t.Skip("restarts the cluster: runs as root only (the sandboxed run checks teardown from outside)")
	}
}
