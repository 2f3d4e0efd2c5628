//go:build tools

// Package tools records the CoreDNS command this module builds.
package tools

import _ "github.com/coredns/coredns"
