package clidocs

import (
	"os"
	"path/filepath"
	"testing"
)

// TestCommittedDocsAreCurrent: docs/cli is what the command tree renders
// (go run ./internal/cli/gendocs docs/cli rewrites it).
func TestCommittedDocsAreCurrent(t *testing.T) {
	pages, err := Pages()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join("..", "..", "..", "docs", "cli")
	files, _ := filepath.Glob(filepath.Join(dir, "*.md"))
	if len(files) != len(pages) {
		t.Errorf("docs/cli has %d pages, the commands render %d; run go run ./internal/cli/gendocs docs/cli", len(files), len(pages))
	}
	for name, want := range pages {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || string(got) != string(want) {
			t.Errorf("docs/cli/%s is stale; run go run ./internal/cli/gendocs docs/cli", name)
		}
	}
	if _, ok := pages["kubectl_trellis_install.md"]; !ok {
		t.Errorf("no page for install: %v", len(pages))
	}
}
