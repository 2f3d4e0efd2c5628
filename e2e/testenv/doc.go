// Package testenv gives Go tests a real etcd + kube-apiserver (the pinned
// upstream binaries, TLS and RBAC on), started once per test binary on
// first use. It needs no root and no network namespaces: the apiserver
// binds 127.0.0.1 on a free port.
//
// Use:
//
//	func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }
//	cfg := testenv.ControlPlane(t) // *rest.Config with admin rights
package testenv
