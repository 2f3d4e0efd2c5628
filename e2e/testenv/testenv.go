package testenv

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"

	"k8s.io/client-go/rest"

	"github.com/trellis-mesh/trellis/e2e/cluster"
	"github.com/trellis-mesh/trellis/e2e/toolchain"
)

var (
	once sync.Once
	cp   *cluster.ControlPlane
	dir  string
	err  error
)

// Main runs the tests, then stops the control plane if one was started.
func Main(m *testing.M) int {
	code := m.Run()
	if cp != nil {
		cp.Stop()
	}
	if dir != "" {
		_ = os.RemoveAll(dir)
	}
	return code
}

// ControlPlane returns an admin config for the shared control plane,
// starting it on first use. It fails the test with the reason if the
// control plane cannot start.
func ControlPlane(t testing.TB) *rest.Config {
	t.Helper()
	once.Do(start)
	if err != nil {
		t.Fatalf("real control plane unavailable: %v", err)
	}
	cfg, cerr := cp.RestConfig()
	if cerr != nil {
		t.Fatalf("admin kubeconfig: %v", cerr)
	}
	cfg.QPS, cfg.Burst = 200, 400
	return cfg
}

func start() {
	ctx := context.Background()
	wd, _ := os.Getwd()
	root, rerr := toolchain.RepoRoot(wd)
	if rerr != nil {
		err = rerr
		return
	}
	bins, berr := toolchain.EnsureUpstream(ctx, root, func(f string, a ...any) {
		fmt.Fprintf(os.Stderr, "testenv: "+f+"\n", a...)
	})
	if berr != nil {
		err = berr
		return
	}
	if dir, err = os.MkdirTemp("", "trellis-testenv-"); err != nil {
		return
	}
	cp, err = cluster.StartControlPlane(ctx, cluster.ControlPlaneOptions{Dir: dir, Bins: bins, BindIP: "127.0.0.1"})
}
