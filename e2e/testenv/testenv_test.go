package testenv

import (
	"context"
	"os"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

// TestControlPlaneIsReal: the shared control plane is the pinned upstream
// apiserver with RBAC on, and it stores what it is given.
func TestControlPlaneIsReal(t *testing.T) {
	cs, err := kubernetes.NewForConfig(ControlPlane(t))
	if err != nil {
		t.Fatal(err)
	}
	v, err := cs.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	if v.Major != "1" || v.Minor != "37" {
		t.Fatalf("server version %s.%s, want the pinned 1.37", v.Major, v.Minor)
	}
	ctx := context.Background()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "probe", Namespace: "default"}, Data: map[string]string{"k": "v"}}
	if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	got, err := cs.CoreV1().ConfigMaps("default").Get(ctx, "probe", metav1.GetOptions{})
	if err != nil || got.Data["k"] != "v" {
		t.Fatalf("read back %v, %v", got, err)
	}
	// RBAC is on: the built-in role for authenticated users cannot list secrets.
	if _, err := cs.RbacV1().ClusterRoles().Get(ctx, "system:basic-user", metav1.GetOptions{}); err != nil {
		t.Fatalf("RBAC bootstrap roles missing: %v", err)
	}
}
