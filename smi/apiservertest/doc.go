// Package apiservertest holds the tests of package smi that need a real
// etcd + kube-apiserver (e2e/testenv): the shipped CRDs install, their CEL
// rules accept and reject the examples, discovery picks the newest served
// version (also on a cluster with only old SMI CRDs), and the conversion
// webhook converts between every version through the apiserver.
//
// Stage: tests only. Imports smi, smi/conversion, manifests/crds, e2e/testenv.
package apiservertest
