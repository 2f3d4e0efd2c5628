package clienv

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/cli-runtime/pkg/genericiooptions"
)

func TestExitCodes(t *testing.T) {
	gr := schema.GroupResource{Resource: "services"}
	cases := []struct {
		name string
		err  error
		code int
		hint string
	}{
		{"nil", nil, ExitOK, ""},
		{"plain", errors.New("boom"), ExitFailure, ""},
		{"usage", Usagef("--to %q: bad", "x"), ExitUsage, ""},
		{"cobra unknown flag", errors.New("unknown flag: --frob"), ExitUsage, "see --help"},
		{"cobra args", errors.New("accepts 1 arg(s), received 2"), ExitUsage, "see --help"},
		{"forbidden", APIError("create TrafficSplit shop/web", apierrors.NewForbidden(gr, "web", errors.New("no"))), ExitForbidden, "RBAC"},
		{"not found", APIError("get Service shop/web", apierrors.NewNotFound(gr, "web")), ExitNotFound, ""},
		{"unreachable", APIError("list pods", &net.OpError{Op: "dial", Err: errors.New("connection refused")}), ExitConfig, "cluster is up"},
		{"wrapped", fmt.Errorf("join: %w", Fail(ExitCheck, errors.New("x"), "")), ExitCheck, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := Normalize(tc.err)
			if got := Code(err); got != tc.code {
				t.Fatalf("code %d, want %d (%v)", got, tc.code, err)
			}
			if tc.hint != "" && !strings.Contains(err.Error(), tc.hint) {
				t.Fatalf("%q has no hint %q", err, tc.hint)
			}
		})
	}
	var b bytes.Buffer
	Report(&b, Usagef("bad"))
	if b.String() != "kubectl-trellis: bad\n" {
		t.Fatalf("report %q", b.String())
	}
}

func TestOutputFlagAndPrinters(t *testing.T) {
	env := New(genericiooptions.IOStreams{Out: &bytes.Buffer{}, ErrOut: &bytes.Buffer{}})
	if env.Color {
		t.Fatal("colour on a buffer")
	}
	if env.Mark(true) != "✔" || env.Mark(false) != "✘" || env.Warn() != "‼" {
		t.Fatal("marks without colour")
	}
	cmd := &cobra.Command{Use: "x", RunE: func(*cobra.Command, []string) error { return nil }}
	out := OutputFlag(cmd, Table, JSON, YAML)
	cmd.SetArgs([]string{"-o", "xml"})
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	if err := cmd.Execute(); Code(err) != ExitUsage || !strings.Contains(err.Error(), "must be one of table, json, yaml") {
		t.Fatalf("-o xml: %v", err)
	}
	cmd.SetArgs([]string{"-o", "yaml"})
	if err := cmd.Execute(); err != nil || *out != YAML {
		t.Fatalf("-o yaml: %v %q", err, *out)
	}
	var b bytes.Buffer
	if err := PrintData(&b, YAML, map[string]int{"a": 1}); err != nil || b.String() != "a: 1\n" {
		t.Fatalf("yaml %q %v", b.String(), err)
	}
	b.Reset()
	tw := NewTable(&b)
	tw.Row("NAME", "PORTS")
	tw.Row("web", "")
	_ = tw.Flush()
	if b.String() != "NAME   PORTS\nweb    -\n" {
		t.Fatalf("table %q", b.String())
	}
}
