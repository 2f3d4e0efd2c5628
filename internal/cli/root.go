package cli

import (
	"context"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/trellis-mesh/trellis/internal/cli/author"
	"github.com/trellis-mesh/trellis/internal/cli/clienv"
	"github.com/trellis-mesh/trellis/internal/cli/inspect"
	"github.com/trellis-mesh/trellis/internal/cli/install"
	"github.com/trellis-mesh/trellis/internal/cli/traffic"
)

// Commands are every subcommand, built on env.
func Commands(env *clienv.Env) []*cobra.Command {
	var cmds []*cobra.Command
	cmds = append(cmds, install.Commands(env)...)
	cmds = append(cmds, author.Commands(env)...)
	cmds = append(cmds, inspect.Commands(env)...)
	cmds = append(cmds, traffic.Commands(env)...)
	return cmds
}

// NewRoot is the kubectl-trellis command.
func NewRoot(env *clienv.Env) *cobra.Command {
	root := &cobra.Command{
		Use:   "kubectl-trellis",
		Short: "Install, operate and explain the Trellis service mesh",
		Long: `kubectl trellis installs Trellis, opts Services into the mesh, authors
traffic splits and access rules (validated before they reach the cluster),
and explains what the mesh does: status, live proxy config, traffic stats,
and why a request is allowed or denied.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		// Invoked as a kubectl plugin: help and usage say `kubectl trellis`.
		Annotations: map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl trellis"},
	}
	env.AddFlags(root)
	root.AddCommand(Commands(env)...)
	return root
}

// Main runs kubectl-trellis with args and returns the exit code.
func Main(ctx context.Context, streams genericiooptions.IOStreams, args []string) int {
	env := clienv.New(streams)
	root := NewRoot(env)
	root.SetArgs(args)
	root.SetOut(streams.Out)
	root.SetErr(streams.ErrOut)
	err := clienv.Normalize(root.ExecuteContext(ctx))
	clienv.Report(streams.ErrOut, err)
	return clienv.Code(err)
}
