package smi

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/golden")

// queries is a test-only document in golden inputs: the decisions to record.
type queries struct {
	Allowed []struct {
		Source      string  `json:"source"`
		Destination string  `json:"destination"`
		Request     Request `json:"request"`
	} `json:"allowed"`
	Split []struct {
		Service string  `json:"service"`
		Request Request `json:"request"`
	} `json:"split"`
}

type goldenOut struct {
	Objects        []any         `json:"objects"`
	DecodeProblems []string      `json:"decodeProblems"`
	PolicyProblems []string      `json:"policyProblems"`
	Grants         []*Grant      `json:"grants,omitempty"`
	SplitPlans     []*SplitPlan  `json:"splitPlans,omitempty"`
	Allowed        []goldenAllow `json:"allowed,omitempty"`
	Split          []goldenSplit `json:"split,omitempty"`
}

type goldenAllow struct {
	Query   string `json:"query"`
	Allowed bool   `json:"allowed"`
	Reason  Reason `json:"reason"`
}

type goldenSplit struct {
	Query    string        `json:"query"`
	Decision SplitDecision `json:"decision"`
}

func identity(s string) Identity {
	ns, name, _ := strings.Cut(s, "/")
	return Identity{Namespace: ns, Name: name}
}

func problemLines(ps []Problem) []string {
	out := []string{}
	for _, p := range ps {
		out = append(out, string(p.Severity)+": "+p.String())
	}
	return out
}

// TestGolden decodes every testdata/golden/*.yaml (SMI objects of every
// kind and version, Services, and a Queries document), builds the Policy,
// asks it the queries, and compares everything with the .golden file.
func TestGolden(t *testing.T) {
	inputs, err := filepath.Glob("testdata/golden/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	inputs = filterGolden(inputs)
	if len(inputs) == 0 {
		t.Fatal("no golden inputs")
	}
	for _, in := range inputs {
		t.Run(strings.TrimSuffix(filepath.Base(in), ".yaml"), func(t *testing.T) {
			data, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			objs, svcs, others, ps, err := DecodeYAML(bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			var q queries
			for _, o := range others {
				if o.GetKind() != "Queries" {
					t.Fatalf("unexpected document kind %q", o.GetKind())
				}
				if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &q); err != nil {
					t.Fatalf("Queries: %v", err)
				}
			}
			pol := NewPolicy(objs, svcs)
			out := goldenOut{DecodeProblems: problemLines(ps), PolicyProblems: problemLines(pol.Problems())}
			for _, o := range objs {
				out.Objects = append(out.Objects, map[string]any{string(o.GetMeta().Kind): o})
			}
			for _, d := range pol.Destinations() {
				out.Grants = append(out.Grants, pol.Grants(d)...)
			}
			out.SplitPlans = pol.SplitPlans()
			for _, a := range q.Allowed {
				ok, why := pol.Allowed(identity(a.Source), identity(a.Destination), a.Request)
				if ok != why.Allowed {
					t.Errorf("Allowed returned %v but Reason.Allowed is %v", ok, why.Allowed)
				}
				out.Allowed = append(out.Allowed, goldenAllow{Query: fmt.Sprintf("%s -> %s: %s%s", a.Source, a.Destination, a.Request, headerText(a.Request)), Allowed: ok, Reason: why})
			}
			for _, s := range q.Split {
				ns, name, _ := strings.Cut(s.Service, "/")
				out.Split = append(out.Split, goldenSplit{Query: fmt.Sprintf("%s: %s%s", s.Service, s.Request, headerText(s.Request)), Decision: pol.Split(ns, name, s.Request)})
			}
			got, err := yaml.Marshal(out)
			if err != nil {
				t.Fatal(err)
			}
			golden := strings.TrimSuffix(in, ".yaml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./smi -run TestGolden -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from the output; run go test ./smi -run TestGolden -update and review the diff.\n%s", golden, diffLines(string(want), string(got)))
			}
		})
	}
}

func filterGolden(in []string) []string {
	var out []string
	for _, f := range in {
		if !strings.HasSuffix(f, ".golden.yaml") {
			out = append(out, f)
		}
	}
	return out
}

func headerText(r Request) string {
	if len(r.Header) == 0 {
		return ""
	}
	var parts []string
	for k, v := range r.Header {
		parts = append(parts, k+": "+strings.Join(v, ","))
	}
	return " [" + strings.Join(sortedCopy(parts), "; ") + "]"
}

func sortedCopy(ss []string) []string {
	out := append([]string(nil), ss...)
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j] < out[j-1]; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// diffLines shows the first differing lines, enough to see what changed.
func diffLines(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	shown := 0
	for i := 0; i < len(w) || i < len(g); i++ {
		var a, c string
		if i < len(w) {
			a = w[i]
		}
		if i < len(g) {
			c = g[i]
		}
		if a != c {
			fmt.Fprintf(&b, "line %d:\n  want: %s\n  got:  %s\n", i+1, a, c)
			if shown++; shown == 10 {
				break
			}
		}
	}
	return b.String()
}
