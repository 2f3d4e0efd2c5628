package plugin

import (
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// ReadDir reads a plugin's files from a directory laid out like its
// module (the development source of plugins, and tests): every .go file
// under dir, keyed by its slash-separated path relative to dir. Hidden
// directories and testdata are left out; _test.go files are kept (the
// loader ignores them).
func ReadDir(dir string) (map[string]string, error) {
	files := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if rel != "." && (strings.HasPrefix(path.Base(rel), ".") || path.Base(rel) == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(rel, ".go") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files[rel] = string(b)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("plugin source %s: %w", dir, err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("plugin source %s: no .go files", dir)
	}
	return files, nil
}
