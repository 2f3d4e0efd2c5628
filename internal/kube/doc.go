// Package kube holds small helpers over client-go shared by Trellis's
// commands: applying YAML manifests with server-side apply and waiting for
// conditions. It imports client-go and apimachinery only.
package kube
