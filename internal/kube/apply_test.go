package kube

import (
	"strings"
	"testing"
)

func TestDecode(t *testing.T) {
	objs, err := Decode([]byte("# comment only\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\n\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: b\n  namespace: x\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 2 || Name(objs[0]) != "a" || Name(objs[1]) != "x/b" {
		t.Fatalf("decoded %d objects: %v", len(objs), objs)
	}
	for doc, want := range map[string]string{
		"metadata:\n  name: a\n":            "document 1: apiVersion and kind are required",
		"apiVersion: v1\nkind: [unclosed\n": "document 1:",
	} {
		if _, err := Decode([]byte(doc)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Decode(%q) error %v, want %q", doc, err, want)
		}
	}
}
