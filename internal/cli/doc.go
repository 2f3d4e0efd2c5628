// Package cli assembles kubectl-trellis: the root command, with the kubectl
// connection flags, and the command groups from install (install,
// uninstall), author (join, leave, split, allow, deny), inspect (check,
// status, config, version) and traffic (stat, top, why).
package cli
