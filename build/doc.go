// Package build holds the container images' Dockerfiles, one folder per
// image (trellis-controller, trellis-proxy, kubectl-trellis). There is no Go
// code here; the test checks each Dockerfile's structure: multi-stage, a
// static build (CGO_ENABLED=0) of a ./cmd that exists, the version stamped
// into internal/version, and a distroless or scratch final stage running
// as the non-root user the manifests expect.
//
// Stage: build tooling. Imports: its test reads manifests/base.
package build
