// Command trellis-dev runs Trellis's local Kubernetes cluster: real etcd,
// kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy
// (nftables) and CoreDNS, with nodes and pods as network namespaces.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/e2e/cluster"
)

func main() {
	// pod-init runs as the first program of a container; it must not pay
	// for cobra or touch stdout.
	if len(os.Args) > 1 && os.Args[1] == "pod-init" {
		if err := cluster.PodInit(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(127)
		}
		return
	}
	enterSandbox()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRoot()
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "trellis-dev:", err)
		var ee exitError
		if errors.As(err, &ee) {
			os.Exit(int(ee))
		}
		os.Exit(1)
	}
}

// exitError carries a specific exit code through cobra.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

type globals struct {
	state string
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "trellis-dev",
		Short:         "Run a real Kubernetes cluster on this machine, without Docker",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.state, "state", cluster.DefaultStateDir(), "folder holding the cluster's state and logs")
	root.AddCommand(
		newUp(g), newDown(g), newStatus(g), newKubeconfig(g), newTools(),
		newPod(g), newExec(g), newLogs(g), newShell(g), newDemo(g), newDaemon(g),
	)
	return root
}

// enterSandbox re-runs commands that talk to the cluster inside the sandbox
// of an unprivileged cluster, where its addresses and namespaces live.
func enterSandbox() {
	if !cluster.NeedsSandbox() || len(os.Args) < 2 {
		return
	}
	switch os.Args[1] {
	case "status", "exec", "logs", "pod", "demo", "shell", "kubeconfig":
	default:
		return
	}
	state := cluster.DefaultStateDir()
	for i, a := range os.Args {
		if a == "--state" && i+1 < len(os.Args) {
			state = os.Args[i+1]
		} else if v, ok := strings.CutPrefix(a, "--state="); ok {
			state = v
		}
	}
	st, err := cluster.ReadStatus(state)
	if err != nil || !st.Alive() || !st.Sandbox {
		return // the command itself explains what is wrong
	}
	self, err := os.Executable()
	if err != nil {
		return
	}
	argv := cluster.EnterCommand(st.PID, append([]string{self}, os.Args[1:]...))
	bin, err := exec.LookPath(argv[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, "trellis-dev: nsenter (util-linux) is needed to reach the sandboxed cluster:", err)
		os.Exit(1)
	}
	env := append(os.Environ(), cluster.SandboxEnv+"=1")
	if err := syscall.Exec(bin, argv, env); err != nil {
		fmt.Fprintln(os.Stderr, "trellis-dev: entering the sandbox:", err)
		os.Exit(1)
	}
}
