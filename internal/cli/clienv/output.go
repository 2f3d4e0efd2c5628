package clienv

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"
)

// Output formats for -o.
const (
	Table = "table"
	Wide  = "wide"
	JSON  = "json"
	YAML  = "yaml"
)

// OutputFlag registers -o/--output with the formats the command supports
// (the first is the default) and returns where the value lands.
func OutputFlag(cmd *cobra.Command, formats ...string) *string {
	v := new(string)
	cmd.Flags().StringVarP(v, "output", "o", formats[0], "output format: "+strings.Join(formats, "|"))
	cmd.PreRunE = chainPreRun(cmd.PreRunE, func(*cobra.Command, []string) error {
		if !slices.Contains(formats, *v) {
			return Usagef("--output %q: must be one of %s", *v, strings.Join(formats, ", "))
		}
		return nil
	})
	return v
}

func chainPreRun(prev, next func(*cobra.Command, []string) error) func(*cobra.Command, []string) error {
	if prev == nil {
		return next
	}
	return func(c *cobra.Command, a []string) error {
		if err := prev(c, a); err != nil {
			return err
		}
		return next(c, a)
	}
}

// PrintData writes v as JSON (indented) or YAML.
func PrintData(w io.Writer, format string, v any) error {
	switch format {
	case JSON:
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case YAML:
		b, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	return fmt.Errorf("output format %q is not data", format)
}

// TableWriter aligns columns like kubectl get: call Row for the header and
// each row, then Flush.
type TableWriter struct{ tw *tabwriter.Writer }

// NewTable starts a table on w.
func NewTable(w io.Writer) *TableWriter {
	return &TableWriter{tw: tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)}
}

// Row writes one row; empty cells print as "-".
func (t *TableWriter) Row(cells ...string) {
	for i, c := range cells {
		if c == "" {
			cells[i] = "-"
		}
	}
	fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

// Flush writes the table out.
func (t *TableWriter) Flush() error { return t.tw.Flush() }

// Mark is a check result symbol: ✔ or ✘ (or ‼ for a warning), in colour on
// a terminal.
func (e *Env) Mark(ok bool) string {
	switch {
	case ok && e.Color:
		return "\x1b[32m✔\x1b[0m"
	case ok:
		return "✔"
	case e.Color:
		return "\x1b[31m✘\x1b[0m"
	default:
		return "✘"
	}
}

// Warn is the warning symbol.
func (e *Env) Warn() string {
	if e.Color {
		return "\x1b[33m‼\x1b[0m"
	}
	return "‼"
}
