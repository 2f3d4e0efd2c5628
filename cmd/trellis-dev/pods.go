package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/e2e/cluster"
	"github.com/trellis-mesh/trellis/e2e/toolchain"
)

func connect(g *globals) (*cluster.Client, error) { return cluster.Connect(g.state) }

func newPod(g *globals) *cobra.Command {
	pod := &cobra.Command{Use: "pod", Short: "Manage pods on the local cluster"}
	var o cluster.PodOptions
	var labels []string
	var noWait bool
	run := &cobra.Command{
		Use:   "run NAME --node NODE --image IMAGE [-- ARGS...]",
		Short: "Run a pod on a node (its containers run as processes in the pod's own network namespace)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() > 1 || (cmd.ArgsLenAtDash() < 0 && len(args) > 1) {
				return fmt.Errorf("one pod name expected, got %q; put container arguments after --", args)
			}
			o.Name = args[0]
			if cmd.ArgsLenAtDash() == 1 {
				o.Args = args[1:]
			}
			o.Labels = map[string]string{}
			for _, l := range labels {
				k, v, ok := strings.Cut(l, "=")
				if !ok || k == "" {
					return fmt.Errorf("--label %q: want key=value", l)
				}
				o.Labels[k] = v
			}
			if !noWait {
				o.Wait = 60 * time.Second
			}
			c, err := connect(g)
			if err != nil {
				return err
			}
			p, err := c.RunPod(cmd.Context(), o)
			if err != nil {
				return err
			}
			fmt.Printf("pod/%s created on %s (ip %s)\n", p.Name, p.Spec.NodeName, p.Status.PodIP)
			return nil
		},
	}
	run.Flags().StringVar(&o.Node, "node", "node-1", "node to run the pod on")
	run.Flags().StringVar(&o.Image, "image", "whoami", "image (mapped to a local binary)")
	run.Flags().StringVar(&o.ServiceAccount, "sa", "", "ServiceAccount (created when missing)")
	run.Flags().StringVarP(&o.Namespace, "namespace", "n", "default", "namespace (created when missing)")
	run.Flags().StringArrayVar(&labels, "label", nil, "label key=value (repeatable)")
	run.Flags().BoolVar(&noWait, "no-wait", false, "do not wait for the pod to be Ready")
	pod.AddCommand(run)
	return pod
}

func newExec(g *globals) *cobra.Command {
	var ns string
	cmd := &cobra.Command{
		Use:   "exec POD -- CMD [ARGS...]",
		Short: "Run a command inside a pod's network (its IP, routes and DNS), e.g. curl",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() != 1 {
				return errors.New("usage: trellis-dev exec POD -- CMD [ARGS...]")
			}
			c, err := connect(g)
			if err != nil {
				return err
			}
			x, err := c.Command(cmd.Context(), ns, args[0], args[1:]...)
			if err != nil {
				return err
			}
			x.Stdin, x.Stdout, x.Stderr = os.Stdin, os.Stdout, os.Stderr
			if err := x.Run(); err != nil {
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					return exitError(ee.ExitCode())
				}
				return err
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&ns, "namespace", "n", "default", "namespace of the pod")
	return cmd
}

func newLogs(g *globals) *cobra.Command {
	var ns, ctr string
	cmd := &cobra.Command{
		Use:   "logs POD",
		Short: "Print a pod container's output",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect(g)
			if err != nil {
				return err
			}
			path, err := c.LogPath(cmd.Context(), ns, args[0], ctr)
			if err != nil {
				return err
			}
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			defer func() { _ = f.Close() }()
			_, err = io.Copy(os.Stdout, f)
			return err
		},
	}
	cmd.Flags().StringVarP(&ns, "namespace", "n", "default", "namespace of the pod")
	cmd.Flags().StringVarP(&ctr, "container", "c", "", "container (default: the first)")
	return cmd
}

func newShell(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "shell [-- CMD ARGS...]",
		Short: "Run a shell (or CMD) with KUBECONFIG and kubectl set up for the cluster; without root, inside its sandbox",
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := connect(g)
			if err != nil {
				return err
			}
			if len(args) == 0 {
				sh := os.Getenv("SHELL")
				if sh == "" {
					sh = "/bin/sh"
				}
				args = []string{sh}
			}
			x := exec.CommandContext(cmd.Context(), args[0], args[1:]...)
			x.Env = append(os.Environ(), "KUBECONFIG="+c.Status.Kubeconfig,
				"PATH="+filepath.Join(toolchain.CacheDir(), "upstream", "current")+":"+os.Getenv("PATH"))
			x.Stdin, x.Stdout, x.Stderr = os.Stdin, os.Stdout, os.Stderr
			if err := x.Run(); err != nil {
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					return exitError(ee.ExitCode())
				}
				return err
			}
			return nil
		},
	}
}
