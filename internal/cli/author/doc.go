// Package author holds the kubectl-trellis commands that change what the
// mesh does: join and leave (the opt-in annotation on a Service, or the
// label on a namespace), split (an SMI TrafficSplit, plus an HTTPRouteGroup
// for --match), and allow and deny (SMI TrafficTargets and the route
// objects they reference). docs/cli-authoring.md is the user's guide.
//
// Every command validates its flags, and the objects it built with the smi
// package's own decoder, before anything reaches the apiserver; it writes
// SMI objects in the newest version the cluster serves; and before it
// writes SMI objects it asks the apiserver whether every write would succeed
// (SelfSubjectAccessReview, then a server-side dry run of each), so a bad
// flag or a missing permission leaves the cluster as it was. Objects it
// creates carry the label app.kubernetes.io/managed-by=kubectl-trellis and
// deterministic names (names.go), which is how re-runs update them in place
// and deny finds them.
//
// Stage: CLI, on top of smi (decode, convert, policy, match) and
// smi/annotations. It may import client-go, apimachinery, sigs.k8s.io/yaml, cobra,
// internal/cli/clienv and the smi packages; it must not import the
// controller or the node proxy.
package author
