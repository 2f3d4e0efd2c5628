package author

import (
	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/internal/cli/clienv"
)

// Commands are join, leave, split, allow and deny.
func Commands(env *clienv.Env) []*cobra.Command {
	return []*cobra.Command{
		newMembershipCommand(env, true),
		newMembershipCommand(env, false),
		newSplitCommand(env),
		newAllowCommand(env),
		newDenyCommand(env),
	}
}
