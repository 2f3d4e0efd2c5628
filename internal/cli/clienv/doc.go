// Package clienv is what every kubectl-trellis command shares: the
// kubectl connection flags (k8s.io/cli-runtime, so --kubeconfig, --context,
// -n behave as in kubectl), the output streams, the -o flag and its
// printers, check marks that are coloured only on a terminal, and exit
// codes that scripts can rely on.
//
// It may import client-go and cli-runtime; it must not import the
// controller or the proxy.
package clienv
