// Package clidocs renders the kubectl-trellis reference from the command
// tree, so the documentation cannot drift from the flags.
package clidocs

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/trellis-mesh/trellis/internal/cli"
	"github.com/trellis-mesh/trellis/internal/cli/clienv"
)

// Pages returns file name → Markdown for every command.
func Pages() (map[string][]byte, error) {
	env := clienv.New(genericiooptions.NewTestIOStreamsDiscard())
	root := cli.NewRoot(env)
	root.DisableAutoGenTag = true
	out := map[string][]byte{}
	var walk func(c *cobra.Command) error
	walk = func(c *cobra.Command) error {
		if !c.IsAvailableCommand() && c != root {
			return nil
		}
		c.DisableAutoGenTag = true
		var b bytes.Buffer
		if err := doc.GenMarkdownCustom(c, &b, link); err != nil {
			return fmt.Errorf("%s: %w", c.CommandPath(), err)
		}
		out[fileName(c)] = b.Bytes()
		for _, sub := range c.Commands() {
			if err := walk(sub); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(root); err != nil {
		return nil, err
	}
	var idx strings.Builder
	idx.WriteString("# kubectl trellis reference\n\nGenerated from the command tree by `go run ./internal/cli/gendocs docs/cli`; do not edit.\n\n")
	names := make([]string, 0, len(out))
	for n := range out {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(&idx, "* [%s](%s)\n", strings.ReplaceAll(strings.TrimSuffix(n, ".md"), "_", " "), n)
	}
	out["README.md"] = []byte(idx.String())
	return out, nil
}

func fileName(c *cobra.Command) string {
	return strings.ReplaceAll(c.CommandPath(), " ", "_") + ".md"
}

func link(name string) string { return strings.ReplaceAll(name, " ", "_") }

// Write replaces the pages in dir.
func Write(dir string) error {
	pages, err := Pages()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	old, _ := filepath.Glob(filepath.Join(dir, "*.md"))
	for _, f := range old {
		if err := os.Remove(f); err != nil {
			return err
		}
	}
	for name, b := range pages {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}
