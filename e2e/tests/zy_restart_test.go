package tests

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellis-mesh/trellis/e2e/cluster"
)

// TestZYCrashAndRestart runs after the functional tests: after a supervisor
// is killed with SIGKILL, `status` says so; the next `up` removes every
// process and namespace the crashed cluster left, refuses a taken port with
// one clear line leaving nothing behind, and once the port is free starts a
// fresh cluster.
func TestZYCrashAndRestart(t *testing.T) {
	rootOnly(t)
	st, err := cluster.ReadStatus(state)
	if err != nil || !st.Alive() {
		t.Fatalf("no running supervisor to crash: %v", err)
	}
	before := cluster.Processes(state)
	if len(before) == 0 {
		t.Fatal("no cluster processes found before the crash")
	}
	if err := syscall.Kill(st.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the supervisor is gone", func() error {
		if cluster.Alive(st.PID) {
			return errorf("supervisor %d still alive", st.PID)
		}
		return nil
	})
	out, err := dev("status")
	if err == nil || !strings.Contains(out, "not running") {
		t.Fatalf("status after a crash: %v %q", err, out)
	}

	// The next up removes what the crashed cluster left running (children
	// normally die with the supervisor; this is the guarantee when not).
	if out, err := dev("up", "--nodes", "3"); err != nil {
		t.Fatalf("up after a crash: %v\n%s", err, out)
	}
	var left []string
	for _, p := range before {
		if cluster.Alive(p) {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p))
			left = append(left, fmt.Sprintf("%d [%s]", p, strings.ReplaceAll(string(b), "\x00", " ")))
		}
	}
	if len(left) != 0 {
		t.Fatalf("processes of the crashed cluster still run after the next up: %s", strings.Join(left, "; "))
	}

	// etcd's port taken by someone else: up refuses with one line and
	// leaves nothing behind; once the port is free, up works again.
	if out, err := dev("down"); err != nil {
		t.Fatalf("down: %v\n%s", err, out)
	}
	l, err := net.Listen("tcp", "127.0.0.1:32379")
	if err != nil {
		t.Fatal(err)
	}
	out, err = dev("up", "--nodes", "3")
	_ = l.Close()
	if err == nil || !strings.Contains(out, "port 127.0.0.1:32379 is already taken") {
		t.Fatalf("up with a taken port: %v\n%s", err, out)
	}
	if nss, _ := cluster.Namespaces(context.Background()); len(nss) != 0 {
		t.Fatalf("a refused up left namespaces behind: %v", nss)
	}
	if out, err := dev("up", "--nodes", "3"); err != nil {
		t.Fatalf("up once the port is free: %v\n%s", err, out)
	}
	c, err := cluster.Connect(state)
	if err != nil {
		t.Fatal(err)
	}
	nodes, err := c.CS.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil || len(nodes.Items) != 3 {
		t.Fatalf("nodes after restart: %v %v", nodes, err)
	}
	// The fresh cluster starts empty: the old pods are gone with etcd's data.
	pods, err := c.CS.CoreV1().Pods("e2e-svc").List(context.Background(), metav1.ListOptions{})
	if err != nil || len(pods.Items) != 0 {
		t.Fatalf("pods from the crashed cluster reappeared: %d %v", len(pods.Items), err)
	}
	env = c
}
