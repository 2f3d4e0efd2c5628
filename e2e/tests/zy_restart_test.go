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

// TestZYCrashAndRestart runs after the functional tests: a supervisor killed
// with SIGKILL takes its children with it; `up` then refuses a taken port
// with one clear line and leaves nothing behind, and once the port is free
// it cleans the leftovers and starts a fresh cluster.
func TestZYCrashAndRestart(t *testing.T) {
	rootOnly(t)
	st, err := cluster.ReadStatus(state)
	if err != nil || !st.Alive() {
		t.Fatalf("no running supervisor to crash: %v", err)
	}
	if err := syscall.Kill(st.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "control plane processes die with the supervisor", func() error {
		if ps := cluster.Processes(); len(ps) != 0 {
			var desc []string
			for _, p := range ps {
				b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p))
				st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
				desc = append(desc, fmt.Sprintf("%d [%s] stat=%.60s", p, strings.ReplaceAll(string(b), "\x00", " "), st))
			}
			return errorf("still running: %s", strings.Join(desc, "; "))
		}
		return nil
	})
	out, err := dev("status")
	if err == nil || !strings.Contains(out, "not running") {
		t.Fatalf("status after a crash: %v %q", err, out)
	}

	// etcd's port taken by someone else.
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

	out, err = dev("up", "--nodes", "3")
	if err != nil {
		t.Fatalf("up after a crash: %v\n%s", err, out)
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
