package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/e2e/cluster"
	"github.com/trellis-mesh/trellis/e2e/toolchain"
)

func progress(format string, args ...any) { fmt.Printf("• "+format+"\n", args...) }

func ensureTools(ctx context.Context) (toolchain.Bins, error) {
	wd, _ := os.Getwd()
	root, err := toolchain.RepoRoot(wd)
	if err != nil {
		return toolchain.Bins{}, err
	}
	return toolchain.Ensure(ctx, root, progress)
}

func newTools() *cobra.Command {
	return &cobra.Command{
		Use:   "tools",
		Short: "Build the pinned upstream binaries and Trellis's own into the cache",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			start := time.Now()
			b, err := ensureTools(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Printf("tools ready in %s: %s, %s\n", time.Since(start).Round(time.Second), b.Upstream, b.Own)
			return nil
		},
	}
}

func newUp(g *globals) *cobra.Command {
	nodes := 2
	timeout := 5 * time.Minute
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Start the cluster (idempotent: an already running cluster is left as it is)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			sandbox := cluster.NeedsSandbox()
			if sandbox {
				if err := cluster.SandboxAvailable(ctx); err != nil {
					return err
				}
			}
			st, err := cluster.ReadStatus(g.state)
			if err != nil {
				return err
			}
			if st.Alive() && (st.Phase == cluster.PhaseFailed || st.Phase == cluster.PhaseStopping) {
				fmt.Printf("• waiting for the previous supervisor %d to finish stopping\n", st.PID)
				for end := time.Now().Add(90 * time.Second); st.Alive() && time.Now().Before(end); {
					time.Sleep(100 * time.Millisecond)
				}
			}
			if st.Alive() {
				if st.Phase == cluster.PhaseReady {
					if len(st.Nodes) != nodes && cmd.Flags().Changed("nodes") {
						return fmt.Errorf("a cluster with %d nodes is already up; run `trellis-dev down` first to change --nodes", len(st.Nodes))
					}
					fmt.Printf("cluster already up: %d nodes, kubeconfig %s\n", len(st.Nodes), st.Kubeconfig)
					return nil
				}
				fmt.Printf("a cluster is %s (supervisor %d); following it\n", st.Phase, st.PID)
				return follow(ctx, g.state, st.PID, timeout, len(st.Progress))
			}
			if st != nil {
				fmt.Println("• removing what a previous cluster left behind")
				if _, err := cluster.Cleanup(ctx, g.state); err != nil {
					return err
				}
			}
			bins, err := ensureTools(ctx)
			if err != nil {
				return err
			}
			if !sandbox {
				if err := cluster.Preflight(bins); err != nil {
					return err
				}
			}
			self := bins.Path("trellis-dev")
			if err := os.MkdirAll(filepath.Join(g.state, "logs"), 0o755); err != nil {
				return err
			}
			logf, err := os.OpenFile(filepath.Join(g.state, "logs", "supervisor.log"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
			if err != nil {
				return err
			}
			defer func() { _ = logf.Close() }()
			argv := []string{self, "daemon", "--state", g.state, "--nodes", fmt.Sprint(nodes),
				"--upstream", bins.Upstream, "--own", bins.Own}
			if sandbox {
				argv = cluster.SandboxCommand(append(argv, "--sandbox"))
			}
			d := exec.Command(argv[0], argv[1:]...)
			d.Env = os.Environ()
			if sandbox {
				d.Env = append(d.Env, cluster.SandboxEnv+"=1")
			}
			d.Stdout, d.Stderr = logf, logf
			d.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
			_ = os.Remove(filepath.Join(g.state, "status.json"))
			if err := d.Start(); err != nil {
				return fmt.Errorf("starting the supervisor: %w", err)
			}
			pid := d.Process.Pid
			_ = d.Process.Release()
			fmt.Printf("• starting a %d-node cluster (supervisor %d, logs in %s)\n", nodes, pid, filepath.Join(g.state, "logs"))
			return follow(ctx, g.state, pid, timeout, 0)
		},
	}
	cmd.Flags().IntVar(&nodes, "nodes", nodes, "number of nodes (1-200)")
	cmd.Flags().DurationVar(&timeout, "timeout", timeout, "how long to wait for the cluster to be ready")
	return cmd
}

// follow prints the supervisor's progress until the cluster is ready, fails,
// or the supervisor dies.
func follow(ctx context.Context, state string, pid int, timeout time.Duration, seen int) error {
	deadline := time.Now().Add(timeout)
	for {
		st, err := cluster.ReadStatus(state)
		if err != nil {
			return err
		}
		if st != nil {
			for ; seen < len(st.Progress); seen++ {
				progress("%s", st.Progress[seen])
			}
			switch st.Phase {
			case cluster.PhaseReady:
				fmt.Printf("cluster ready in %s: %d nodes\n  export KUBECONFIG=%s\n", st.ReadyAfter, len(st.Nodes), st.Kubeconfig)
				return nil
			case cluster.PhaseFailed, cluster.PhaseStopping:
				if st.Message != "" {
					// Let the supervisor finish tearing down, so that the
					// next `up` does not race its cleanup.
					for end := time.Now().Add(90 * time.Second); alivePID(pid) && time.Now().Before(end); {
						time.Sleep(100 * time.Millisecond)
					}
					return fmt.Errorf("cluster failed to start: %s", st.Message)
				}
			}
		}
		if !alivePID(pid) {
			msg := "the supervisor exited"
			if st != nil && st.Message != "" {
				msg = st.Message
			}
			return fmt.Errorf("cluster failed to start: %s (see %s)", msg, filepath.Join(state, "logs", "supervisor.log"))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster not ready after %s; see %s, or run `trellis-dev down`", timeout, filepath.Join(state, "logs"))
		}
		select {
		case <-ctx.Done():
			return errors.New("interrupted; the cluster keeps starting in the background (`trellis-dev status`, `trellis-dev down`)")
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func alivePID(pid int) bool { return cluster.Alive(pid) }

func newDaemon(g *globals) *cobra.Command {
	var nodes int
	var upstream, own string
	var sandbox bool
	cmd := &cobra.Command{
		Use:    "daemon",
		Short:  "Run the cluster supervisor in the foreground (used by up)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			self, err := os.Executable()
			if err != nil {
				return err
			}
			return cluster.Run(cmd.Context(), cluster.Config{
				Nodes: nodes, StateDir: g.state, Self: self,
				Bins: toolchain.Bins{Upstream: upstream, Own: own}, Sandbox: sandbox,
			})
		},
	}
	cmd.Flags().IntVar(&nodes, "nodes", 2, "number of nodes")
	cmd.Flags().StringVar(&upstream, "upstream", "", "folder of upstream binaries")
	cmd.Flags().StringVar(&own, "own", "", "folder of Trellis binaries")
	cmd.Flags().BoolVar(&sandbox, "sandbox", false, "prepare an unprivileged sandbox first (set by up without root)")
	return cmd
}

func newDown(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "down",
		Short: "Stop the cluster and remove every namespace, link, rule and process it made",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cluster.NeedsSandbox() {
				if st, _ := cluster.ReadStatus(g.state); st.Alive() && !st.Sandbox {
					return fmt.Errorf("the running cluster was started by root; stop it as root: %w", cluster.ErrNotRoot)
				}
			}
			start := time.Now()
			removed, err := cluster.Stop(cmd.Context(), g.state)
			if err != nil {
				return err
			}
			if len(removed) == 0 {
				fmt.Println("no cluster was running; nothing to remove")
				return nil
			}
			fmt.Printf("cluster down in %s (removed: %d items)\n", time.Since(start).Round(100*time.Millisecond), len(removed))
			return nil
		},
	}
}

func newStatus(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show whether the cluster runs, its nodes and pods",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := cluster.ReadStatus(g.state)
			if err != nil {
				return err
			}
			if !st.Alive() {
				fmt.Println("cluster: not running (start it with `trellis-dev up`)")
				return exitError(3)
			}
			fmt.Printf("cluster: %s (supervisor %d)\napiserver: %s\nkubeconfig: %s\n", st.Phase, st.PID, st.APIServer, st.Kubeconfig)
			if st.Phase != cluster.PhaseReady {
				return nil
			}
			c, err := connect(g)
			if err != nil {
				return err
			}
			return c.PrintStatus(cmd.Context(), os.Stdout)
		},
	}
}

func newKubeconfig(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "kubeconfig",
		Short: "Print the path of the admin kubeconfig",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			st, err := cluster.ReadStatus(g.state)
			if err != nil {
				return err
			}
			if !st.Alive() {
				return errors.New("no cluster is running: start one with `trellis-dev up`")
			}
			fmt.Println(st.Kubeconfig)
			return nil
		},
	}
}
