// Package install is `kubectl trellis install` and `kubectl trellis
// uninstall`.
//
// install renders the embedded manifests (manifests/crds, then
// manifests/base in dependency order), sets the images and the ACL mode,
// checks the user's RBAC and dry-runs every object on the server before it
// changes anything, applies with server-side apply (field manager
// "kubectl-trellis"), prunes objects an older version applied and this one
// no longer ships, and waits for the mesh to be ready. Re-running it
// upgrades in place.
//
// uninstall stops the controller, undoes its own writes
// (controller/app.Uninstall: the CoreDNS block and the shadow Services),
// then deletes the objects Trellis created, found by the label
// app.kubernetes.io/part-of=trellis and by name, never anything else.
//
// Stage: CLI. Imports: internal/cli/clienv, internal/kube, the embedded
// manifests, and the controller's settings, DNS, shadow and uninstall
// helpers; client-go and apimachinery.
package install
