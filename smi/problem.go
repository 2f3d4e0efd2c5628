package smi

import (
	"fmt"
	"sort"
)

// Severity says what a problem does to its object.
type Severity string

const (
	// Error: the object is disabled (as if it did not exist) until fixed.
	Error Severity = "error"
	// Warning: the object is applied; something in it was ignored,
	// converted or is probably not what the author meant.
	Warning Severity = "warning"
)

// Problem is one finding about one object. It never affects other objects.
type Problem struct {
	Severity Severity `json:"severity"`
	Object   Ref      `json:"object"`
	// Field is the field path inside the object as written, e.g.
	// `spec.backends[1].service`; empty for the object as a whole.
	Field string `json:"field,omitempty"`
	// Message says what is wrong, e.g. `"web-v3" not found`.
	Message string `json:"message"`
	// Fix says what to do about it.
	Fix string `json:"fix,omitempty"`
}

// String renders the problem on one line:
// `TrafficSplit shop/web: spec.backends[1].service "web-v3" not found (fix: ...)`.
func (p Problem) String() string {
	s := p.Object.String() + ": "
	if p.Field != "" {
		s += p.Field + " "
	}
	s += p.Message
	if p.Fix != "" {
		s += " (fix: " + p.Fix + ")"
	}
	return s
}

// Error makes a Problem usable as an error.
func (p Problem) Error() string { return p.String() }

// HasErrors reports whether any problem is an Error.
func HasErrors(ps []Problem) bool {
	for _, p := range ps {
		if p.Severity == Error {
			return true
		}
	}
	return false
}

// SortProblems orders problems by object, field, then message, so output
// is deterministic.
func SortProblems(ps []Problem) {
	sort.SliceStable(ps, func(i, j int) bool {
		a, b := ps[i], ps[j]
		if a.Object != b.Object {
			return a.Object.Less(b.Object)
		}
		if a.Field != b.Field {
			return a.Field < b.Field
		}
		return a.Message < b.Message
	})
}

type problems struct {
	ref Ref
	out []Problem
}

func (ps *problems) errorf(field, fix, format string, args ...any) {
	ps.out = append(ps.out, Problem{Severity: Error, Object: ps.ref, Field: field, Message: fmt.Sprintf(format, args...), Fix: fix})
}

func (ps *problems) warnf(field, fix, format string, args ...any) {
	ps.out = append(ps.out, Problem{Severity: Warning, Object: ps.ref, Field: field, Message: fmt.Sprintf(format, args...), Fix: fix})
}
