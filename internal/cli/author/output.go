package author

import (
	"fmt"
	"io"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/trellis-mesh/trellis/internal/cli/clienv"
	"github.com/trellis-mesh/trellis/smi"
)

// Text is the default output: one line per object, kubectl style, and a
// sentence saying what the change does to traffic.
const Text = "text"

// Change is the -o json|yaml record of join, leave and deny: one object
// and what the command did to it.
type Change struct {
	// Action is created, configured, unchanged or deleted.
	Action     string `json:"action"`
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Namespace  string `json:"namespace,omitempty"`
	Name       string `json:"name"`
	// Field is the annotation, label or list that changed, as a field path.
	Field string `json:"field,omitempty"`
	// From and To are the field's value before and after; absent means
	// unset.
	From *string `json:"from,omitempty"`
	To   *string `json:"to,omitempty"`
	// Detail says what the change means.
	Detail string `json:"detail,omitempty"`
	DryRun bool   `json:"dryRun,omitempty"`
}

func strp(s string) *string { return &s }

// dryNote is appended to lines in a dry run.
func dryNote(dry bool) string {
	if dry {
		return " (dry run)"
	}
	return ""
}

// summaryNote ends the summary sentence of a dry run.
func summaryNote(dry bool) string {
	if dry {
		return " (once applied; this was a dry run, nothing changed)"
	}
	return ""
}

// printOps writes one line per object of the plan.
func printOps(w io.Writer, p *plan, dry bool) {
	for _, o := range p.ops {
		note := ""
		if o.note != "" {
			note = " (" + o.note + ")"
		}
		fmt.Fprintf(w, "%s %s%s%s\n", o.kv.ref(o.obj.GetName()), o.action, note, dryNote(dry && o.action != actUnchanged))
	}
}

// printObjects writes the objects of a plan (not deleted ones) as YAML
// documents or JSON (one object, or a v1 List of several), as kubectl
// does. In a dry run they are the objects that would be sent, without the
// server's bookkeeping, so the output can be applied as is.
func printObjects(w io.Writer, format string, p *plan, dry bool) error {
	var objs []*unstructured.Unstructured
	for _, o := range p.ops {
		if o.action == actDelete {
			continue
		}
		if dry {
			objs = append(objs, forDryRun(o.result))
		} else {
			objs = append(objs, forDisplay(o.result))
		}
	}
	if format == clienv.JSON {
		if len(objs) == 1 {
			return clienv.PrintData(w, format, objs[0].Object)
		}
		items := make([]any, len(objs))
		for i, o := range objs {
			items[i] = o.Object
		}
		return clienv.PrintData(w, format, map[string]any{"apiVersion": "v1", "kind": "List", "items": items})
	}
	for i, o := range objs {
		if i > 0 {
			if _, err := io.WriteString(w, "---\n"); err != nil {
				return err
			}
		}
		if err := clienv.PrintData(w, format, o.Object); err != nil {
			return err
		}
	}
	return nil
}

// warn prints warnings about the objects a command wrote, one per line.
func warn(env *clienv.Env, ps []smi.Problem) {
	for _, p := range ps {
		fmt.Fprintf(env.IO.ErrOut, "%s warning: %s\n", env.Warn(), p)
	}
}

// warnf prints one warning line.
func warnf(env *clienv.Env, format string, args ...any) {
	fmt.Fprintf(env.IO.ErrOut, "%s warning: %s\n", env.Warn(), fmt.Sprintf(format, args...))
}
