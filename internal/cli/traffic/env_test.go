package traffic

import (
	"context"
	_ "embed"
	"encoding/pem"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/trellis-mesh/trellis/e2e/testenv"
	"github.com/trellis-mesh/trellis/internal/cli/clitest"
	"github.com/trellis-mesh/trellis/internal/kube"
	"github.com/trellis-mesh/trellis/manifests/crds"
	"github.com/trellis-mesh/trellis/smi/conversion"
)

func TestMain(m *testing.M) {
	code := testenv.Main(m)
	if kubeconfig != "" {
		_ = os.RemoveAll(filepath.Dir(kubeconfig))
	}
	os.Exit(code)
}

//go:embed testdata/cluster.yaml
var clusterYAML []byte

// podStatus is what a kubelet would report for the fixture pods.
var podStatus = map[string]struct {
	phase corev1.PodPhase
	ip    string
}{
	"stat-mesh/trellis-proxy-a": {corev1.PodRunning, "192.168.0.1"},
	"stat-mesh/trellis-proxy-b": {corev1.PodRunning, "192.168.0.2"},
	"stat-mesh/trellis-proxy-d": {corev1.PodRunning, "192.168.0.4"},
	"mesh-acl/trellis-proxy-a":  {corev1.PodRunning, "192.168.0.1"},
	"mesh-open/trellis-proxy-a": {corev1.PodRunning, "192.168.0.1"},
	"books/frontend-0":          {corev1.PodRunning, "10.0.0.10"},
	"books/web-v1-0":            {corev1.PodRunning, "10.0.1.1"},
	"books/web-v2-0":            {corev1.PodRunning, "10.0.1.2"},
	"books/reviews-0":           {corev1.PodRunning, "10.0.2.1"},
	"books/batch-0":             {corev1.PodRunning, "192.168.0.1"}, // host network: the node's address
	"books/db-0":                {corev1.PodRunning, "10.0.3.1"},
}

var (
	setupOnce  sync.Once
	setupErr   error
	kubeconfig string
	restConfig *rest.Config
)

// cluster starts (once) the real apiserver, installs the shipped SMI CRDs
// with the conversion webhook running in this process, creates the
// fixtures and returns a kubeconfig whose namespace is default.
func testCluster(t *testing.T) string {
	t.Helper()
	cfg := testenv.ControlPlane(t)
	setupOnce.Do(func() {
		restConfig = cfg
		setupErr = setup(cfg)
	})
	if setupErr != nil {
		t.Fatal(setupErr)
	}
	if kubeconfig == "" {
		// t.TempDir would vanish with the first test; keep one for the binary.
		dir, err := os.MkdirTemp("", "traffic-test-")
		if err != nil {
			t.Fatal(err)
		}
		kubeconfig = clitest.Kubeconfig(&dirTB{TB: t, dir: dir}, cfg, "default")
	}
	return kubeconfig
}

// dirTB hands clitest.Kubeconfig a temp dir that outlives the test.
type dirTB struct {
	testing.TB
	dir string
}

func (d *dirTB) TempDir() string { return d.dir }

func setup(cfg *rest.Config) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	shipped, err := crds.Load()
	if err != nil {
		return err
	}
	// The apiserver calls the conversion webhook for objects written in an
	// older version (the v1alpha2 TrafficTarget in the fixtures).
	hook := httptest.NewTLSServer(conversion.Handler{})
	url := hook.URL + crds.ConversionPath
	crds.SetConversion(shipped, apiextensionsv1.WebhookClientConfig{
		URL: &url, CABundle: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: hook.Certificate().Raw}),
	})
	ext, err := apiextensionsclient.NewForConfig(cfg)
	if err != nil {
		return err
	}
	for _, c := range shipped {
		if _, err := ext.ApiextensionsV1().CustomResourceDefinitions().Create(ctx, c, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	for _, c := range shipped {
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			got, err := ext.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, c.Name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			for _, cond := range got.Status.Conditions {
				if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			return errors.New("CRD " + c.Name + " not established: " + err.Error())
		}
	}
	objs, err := kube.Decode(clusterYAML)
	if err != nil {
		return err
	}
	ap, err := kube.NewApplier(cfg, "traffic-test")
	if err != nil {
		return err
	}
	// A new CRD can take a moment to reach discovery: retry until applied.
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		return ap.Apply(ctx, objs) == nil, nil
	})
	if err != nil {
		return ap.Apply(ctx, objs)
	}
	kc, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	for key, st := range podStatus {
		ns, name := splitKey(key)
		p, err := kc.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		p.Status.Phase = st.phase
		p.Status.PodIP = st.ip
		p.Status.PodIPs = []corev1.PodIP{{IP: st.ip}}
		if _, err := kc.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
			return err
		}
	}
	return nil
}

func splitKey(k string) (string, string) {
	for i := range k {
		if k[i] == '/' {
			return k[:i], k[i+1:]
		}
	}
	return "", k
}
