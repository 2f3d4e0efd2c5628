package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/trellis-mesh/trellis/node-proxy/config"
	"github.com/trellis-mesh/trellis/node-proxy/httpproxy"
	"github.com/trellis-mesh/trellis/node-proxy/plugin"
	"github.com/trellis-mesh/trellis/node-proxy/server"
	"github.com/trellis-mesh/trellis/node-proxy/source"
	"github.com/trellis-mesh/trellis/node-proxy/telemetry"
)

var (
	_ server.Source = (*source.File)(nil)
	_ server.Source = (*source.Stream)(nil)
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	reload := make(chan struct{}, 1)
	go func() {
		for range hup {
			select {
			case reload <- struct{}{}:
			default:
			}
		}
	}()
	os.Exit(run(ctx, os.Args[1:], reload, os.Stderr))
}

type flags struct {
	configFile       string
	controller       string
	tokenFile        string
	controllerCA     string
	node             string
	bind             string
	httpPort         int
	adminAddr        string
	drain            time.Duration
	grace            time.Duration
	logLevel         string
	accessLog        bool
	sampleFirst      int
	sampleThereafter int
	maxHeaderBytes   int
	maxHeaderCount   int
	readHeaderTO     time.Duration
	idleTO           time.Duration
	fastPath         bool
	otlpEndpoint     string
	traceRatio       float64
	pluginDirs       pluginDirs
}

// pluginDirs is --plugin-dir NAME=DIR, repeated: plugins whose source is
// read from a development directory instead of the config file.
type pluginDirs map[string]string

func (p pluginDirs) String() string { return fmt.Sprint(map[string]string(p)) }

func (p pluginDirs) Set(v string) error {
	name, dir, ok := strings.Cut(v, "=")
	if !ok || name == "" || dir == "" {
		return fmt.Errorf("want NAME=DIR (a plugin's name in the config, and the directory of its module), got %q", v)
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return fmt.Errorf("%s: not a directory", dir)
	}
	p[name] = dir
	return nil
}

// fill gives each named plugin of c the .go files of its directory and a
// version that changes with them (a SIGHUP then reloads an edited plugin).
func (p pluginDirs) fill(c *config.Config) error {
	found := map[string]bool{}
	for i := range c.Plugins {
		pl := &c.Plugins[i]
		dir, ok := p[pl.Name]
		if !ok {
			continue
		}
		found[pl.Name] = true
		files, err := plugin.ReadDir(dir)
		if err != nil {
			return fmt.Errorf("--plugin-dir %s=%s: %w", pl.Name, dir, err)
		}
		pl.Files = files
		h := sha256.New()
		names := make([]string, 0, len(files))
		for n := range files {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			fmt.Fprintf(h, "%d:%s%d:%s", len(n), n, len(files[n]), files[n])
		}
		pl.Version = "dir-" + hex.EncodeToString(h.Sum(nil))[:16]
	}
	for name := range p {
		if !found[name] {
			return fmt.Errorf("--plugin-dir %s: the config has no plugin of that name", name)
		}
	}
	return nil
}

func parse(args []string, stderr io.Writer) (*flags, error) {
	f := &flags{}
	fs := flag.NewFlagSet("trellis-proxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.configFile, "config", "", "serve the config in this JSON file (re-read on SIGHUP)")
	f.pluginDirs = pluginDirs{}
	fs.Var(f.pluginDirs, "plugin-dir", "with --config, for plugin development: NAME=DIR reads plugin NAME's Go files from DIR (re-read on SIGHUP); repeatable")
	fs.StringVar(&f.controller, "controller", "", "receive configs from the controller at this URL, e.g. http://trellis-controller.trellis-system.svc:9000")
	fs.StringVar(&f.tokenFile, "token-file", "/var/run/secrets/kubernetes.io/serviceaccount/token", "ServiceAccount token presented to the controller (re-read on every connection)")
	fs.StringVar(&f.controllerCA, "controller-ca", "", "CA bundle for an https:// --controller (default: system roots)")
	fs.StringVar(&f.node, "node", os.Getenv("NODE_NAME"), "this node's name; configs for other nodes are refused (default $NODE_NAME)")
	fs.StringVar(&f.bind, "bind", "", "IP address the data listeners bind (default: all)")
	fs.IntVar(&f.httpPort, "http-port", 0, "override the config's listeners.http port")
	fs.StringVar(&f.adminAddr, "admin-addr", ":15000", "address of /live, /ready, /metrics and /debug/config (\"\" disables)")
	fs.DurationVar(&f.drain, "drain-period", 10*time.Second, "after SIGTERM, keep serving this long with readiness failing")
	fs.DurationVar(&f.grace, "shutdown-grace", 30*time.Second, "after the drain period, wait this long for in-flight requests and connections")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.BoolVar(&f.accessLog, "access-log", true, "write a JSON access log line per HTTP request to stdout")
	fs.IntVar(&f.sampleFirst, "access-log-sample-first", 100, "per second, log the first N requests (0: log all)")
	fs.IntVar(&f.sampleThereafter, "access-log-sample-thereafter", 100, "per second, after the first N, log every Mth request")
	fs.IntVar(&f.maxHeaderBytes, "max-header-bytes", 32<<10, "largest request line plus headers")
	fs.IntVar(&f.maxHeaderCount, "max-header-count", 100, "most request header fields")
	fs.DurationVar(&f.readHeaderTO, "read-header-timeout", 10*time.Second, "time allowed to send request headers (slowloris guard)")
	fs.DurationVar(&f.idleTO, "idle-timeout", 120*time.Second, "keep-alive idle timeout of client connections")
	fs.BoolVar(&f.fastPath, "http1-fast-path", true, "serve plain HTTP/1.1 with Trellis's own strict parser (false: net/http for everything)")
	fs.StringVar(&f.otlpEndpoint, "otlp-endpoint", "", "export one span per sampled HTTP request over OTLP/HTTP (protobuf) to this collector URL, "+
		"e.g. http://otel-collector.observability:4318 (/v1/traces is added when the URL has no path; "+
		"extra headers from OTEL_EXPORTER_OTLP_HEADERS); empty: no spans")
	fs.Float64Var(&f.traceRatio, "trace-sample-ratio", 0, "with --otlp-endpoint: share (0..1) of requests arriving without a traceparent "+
		"that start a sampled trace; requests with one follow its sampled flag")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q; all options are flags", fs.Arg(0))
	}
	if (f.configFile == "") == (f.controller == "") {
		return nil, errors.New("--config or --controller: pass exactly one (a static config JSON file, or the controller URL)")
	}
	if len(f.pluginDirs) > 0 && f.configFile == "" {
		return nil, errors.New("--plugin-dir: only with --config (with --controller, plugins come from MeshPlugins)")
	}
	if f.httpPort < 0 || f.httpPort > 65535 {
		return nil, fmt.Errorf("--http-port: must be 0-65535, got %d", f.httpPort)
	}
	if f.drain < 0 || f.grace < 0 {
		return nil, errors.New("--drain-period and --shutdown-grace must not be negative")
	}
	if f.otlpEndpoint != "" {
		if _, err := telemetry.ParseOTLPEndpoint(f.otlpEndpoint); err != nil {
			return nil, fmt.Errorf("--otlp-endpoint: %w", err)
		}
	}
	if err := telemetry.CheckSampleRatio(f.traceRatio); err != nil {
		return nil, fmt.Errorf("--trace-sample-ratio: %w", err)
	}
	if f.traceRatio > 0 && f.otlpEndpoint == "" {
		return nil, errors.New("--trace-sample-ratio: needs --otlp-endpoint (the proxy samples only traces whose spans it exports)")
	}
	return f, nil
}

func run(ctx context.Context, args []string, reload <-chan struct{}, stderr io.Writer) int {
	f, err := parse(args, stderr)
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stderr, "trellis-proxy:", err)
		}
		return 2
	}
	var lvl zapcore.Level
	if err := lvl.UnmarshalText([]byte(f.logLevel)); err != nil {
		fmt.Fprintf(stderr, "trellis-proxy: --log-level: %v\n", err)
		return 2
	}
	zc := zap.NewProductionConfig()
	zc.Level = zap.NewAtomicLevelAt(lvl)
	zc.OutputPaths = []string{"stderr"}
	// No sampler on this logger: zap's keeps 458 KB of counters, a fifth of
	// the proxy's heap at 1,000 services, for a logger that says little;
	// the per-request access log keeps its own sampling, and the one
	// per-request message here (a recovered panic) is rate-limited where
	// it is logged.
	zc.Sampling = nil
	log, err := zc.Build()
	if err != nil {
		fmt.Fprintln(stderr, "trellis-proxy: logger:", err)
		return 1
	}
	defer log.Sync()
	access := zap.NewNop()
	if f.accessLog {
		access = telemetry.NewAccessLogger(zapcore.Lock(os.Stdout), telemetry.Sampling{First: f.sampleFirst, Thereafter: f.sampleThereafter})
	}
	metrics := telemetry.NewMetrics()
	var tracer *telemetry.Tracer
	if f.otlpEndpoint != "" {
		headers, err := telemetry.OTLPHeadersFromEnv()
		if err != nil {
			fmt.Fprintln(stderr, "trellis-proxy: --otlp-endpoint:", err)
			return 2
		}
		tracer, err = telemetry.NewTracer(telemetry.TracerOptions{Endpoint: f.otlpEndpoint, Headers: headers,
			SampleRatio: f.traceRatio, Node: f.node, Metrics: metrics, Log: log})
		if err != nil {
			fmt.Fprintln(stderr, "trellis-proxy: --otlp-endpoint:", err)
			return 2
		}
	}
	p := server.New(server.Options{
		BindIP:        f.bind,
		HTTPPort:      int32(f.httpPort),
		AdminAddr:     f.adminAddr,
		NodeName:      f.node,
		DrainPeriod:   f.drain,
		ShutdownGrace: f.grace,
		HTTP: httpproxy.ServerOptions{MaxHeaderBytes: f.maxHeaderBytes, ReadHeaderTimeout: f.readHeaderTO,
			IdleTimeout: f.idleTO, DisableFastPath: !f.fastPath},
		HTTPHandler: httpproxy.Options{MaxHeaderCount: f.maxHeaderCount},
		Log:         log,
		AccessLog:   access,
		Metrics:     metrics,
		Tracer:      tracer,
	})
	var src server.Source = &source.File{Path: f.configFile, Reload: reload, OnError: func(err error) {
		log.Error("config reload failed; still serving the previous config", zap.Error(err))
	}, Prepare: f.pluginDirs.fill}
	if f.controller != "" {
		src = &source.Stream{URL: f.controller, TokenFile: f.tokenFile, CAFile: f.controllerCA, OnEvent: streamLogger(log),
			PluginErrors: p.PluginLoadErrors}
	}
	log.Info("trellis-proxy starting", zap.String("config", f.configFile), zap.String("controller", f.controller), zap.String("node", f.node),
		zap.String("admin", f.adminAddr), zap.String("otlp_endpoint", f.otlpEndpoint), zap.Float64("trace_sample_ratio", f.traceRatio))
	if err := p.Run(ctx, src); err != nil {
		fmt.Fprintln(stderr, "trellis-proxy:", err)
		return 1
	}
	return 0
}

// streamLogger logs the controller stream's events.
func streamLogger(log *zap.Logger) func(source.StreamEvent) {
	return func(e source.StreamEvent) {
		fields := []zap.Field{zap.String("event", e.Kind)}
		if e.Frame != "" {
			fields = append(fields, zap.String("frame", e.Frame))
		}
		if e.Version != "" {
			fields = append(fields, zap.String("version", e.Version))
		}
		if e.Wait > 0 {
			fields = append(fields, zap.Duration("retry_in", e.Wait))
		}
		switch e.Kind {
		case "refused", "disconnected", "rejected":
			log.Warn("controller stream", append(fields, zap.Error(e.Err))...)
		case "frame", "connecting":
			log.Debug("controller stream", fields...)
		default:
			log.Info("controller stream", fields...)
		}
	}
}
