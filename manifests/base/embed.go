package base

import "embed"

// FS holds the manifests.
//
//go:embed *.yaml
var FS embed.FS
