// Package annotations defines Trellis's own Service annotations and
// namespace label (prefix trellis.io/), parses them into typed settings, and
// reads Traefik Mesh's annotations (mesh.traefik.io/* and the older
// maesh.containo.us/*) as aliases, so Traefik Mesh users can move over
// without editing their Services. docs/annotations.md is the user's guide.
//
// Stage: model, beside package smi; pure functions over annotation maps.
//
// Imports: the standard library, smi (for Problem and Ref) and
// k8s.io/api/core/v1.
package annotations
