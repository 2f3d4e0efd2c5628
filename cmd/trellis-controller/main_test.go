package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFlagErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "settings.yaml")
	if err := os.WriteFile(bad, []byte("meshDomian: x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--identity", ""}, 2, "--identity: required for leader election"},
		{[]string{"--identity", "x", "--tls-cert", "c"}, 2, "--tls-cert and --tls-key go together"},
		{[]string{"--identity", "x", "--settings", bad}, 2, `unknown field "meshDomian"`},
		{[]string{"--identity", "x", "--log-level", "loud"}, 2, "--log-level"},
		{[]string{"--identity", "x", "extra"}, 2, `unexpected argument "extra"`},
		{[]string{"--identity", "x", "--kube-api-qps", "0"}, 2, "must be positive"},
		{[]string{"--identity", "x", "--kubeconfig", filepath.Join(dir, "missing")}, 1, "kubernetes client config"},
	}
	for _, tc := range cases {
		var stderr bytes.Buffer
		code := run(context.Background(), tc.args, &stderr)
		if code != tc.code || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tc.args, code, stderr.String(), tc.code, tc.want)
		}
	}
}
