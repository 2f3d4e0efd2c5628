// Command trellis-dev runs Trellis's local Kubernetes cluster: real etcd,
// kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy
// (nftables) and CoreDNS, with nodes and pods as network namespaces.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
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
		newPod(g), newExec(g), newLogs(g), newDemo(g), newDaemon(g),
	)
	return root
}
