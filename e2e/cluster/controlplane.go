package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/trellis-mesh/trellis/e2e/toolchain"
)

// ControlPlaneOptions places an etcd + kube-apiserver pair.
type ControlPlaneOptions struct {
	Dir       string // state folder (pki, etcd data, logs, kubeconfigs)
	Bins      toolchain.Bins
	BindIP    string // the apiserver binds and advertises it
	Port      int    // apiserver secure port; 0 picks a free one
	EtcdPort  int    // etcd client port on 127.0.0.1; 0 picks a free one (peer port is the next free one)
	ExtraSANs []string
}

// ControlPlane is a running etcd + kube-apiserver.
type ControlPlane struct {
	opts       ControlPlaneOptions
	pki        *pki
	mu         sync.Mutex // guards api, which RestartAPIServer replaces
	etcd, api  *proc
	apiSpec    procSpec
	Kubeconfig string // admin kubeconfig (system:masters)
	URL        string
}

// StartControlPlane starts etcd and kube-apiserver with TLS, RBAC and
// service-account keys, and waits until /readyz answers.
func StartControlPlane(ctx context.Context, o ControlPlaneOptions) (*ControlPlane, error) {
	var err error
	if o.Port == 0 {
		if o.Port, err = freePort(o.BindIP); err != nil {
			return nil, err
		}
	} else if err := portFree(o.BindIP, o.Port); err != nil {
		return nil, err
	}
	peer := 0
	if o.EtcdPort == 0 {
		if o.EtcdPort, err = freePort("127.0.0.1"); err != nil {
			return nil, err
		}
		if peer, err = freePort("127.0.0.1"); err != nil {
			return nil, err
		}
	} else {
		peer = o.EtcdPort + 1
		for _, p := range []int{o.EtcdPort, peer} {
			if err := portFree("127.0.0.1", p); err != nil {
				return nil, err
			}
		}
	}
	cp := &ControlPlane{opts: o, URL: "https://" + net.JoinHostPort(o.BindIP, strconv.Itoa(o.Port))}
	ips := []net.IP{net.ParseIP(o.BindIP), net.ParseIP(kubeAPIVIP), net.ParseIP("127.0.0.1")}
	for _, s := range o.ExtraSANs {
		if ip := net.ParseIP(s); ip != nil {
			ips = append(ips, ip)
		}
	}
	dns := []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc." + clusterZone}
	if cp.pki, err = newPKI(filepath.Join(o.Dir, "pki"), ips, dns); err != nil {
		return nil, fmt.Errorf("creating certificates: %w", err)
	}
	if cp.Kubeconfig, err = cp.WriteKubeconfig("admin", "kubernetes-admin", []string{"system:masters"}); err != nil {
		return nil, err
	}
	logs, pids := filepath.Join(o.Dir, "logs"), filepath.Join(o.Dir, "pids")
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(o.EtcdPort)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(peer)
	cp.etcd, err = startProc(procSpec{
		Name: "etcd", Log: filepath.Join(logs, "etcd.log"), Pids: pids,
		Argv: []string{o.Bins.Path("etcd"),
			"--data-dir", filepath.Join(o.Dir, "etcd"),
			"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
			"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
			"--initial-cluster", "default=" + peerURL,
			"--unsafe-no-fsync", "--log-level", "warn"},
	})
	if err != nil {
		return nil, err
	}
	cp.apiSpec = procSpec{
		Name: "kube-apiserver", Log: filepath.Join(logs, "kube-apiserver.log"), Pids: pids,
		Argv: []string{o.Bins.Path("kube-apiserver"),
			"--etcd-servers=" + etcdURL,
			"--bind-address=" + o.BindIP, "--advertise-address=" + o.BindIP,
			"--secure-port=" + strconv.Itoa(o.Port),
			"--cert-dir=" + filepath.Join(o.Dir, "pki"),
			"--tls-cert-file=" + cp.pki.Cert("apiserver"), "--tls-private-key-file=" + cp.pki.Key("apiserver"),
			"--client-ca-file=" + cp.pki.CA(),
			"--service-account-issuer=https://kubernetes.default.svc." + clusterZone,
			"--service-account-key-file=" + cp.pki.SAPub(),
			"--service-account-signing-key-file=" + cp.pki.SAKey(),
			"--authorization-mode=RBAC",
			"--service-cluster-ip-range=" + serviceCIDR,
			"--allow-privileged=true",
			"--profiling=false",
			"--endpoint-reconciler-type=" + reconciler(o.BindIP),
			"--v=1"},
	}
	cp.api, err = startProc(cp.apiSpec)
	if err != nil {
		cp.Stop()
		return nil, err
	}
	if err := cp.waitReady(ctx, 90*time.Second); err != nil {
		cp.Stop()
		return nil, err
	}
	return cp, nil
}

// reconciler keeps the kubernetes Service's endpoints pointing at the
// apiserver, except on loopback, which EndpointSlices may not contain.
func reconciler(ip string) string {
	if parsed := net.ParseIP(ip); parsed != nil && parsed.IsLoopback() {
		return "none"
	}
	return "lease"
}

// RestConfig loads the admin kubeconfig.
func (cp *ControlPlane) RestConfig() (*rest.Config, error) {
	return clientcmd.BuildConfigFromFlags("", cp.Kubeconfig)
}

// WriteKubeconfig issues a client certificate for user in groups and writes a
// kubeconfig for it, returning its path.
func (cp *ControlPlane) WriteKubeconfig(name, user string, groups []string) (string, error) {
	if err := cp.pki.issue(name, user, groups, nil, nil, false); err != nil {
		return "", err
	}
	path := filepath.Join(cp.opts.Dir, name+".kubeconfig")
	return path, writeKubeconfig(path, cp.URL, cp.pki.CA(), clientcmdapi.AuthInfo{
		ClientCertificate: cp.pki.Cert(name), ClientKey: cp.pki.Key(name),
	})
}

func writeKubeconfig(path, server, ca string, auth clientcmdapi.AuthInfo) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["trellis-dev"] = &clientcmdapi.Cluster{Server: server, CertificateAuthority: ca}
	cfg.AuthInfos["user"] = &auth
	cfg.Contexts["trellis-dev"] = &clientcmdapi.Context{Cluster: "trellis-dev", AuthInfo: "user"}
	cfg.CurrentContext = "trellis-dev"
	return clientcmd.WriteToFile(*cfg, path)
}

// APIServerExited reports whether the apiserver process has ended.
func (cp *ControlPlane) APIServerExited() bool {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	done, _ := cp.api.Exited()
	return done
}

// RestartAPIServer starts the apiserver again after it exited, as a
// kubelet restarts a static pod, and returns once it is ready.
func (cp *ControlPlane) RestartAPIServer(ctx context.Context) error {
	np, err := startProc(cp.apiSpec)
	if err != nil {
		return err
	}
	cp.mu.Lock()
	cp.api = np
	cp.mu.Unlock()
	return cp.waitReady(ctx, 90*time.Second)
}

// Stop stops the apiserver, then etcd.
func (cp *ControlPlane) Stop() {
	cp.mu.Lock()
	api := cp.api
	cp.mu.Unlock()
	if api != nil {
		api.Stop(10 * time.Second)
	}
	if cp.etcd != nil {
		cp.etcd.Stop(10 * time.Second)
	}
}

// Alive returns an error naming the first control-plane process that exited.
func (cp *ControlPlane) Alive() error {
	cp.mu.Lock()
	api := cp.api
	cp.mu.Unlock()
	for _, p := range []*proc{cp.etcd, api} {
		if done, err := p.Exited(); done {
			return fmt.Errorf("%s exited (%w); see %s", p.name, err, filepath.Join(cp.opts.Dir, "logs", p.name+".log"))
		}
	}
	return nil
}

func (cp *ControlPlane) waitReady(ctx context.Context, timeout time.Duration) error {
	pool := x509.NewCertPool()
	b, err := os.ReadFile(cp.pki.CA())
	if err != nil {
		return err
	}
	pool.AppendCertsFromPEM(b)
	cert, err := tls.LoadX509KeyPair(cp.pki.Cert("admin"), cp.pki.Key("admin"))
	if err != nil {
		return err
	}
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
	}}
	deadline := time.Now().Add(timeout)
	for {
		if err := cp.Alive(); err != nil {
			return fmt.Errorf("control plane did not start: %w\n%s", err, tailLogs(cp.opts.Dir, "etcd", "kube-apiserver"))
		}
		resp, err := client.Get(cp.URL + "/readyz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kube-apiserver not ready after %s; see %s", timeout, filepath.Join(cp.opts.Dir, "logs", "kube-apiserver.log"))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// tailLogs returns the last lines of the named components' logs.
func tailLogs(dir string, names ...string) string {
	var sb strings.Builder
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(dir, "logs", n+".log"))
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) > 8 {
			lines = lines[len(lines)-8:]
		}
		fmt.Fprintf(&sb, "--- %s.log (last lines)\n%s\n", n, strings.Join(lines, "\n"))
	}
	return sb.String()
}

// freePort asks the kernel for a free TCP port on ip.
func freePort(ip string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return 0, fmt.Errorf("finding a free port on %s: %w", ip, err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// portFree fails with a clear message if ip:port is taken.
func portFree(ip string, port int) error {
	l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("port %s:%d is already taken by another program: stop it (ss -ltnp 'sport = :%d' shows which) or run `trellis-dev down` if it is a leftover", ip, port, port)
		}
		return fmt.Errorf("cannot listen on %s:%d: %w", ip, port, err)
	}
	return l.Close()
}
