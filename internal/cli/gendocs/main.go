// Command gendocs writes the kubectl-trellis reference, one Markdown page
// per command, from the cobra command tree (go run ./internal/cli/gendocs
// docs/cli). A test keeps the committed pages equal to what it writes.
package main

import (
	"fmt"
	"os"

	"github.com/trellis-mesh/trellis/internal/cli/clidocs"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: gendocs DIR")
		os.Exit(2)
	}
	if err := clidocs.Write(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "gendocs:", err)
		os.Exit(1)
	}
}
