package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/trellis-mesh/trellis/controller/app"
	"github.com/trellis-mesh/trellis/controller/settings"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stderr))
}

type flags struct {
	settingsFile string
	kubeconfig   string
	identity     string
	serveAddr    string
	metricsAddr  string
	dnsAddr      string
	tlsCert      string
	tlsKey       string
	webhookAddr  string
	audiences    string
	logLevel     string
	noElection   bool
	qps          float64
	burst        int
}

func parse(name string, args []string, stderr io.Writer) (*flags, error) {
	f := &flags{}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.settingsFile, "settings", "", "mesh settings file (YAML; the trellis-controller ConfigMap); empty: built-in defaults")
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig file (default: in-cluster, then $KUBECONFIG)")
	fs.StringVar(&f.identity, "identity", os.Getenv("POD_NAME"), "this replica's name for leader election (default $POD_NAME)")
	fs.StringVar(&f.serveAddr, "serve-addr", ":9000", "address of proxy config streams, /healthz, /readyz and /debug/")
	fs.StringVar(&f.metricsAddr, "metrics-addr", ":9090", "address of /metrics (\"\" disables)")
	fs.StringVar(&f.dnsAddr, "dns-addr", ":5353", "address of the mesh DNS responder, UDP and TCP (\"\" disables)")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "serve streams over TLS with this certificate (PEM; re-read on change)")
	fs.StringVar(&f.tlsKey, "tls-key", "", "key of --tls-cert")
	fs.StringVar(&f.webhookAddr, "webhook-addr", ":9443", "address of the SMI CRDs' conversion webhook (TLS, certificate kept in a Secret; the trellis-controller Service's port 443 targets it; \"\" disables)")
	fs.StringVar(&f.audiences, "token-audiences", "", "comma-separated audiences proxy tokens must carry (default: the apiserver's)")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.BoolVar(&f.noElection, "no-leader-election", false, "lead without a Lease (one replica only; for debugging)")
	fs.Float64Var(&f.qps, "kube-api-qps", 50, "apiserver request rate")
	fs.IntVar(&f.burst, "kube-api-burst", 100, "apiserver request burst")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if (f.tlsCert == "") != (f.tlsKey == "") {
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	if name == "trellis-controller" && f.identity == "" && !f.noElection {
		return nil, errors.New("--identity: required for leader election (set POD_NAME from metadata.name, or pass --no-leader-election)")
	}
	if f.qps <= 0 || f.burst <= 0 {
		return nil, errors.New("--kube-api-qps and --kube-api-burst must be positive")
	}
	return f, nil
}

func restConfig(f *flags) (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	switch {
	case f.kubeconfig != "":
		cfg, err = clientcmd.BuildConfigFromFlags("", f.kubeconfig)
	default:
		cfg, err = rest.InClusterConfig()
		if err != nil {
			rules := clientcmd.NewDefaultClientConfigLoadingRules()
			cfg, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, nil).ClientConfig()
		}
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes client config: %w", err)
	}
	cfg.QPS, cfg.Burst = float32(f.qps), f.burst
	cfg.UserAgent = "trellis-controller"
	return cfg, nil
}

func run(ctx context.Context, args []string, stderr io.Writer) int {
	name := "trellis-controller"
	if len(args) > 0 && args[0] == "uninstall" {
		name, args = "trellis-controller uninstall", args[1:]
	}
	f, err := parse(name, args, stderr)
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stderr, name+":", err)
		}
		return 2
	}
	s, err := settings.Load(f.settingsFile)
	if err != nil {
		fmt.Fprintln(stderr, name+":", err)
		return 2
	}
	var lvl zapcore.Level
	if err := lvl.UnmarshalText([]byte(f.logLevel)); err != nil {
		fmt.Fprintf(stderr, "%s: --log-level: %v\n", name, err)
		return 2
	}
	zc := zap.NewProductionConfig()
	zc.Level = zap.NewAtomicLevelAt(lvl)
	zc.OutputPaths = []string{"stderr"}
	log, err := zc.Build()
	if err != nil {
		fmt.Fprintln(stderr, name+": logger:", err)
		return 1
	}
	defer log.Sync()
	cfg, err := restConfig(f)
	if err != nil {
		fmt.Fprintln(stderr, name+":", err)
		return 1
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		fmt.Fprintln(stderr, name+":", err)
		return 1
	}
	if name != "trellis-controller" {
		uctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		out, err := app.Uninstall(uctx, kube, s)
		fmt.Fprint(stderr, out)
		if err != nil {
			fmt.Fprintln(stderr, name+":", err)
			return 1
		}
		return 0
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		fmt.Fprintln(stderr, name+":", err)
		return 1
	}
	disco, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		fmt.Fprintln(stderr, name+":", err)
		return 1
	}
	ext, err := apiextensionsclient.NewForConfig(cfg)
	if err != nil {
		fmt.Fprintln(stderr, name+":", err)
		return 1
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	id := f.identity
	if id == "" {
		id = "standalone"
	}
	var auds []string
	for _, a := range strings.Split(f.audiences, ",") {
		if a = strings.TrimSpace(a); a != "" {
			auds = append(auds, a)
		}
	}
	c, err := app.New(app.Options{
		Settings: s, Kube: kube, Dynamic: dyn, Discovery: disco, Identity: id,
		ServeAddr: f.serveAddr, MetricsAddr: f.metricsAddr, DNSAddr: f.dnsAddr,
		TLSCertFile: f.tlsCert, TLSKeyFile: f.tlsKey, TokenAudiences: auds,
		NoLeaderElection: f.noElection, Registry: reg, Log: log,
		WebhookAddr: f.webhookAddr, APIExtensions: ext,
	})
	if err != nil {
		fmt.Fprintln(stderr, name+":", err)
		return 2
	}
	log.Info("trellis-controller starting", zap.String("identity", id), zap.String("meshDomain", s.MeshDomain), zap.Bool("acl", s.ACL))
	if err := c.Run(ctx); err != nil {
		fmt.Fprintln(stderr, name+":", err)
		return 1
	}
	return 0
}
