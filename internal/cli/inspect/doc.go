// Package inspect holds the kubectl-trellis commands that look at a running
// mesh without changing it: check (health, like linkerd check), status (ls:
// meshed Services and each node's proxy), config (a proxy's live config,
// like istioctl proxy-config) and version.
//
// They read Kubernetes objects (the controller Deployment, its Lease, the
// proxy DaemonSet and pods, the CRDs) and, through the apiserver's
// pods/proxy subresource, the controller's debug API (/debug/state,
// /debug/services, /debug/problems on its stream port) and each proxy's
// admin port (/debug/config). The debug API wants a bearer token that the
// apiserver would strip from Authorization, so it goes in
// X-Trellis-Authorization: the user's own kubeconfig token when it may read
// the debug API, otherwise a 10-minute token requested for the
// ServiceAccount trellis-cli (manifests/base/cli-rbac.yaml).
//
// Pod reads go through the podGetter interface declared here: production
// uses clienv.Env.PodGet; tests serve the real controller and proxy
// handlers on loopback sockets, which the apiserver refuses to proxy to.
//
// Stage: CLI (reads only; never writes to the cluster except the
// SelfSubjectAccessReviews and the TokenRequest). Imports:
// internal/cli/clienv, internal/version, internal/kube (manifest decoding),
// controller/serve (the debug API's header and URL), node-proxy/admin and
// node-proxy/config (the proxy's documents), smi (problems),
// manifests/base and manifests/crds (what an install holds), client-go, the
// apiextensions client, cobra.
package inspect
