package inspect

import (
	"time"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/internal/cli/clienv"
)

// Commands are check, status (ls), config and version.
func Commands(env *clienv.Env) []*cobra.Command {
	return commands(env, deps{pods: apiserverProxy{env: env}, now: time.Now})
}

func commands(env *clienv.Env, d deps) []*cobra.Command {
	return []*cobra.Command{checkCmd(env, d), statusCmd(env, d), configCmd(env, d), versionCmd(env, d)}
}
