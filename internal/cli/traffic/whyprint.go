package traffic

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"github.com/trellis-mesh/trellis/internal/cli/clienv"
)

// printWhy renders an explanation for people.
func printWhy(env *clienv.Env, ex *explanation) error {
	w := env.IO.Out
	from := fmt.Sprintf("pod %s/%s (ServiceAccount %s/%s", ex.From.Namespace, ex.From.Pod, ex.From.Namespace, ex.From.ServiceAccount)
	if ex.From.Node != "" {
		from += ", node " + ex.From.Node
	}
	if ex.From.IP != "" {
		from += ", IP " + ex.From.IP
	}
	from += ")"
	to := fmt.Sprintf("Service %s/%s port %d", ex.To.Namespace, ex.To.Service, ex.To.Port)
	if ex.To.PortName != "" {
		to += fmt.Sprintf(" (%q)", ex.To.PortName)
	}
	if ex.To.Protocol != "" {
		to += fmt.Sprintf(", %s to pod port %d; mesh name %s", strings.ToUpper(ex.To.Protocol), ex.To.TargetPort, ex.To.MeshName)
	}
	field(w, "From", from)
	field(w, "To", to)
	if r := ex.Request; r != nil {
		req := r.Method + " " + r.Path
		names := make([]string, 0, len(r.Header))
		for k := range r.Header {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			for _, v := range r.Header[k] {
				req += fmt.Sprintf(", %s: %s", k, v)
			}
		}
		field(w, "Request", req)
	}
	fmt.Fprintln(w)

	mark := func(ok bool) string { return env.Mark(ok) }
	if ex.Meshed {
		check(w, mark(true), "meshed", ex.MeshedBy)
	} else {
		check(w, mark(false), "meshed", "not in the mesh: "+ex.MeshedBy)
		more(w, "the node proxies do not handle this traffic: clients reach the Service directly, with no access control and no split")
		if ex.JoinFix != "" {
			more(w, "to mesh it: "+ex.JoinFix)
		}
	}
	if ex.Proxy.Problem == "" {
		check(w, mark(true), "proxy", fmt.Sprintf("%s serves node %s", ex.Proxy.Pod, ex.From.Node))
	} else {
		check(w, mark(false), "proxy", ex.Proxy.Problem)
	}
	if a := ex.Access; a != nil {
		check(w, mark(a.Allowed), "access", a.Reason.Message)
		state := "on"
		if !a.ACL {
			state = "off"
		}
		more(w, fmt.Sprintf("access control is %s (%s)", state, a.ACLFrom))
		if len(ex.To.Identities) == 1 {
			more(w, "destination ServiceAccount "+ex.To.Identities[0]+", source ServiceAccount "+ex.From.Namespace+"/"+ex.From.ServiceAccount)
		}
		if a.WithACL != nil {
			more(w, "with acl: true it would be "+a.WithACL.Message)
		}
		if a.Fix != "" {
			more(w, "to allow it: "+a.Fix)
		}
	}
	if s := ex.Split; s != nil {
		check(w, "→", "split", s.Reason)
		if len(s.Backends) > 0 {
			t := clienv.NewTable(&indent{w: w, prefix: strings.Repeat(" ", 13)})
			t.Row("BACKEND", "WEIGHT", "SHARE")
			for _, b := range s.Backends {
				t.Row(b.Service, strconv.Itoa(int(b.Weight)), strconv.FormatFloat(b.Percent, 'f', -1, 64)+"%")
			}
			if err := t.Flush(); err != nil {
				return err
			}
		}
	}
	if len(ex.Problems) > 0 {
		fmt.Fprintln(w, "\nProblems:")
		for _, p := range ex.Problems {
			fmt.Fprintf(w, "  %s %s: %s\n", env.Warn(), p.Severity, p.String())
		}
	}
	if len(ex.Notes) > 0 {
		fmt.Fprintln(w, "\nNotes:")
		for _, n := range ex.Notes {
			fmt.Fprintf(w, "  %s %s\n", env.Warn(), n)
		}
	}
	return nil
}

func field(w io.Writer, name, v string) { fmt.Fprintf(w, "%-9s%s\n", name, v) }

func check(w io.Writer, mark, name, v string) { fmt.Fprintf(w, "%s %-9s%s\n", mark, name, v) }

func more(w io.Writer, v string) { fmt.Fprintf(w, "%s%s\n", strings.Repeat(" ", 11), v) }

// indent prefixes every line written through it.
type indent struct {
	w      io.Writer
	prefix string
	mid    bool
}

func (in *indent) Write(p []byte) (int, error) {
	for _, line := range strings.SplitAfter(string(p), "\n") {
		if line == "" {
			continue
		}
		if !in.mid {
			if _, err := io.WriteString(in.w, in.prefix); err != nil {
				return 0, err
			}
		}
		if _, err := io.WriteString(in.w, line); err != nil {
			return 0, err
		}
		in.mid = !strings.HasSuffix(line, "\n")
	}
	return len(p), nil
}
