// Package clitest runs kubectl-trellis commands in tests, against the real
// apiserver from e2e/testenv, and compares their output with golden files
// that -update rewrites.
package clitest
