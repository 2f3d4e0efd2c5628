package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/trellis-mesh/trellis/bench/dataplane/internal/result"
)

type options struct {
	quick       bool
	out         string
	repeats     int
	closedDur   time.Duration
	openDur     time.Duration
	rates       []float64
	conns       int
	skip        map[string]bool
	only        map[string]bool
	keep        bool
	nice        int
	jsonOut     string
	baselineRes string
	render      string
	trellisEnv  []string
}

func main() {
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "dataplane:", err)
		}
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "dataplane:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("dataplane", flag.ContinueOnError)
	fs.BoolVar(&o.quick, "quick", false, "short run for CI (about a minute): 1 repeat, short phases, results to a temp dir unless -out is given")
	fs.StringVar(&o.out, "out", "docs/benchmarks.md", "markdown report to write; plots and raw JSON go next to it")
	fs.IntVar(&o.repeats, "repeats", 3, "repeats of every measurement (medians are reported)")
	fs.DurationVar(&o.closedDur, "closed", 4*time.Second, "duration of each closed-loop (max req/s) phase")
	fs.DurationVar(&o.openDur, "open", 5*time.Second, "duration of each open-loop (fixed rate) phase")
	rates := fs.String("rates", "1000,2000,5000", "open-loop request rates, req/s")
	fs.IntVar(&o.conns, "c", 16, "client connections")
	skip := fs.String("skip", "", "comma-separated targets to leave out (e.g. nginx,haproxy,haproxy-tcp)")
	only := fs.String("only", "", "comma-separated targets to run (default all)")
	fs.IntVar(&o.nice, "nice", -10, "run every benchmark process (backend, proxies, load generator) at this nice value, so other work on the machine disturbs the latency figures less; 0 leaves priorities alone")
	fs.BoolVar(&o.keep, "keep", false, "keep the work directory (configs, logs) for inspection")
	fs.StringVar(&o.baselineRes, "compare", "", "raw JSON of an earlier run to show as a 'before' column")
	tenv := fs.String("trellis-env", "", "comma-separated KEY=VALUE environment for the Trellis processes, e.g. GOGC=50 (to try settings a DaemonSet would carry)")
	fs.StringVar(&o.render, "render", "", "only rewrite the report (-out) from this raw JSON of an earlier run; measure nothing")
	set := map[string]bool{}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q; every option is a flag", fs.Arg(0))
	}
	if o.quick {
		if !set["repeats"] {
			o.repeats = 1
		}
		if !set["closed"] {
			o.closedDur = 1500 * time.Millisecond
		}
		if !set["open"] {
			o.openDur = 1500 * time.Millisecond
		}
		if !set["out"] {
			o.out = filepath.Join(os.TempDir(), "trellis-bench-quick", "benchmarks.md")
		}
	}
	for _, s := range strings.Split(*rates, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		r, err := strconv.ParseFloat(s, 64)
		if err != nil || r <= 0 {
			return nil, fmt.Errorf("-rates: %q is not a positive number of requests per second", s)
		}
		o.rates = append(o.rates, r)
	}
	if o.repeats < 1 || o.conns < 1 {
		return nil, errors.New("-repeats and -c must be at least 1")
	}
	if o.closedDur < 200*time.Millisecond || o.openDur < 200*time.Millisecond {
		return nil, errors.New("-closed and -open must be at least 200ms")
	}
	o.skip, o.only = csvSet(*skip), csvSet(*only)
	for _, kv := range strings.Split(*tenv, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		if !strings.Contains(kv, "=") {
			return nil, fmt.Errorf("-trellis-env: %q is not KEY=VALUE", kv)
		}
		o.trellisEnv = append(o.trellisEnv, kv)
	}
	for name := range mergeSets(o.skip, o.only) {
		if !slices.Contains(allTargets, name) {
			return nil, fmt.Errorf("-skip/-only: unknown target %q; targets are %s", name, strings.Join(allTargets, ", "))
		}
	}
	o.jsonOut = strings.TrimSuffix(o.out, filepath.Ext(o.out)) + ".json"
	if o.render != "" && set["quick"] {
		return nil, errors.New("-render rewrites a report from measurements; it takes no -quick")
	}
	return o, nil
}

func csvSet(s string) map[string]bool {
	m := map[string]bool{}
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			m[v] = true
		}
	}
	return m
}

func mergeSets(a, b map[string]bool) map[string]bool {
	m := map[string]bool{}
	for k := range a {
		m[k] = true
	}
	for k := range b {
		m[k] = true
	}
	return m
}

// Targets, in report order.
var allTargets = []string{"direct", "trellis", "trellis-nethttp", "trellis-tcp", "haproxy", "haproxy-tcp", "nginx", "reverseproxy"}

var targetDesc = map[string]string{
	"direct":          "no proxy: load generator → backend",
	"trellis":         "Trellis node proxy, shared HTTP listener, split 80/20 + ACL on, 1,000 services configured",
	"trellis-nethttp": "the same Trellis node proxy with its HTTP/1.1 fast path off (net/http server and transport), its own process",
	"trellis-tcp":     "Trellis node proxy, TCP listener (ACL on), same process as trellis",
	"haproxy":         "HAProxy, nbthread 1, same split (weights) and ACL (src + method)",
	"haproxy-tcp":     "HAProxy, TCP mode (src ACL), same process",
	"nginx":           "nginx, 1 worker, same split (weights) and ACL (allow + limit_except)",
	"reverseproxy":    "plain net/http server + httputil.ReverseProxy (256 idle upstream conns)",
}

type target struct {
	name string
	url  string
	host string
	proc *proc // the proxy measured; nil for direct
}

// sample is one measurement with the proxy's CPU during it.
type sample struct {
	Run      *result.Run `json:"run"`
	ProxyCPU float64     `json:"proxyCPU"` // seconds, -1 when there is no proxy
	Backend  float64     `json:"backendCPU"`
	Load     string      `json:"load"` // the machine's load average when it started
}

// Results is everything one run measured (the raw JSON next to the report).
type Results struct {
	Started  time.Time                      `json:"started"`
	Finished time.Time                      `json:"finished"`
	Machine  machine                        `json:"machine"`
	Options  map[string]string              `json:"options"`
	Targets  []string                       `json:"targets"`
	Closed   map[string][]sample            `json:"closed"`
	Open     map[string]map[string][]sample `json:"open"`     // target → rate → samples
	RSSKB    map[string]int64               `json:"rssKB"`    // peak (VmHWM)
	RSSEndKB map[string]int64               `json:"rssEndKB"` // at the end (VmRSS)
	Checks   []string                       `json:"checks"`
	Errors   []string                       `json:"errors,omitempty"`
	Before   *Results                       `json:"-"`
}

func rateKey(r float64) string { return strconv.FormatFloat(r, 'f', -1, 64) }

func loadResults(path string) (*Results, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	r := &Results{}
	if err := json.Unmarshal(b, r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}

func run(ctx context.Context, o *options) error {
	var before *Results
	if o.baselineRes != "" {
		var err error
		if before, err = loadResults(o.baselineRes); err != nil {
			return fmt.Errorf("-compare: %w", err)
		}
	}
	if o.render != "" {
		r, err := loadResults(o.render)
		if err != nil {
			return fmt.Errorf("-render: %w", err)
		}
		r.Before = before
		o.quick = r.Options["quick"] == "true"
		return writeReport(o, r)
	}
	root, err := repoRoot()
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "trellis-bench-")
	if err != nil {
		return err
	}
	if o.keep {
		fmt.Println("work directory:", work)
	} else {
		defer os.RemoveAll(work)
	}
	want := func(name string) bool { return !o.skip[name] && (len(o.only) == 0 || o.only[name]) }
	needHAProxy := want("haproxy") || want("haproxy-tcp")
	if needHAProxy {
		if _, err := exec.LookPath("haproxy"); err != nil {
			return errors.New("haproxy is not installed: run `apt-get install -y haproxy nginx` (or `go tool task bench:deps`), or pass -skip haproxy,haproxy-tcp")
		}
	}
	if want("nginx") {
		if _, err := exec.LookPath("nginx"); err != nil {
			return errors.New("nginx is not installed: run `apt-get install -y haproxy nginx` (or `go tool task bench:deps`), or pass -skip nginx")
		}
	}

	fmt.Println("building trellis-proxy, nethttpproxy, backend, loadgen, reverseproxy ...")
	bin := filepath.Join(work, "bin")
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin+string(os.PathSeparator),
		"./cmd/trellis-proxy", "./bench/dataplane/nethttpproxy", "./bench/dataplane/backend", "./bench/dataplane/loadgen", "./bench/dataplane/reverseproxy")
	build.Dir = root
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("go build: %w", err)
	}

	pp, err := freePorts(12)
	if err != nil {
		return err
	}
	p := ports{v1: pp[0], v2: pp[1], trellis: pp[2], trellisTCP: pp[3], trellisAdmin: pp[4],
		haproxy: pp[5], haproxyTCP: pp[6], nginx: pp[7], rproxy: pp[8]}
	// The fast-path-off instance: same config, its own ports.
	pn := p
	pn.trellis, pn.trellisTCP, pn.trellisAdmin = pp[9], pp[10], pp[11]

	res := &Results{Started: time.Now(), Machine: describeMachine(), Before: before,
		Closed: map[string][]sample{}, Open: map[string]map[string][]sample{}, RSSKB: map[string]int64{}, RSSEndKB: map[string]int64{},
		Options: map[string]string{
			"repeats": strconv.Itoa(o.repeats), "closed": o.closedDur.String(), "open": o.openDur.String(),
			"connections": strconv.Itoa(o.conns), "quick": strconv.FormatBool(o.quick), "nice": strconv.Itoa(o.nice),
			"trellisEnv": strings.Join(o.trellisEnv, ","),
		}}

	var procs []*proc
	defer func() {
		for _, pr := range procs {
			pr.stop()
		}
	}()
	niced := func(argv []string) []string {
		if o.nice == 0 {
			return argv
		}
		return append([]string{"nice", "-n", strconv.Itoa(o.nice)}, argv...)
	}
	launch := func(name string, env []string, argv ...string) (*proc, error) {
		pr, err := start(work, name, env, niced(argv)...)
		if err == nil {
			procs = append(procs, pr)
		}
		return pr, err
	}
	backend, err := launch("backend", nil, filepath.Join(bin, "backend"),
		"-listen", fmt.Sprintf("127.0.0.1:%d=v1,127.0.0.1:%d=v2", p.v1, p.v2))
	if err != nil {
		return err
	}
	if err := waitHTTP(ctx, backend, fmt.Sprintf("http://127.0.0.1:%d/", p.v1), "", 10*time.Second); err != nil {
		return err
	}

	var targets []*target
	add := func(name, url, host string, pr *proc) {
		if want(name) {
			targets = append(targets, &target{name: name, url: url, host: host, proc: pr})
		}
	}
	add("direct", fmt.Sprintf("http://127.0.0.1:%d/", p.v1), "", nil)

	if want("trellis") || want("trellis-tcp") || want("trellis-nethttp") {
		cfgPath, err := writeTrellisConfig(work, p)
		if err != nil {
			return err
		}
		tp, err := launch("trellis", o.trellisEnv, filepath.Join(bin, "trellis-proxy"), "--config", cfgPath, "--node", "bench",
			"--admin-addr", fmt.Sprintf("127.0.0.1:%d", p.trellisAdmin), "--drain-period", "0s", "--log-level", "warn")
		if err != nil {
			return err
		}
		if err := waitHTTP(ctx, tp, fmt.Sprintf("http://127.0.0.1:%d/", p.trellis), meshHost, 20*time.Second); err != nil {
			return err
		}
		add("trellis", fmt.Sprintf("http://127.0.0.1:%d/", p.trellis), meshHost, tp)
		if want("trellis-nethttp") {
			ndir := filepath.Join(work, "nethttp")
			if err := os.MkdirAll(ndir, 0o755); err != nil {
				return err
			}
			cfgPath, err := writeTrellisConfig(ndir, pn)
			if err != nil {
				return err
			}
			np, err := launch("trellis-nethttp", o.trellisEnv, filepath.Join(bin, "nethttpproxy"), "--config", cfgPath, "--node", "bench",
				"--admin-addr", fmt.Sprintf("127.0.0.1:%d", pn.trellisAdmin))
			if err != nil {
				return err
			}
			if err := waitHTTP(ctx, np, fmt.Sprintf("http://127.0.0.1:%d/", pn.trellis), meshHost, 20*time.Second); err != nil {
				return err
			}
			add("trellis-nethttp", fmt.Sprintf("http://127.0.0.1:%d/", pn.trellis), meshHost, np)
		}
		add("trellis-tcp", fmt.Sprintf("http://127.0.0.1:%d/", p.trellisTCP), meshHost, tp)
	}
	if needHAProxy {
		cfg := filepath.Join(work, "haproxy.cfg")
		if err := os.WriteFile(cfg, []byte(haproxyConfig(p)), 0o644); err != nil {
			return err
		}
		hp, err := launch("haproxy", nil, "haproxy", "-db", "-f", cfg)
		if err != nil {
			return err
		}
		if err := waitHTTP(ctx, hp, fmt.Sprintf("http://127.0.0.1:%d/", p.haproxy), meshHost, 10*time.Second); err != nil {
			return err
		}
		add("haproxy", fmt.Sprintf("http://127.0.0.1:%d/", p.haproxy), meshHost, hp)
		add("haproxy-tcp", fmt.Sprintf("http://127.0.0.1:%d/", p.haproxyTCP), meshHost, hp)
	}
	if want("nginx") {
		ndir := filepath.Join(work, "nginx")
		if err := os.MkdirAll(ndir, 0o755); err != nil {
			return err
		}
		cfg := filepath.Join(ndir, "nginx.conf")
		if err := os.WriteFile(cfg, []byte(nginxConfig(ndir, p)), 0o644); err != nil {
			return err
		}
		np, err := launch("nginx", nil, "nginx", "-p", ndir, "-c", cfg, "-e", filepath.Join(ndir, "nginx-error.log"))
		if err != nil {
			return err
		}
		if err := waitHTTP(ctx, np, fmt.Sprintf("http://127.0.0.1:%d/", p.nginx), meshHost, 10*time.Second); err != nil {
			return err
		}
		add("nginx", fmt.Sprintf("http://127.0.0.1:%d/", p.nginx), meshHost, np)
	}
	if want("reverseproxy") {
		rp, err := launch("reverseproxy", nil, filepath.Join(bin, "reverseproxy"),
			"-listen", fmt.Sprintf("127.0.0.1:%d", p.rproxy), "-upstream", fmt.Sprintf("http://127.0.0.1:%d", p.v1))
		if err != nil {
			return err
		}
		if err := waitHTTP(ctx, rp, fmt.Sprintf("http://127.0.0.1:%d/", p.rproxy), meshHost, 10*time.Second); err != nil {
			return err
		}
		add("reverseproxy", fmt.Sprintf("http://127.0.0.1:%d/", p.rproxy), meshHost, rp)
	}
	for _, t := range targets {
		res.Targets = append(res.Targets, t.name)
	}

	// Policy checks: the proxies really split and really deny.
	for _, t := range targets {
		check := checkPolicy
		if strings.HasSuffix(t.name, "-tcp") {
			check = checkTCPPolicy
		}
		if t.name != "direct" && t.name != "reverseproxy" {
			msg, err := check(ctx, t)
			if err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
			res.Checks = append(res.Checks, msg)
			fmt.Println("check:", msg)
		}
	}

	loadgen := filepath.Join(bin, "loadgen")
	measure := func(t *target, qps float64, d time.Duration) (sample, error) {
		var u0, b0 usage
		if t.proc != nil {
			u0, _ = readUsage(t.proc.pid())
		}
		b0, _ = readUsage(backend.pid())
		load := loadAvg()
		args := []string{"-url", t.url, "-c", strconv.Itoa(o.conns), "-d", d.String(), "-qps", rateKey(qps)}
		if t.host != "" {
			args = append(args, "-host", t.host)
		}
		lg := niced(append([]string{loadgen}, args...))
		cmd := exec.CommandContext(ctx, lg[0], lg[1:]...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return sample{}, fmt.Errorf("loadgen %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
		}
		s := sample{Run: &result.Run{}, ProxyCPU: -1, Load: load}
		if err := json.Unmarshal(out, s.Run); err != nil {
			return sample{}, fmt.Errorf("loadgen output: %w", err)
		}
		if t.proc != nil {
			if t.proc.exited() {
				return sample{}, fmt.Errorf("%s exited during the run: %w\n%s", t.proc.name, t.proc.err, t.proc.tail())
			}
			u1, _ := readUsage(t.proc.pid())
			s.ProxyCPU = u1.cpu - u0.cpu
		}
		b1, _ := readUsage(backend.pid())
		s.Backend = b1.cpu - b0.cpu
		if s.Run.Errors > 0 {
			res.Errors = append(res.Errors, fmt.Sprintf("%s at %s: %d of %d requests failed (codes %v)",
				t.name, modeName(qps), s.Run.Errors, s.Run.Requests, s.Run.Codes))
		}
		return s, nil
	}

	// Warm every target up (connection pools, heaps), then measure in
	// rounds, rotating the order so no target always runs first or last.
	for _, t := range targets {
		if _, err := measure(t, 0, 300*time.Millisecond); err != nil {
			return err
		}
	}
	// Phase-major order: each phase (closed loop, then each rate) runs
	// for every target back to back, in an order that rotates, so a burst
	// of outside load hits all targets alike rather than one.
	phases := append([]float64{0}, o.rates...)
	total := o.repeats * len(targets) * len(phases)
	done := 0
	for rep := 0; rep < o.repeats; rep++ {
		for pi, qps := range phases {
			for i := range targets {
				t := targets[(i+rep+pi)%len(targets)]
				if ctx.Err() != nil {
					return ctx.Err()
				}
				d := o.openDur
				if qps == 0 {
					d = o.closedDur
				}
				s, err := measure(t, qps, d)
				if err != nil {
					return err
				}
				done++
				if qps == 0 {
					res.Closed[t.name] = append(res.Closed[t.name], s)
					fmt.Printf("[%3d/%d] repeat %d %-15s closed loop: %8.0f req/s   (load %s)\n", done, total, rep+1, t.name, s.Run.ActualQPS, s.Load)
					continue
				}
				if res.Open[t.name] == nil {
					res.Open[t.name] = map[string][]sample{}
				}
				res.Open[t.name][rateKey(qps)] = append(res.Open[t.name][rateKey(qps)], s)
				fmt.Printf("[%3d/%d] repeat %d %-15s %5.0f req/s: p50 %s p99 %s p999 %s   (load %s)\n", done, total, rep+1, t.name, qps,
					ms(s.Run.Latency.P50), ms(s.Run.Latency.P99), ms(s.Run.Latency.P999), s.Load)
			}
		}
	}
	for _, t := range targets {
		if t.proc != nil {
			u, err := readUsage(t.proc.pid())
			if err == nil {
				res.RSSKB[t.name], res.RSSEndKB[t.name] = u.hwmKB, u.rssKB
			}
		}
	}
	if u, err := readUsage(backend.pid()); err == nil {
		res.RSSKB["backend"], res.RSSEndKB["backend"] = u.hwmKB, u.rssKB
	}
	res.Finished = time.Now()
	res.Machine.LoadEnd = loadAvg()

	if err := writeReport(o, res); err != nil {
		return err
	}
	if len(res.Errors) > 0 {
		return fmt.Errorf("%d measurements had failed requests:\n  %s", len(res.Errors), strings.Join(res.Errors, "\n  "))
	}
	return nil
}

func modeName(qps float64) string {
	if qps <= 0 {
		return "closed loop"
	}
	return rateKey(qps) + " req/s"
}

func ms(sec float64) string { return strconv.FormatFloat(sec*1000, 'f', 3, 64) + "ms" }

// checkPolicy sends splitRequest GETs from the client address and counts
// where they went, then one GET from an address that is not a pod, which
// must be refused.
func checkPolicy(ctx context.Context, t *target) (string, error) {
	tr := &http.Transport{MaxIdleConnsPerHost: 4}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	hits := map[string]int{}
	for range splitRequest {
		req, _ := http.NewRequestWithContext(ctx, "GET", t.url, nil)
		req.Host = t.host
		resp, err := c.Do(req)
		if err != nil {
			return "", fmt.Errorf("split check: %w", err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return "", fmt.Errorf("split check: status %d", resp.StatusCode)
		}
		hits[resp.Header.Get("X-Backend")]++
	}
	v2 := 100 * float64(hits["v2"]) / splitRequest
	if v2 < weightV2-5 || v2 > weightV2+5 {
		return "", fmt.Errorf("split check: %.1f%% of %d requests went to v2, want %d%% ± 5 (hits %v)", v2, splitRequest, weightV2, hits)
	}
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(outsiderIP)}, Timeout: 2 * time.Second}
	otr := &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}
	oc := &http.Client{Transport: otr, Timeout: 5 * time.Second}
	req, _ := http.NewRequestWithContext(ctx, "GET", t.url, nil)
	req.Host = t.host
	resp, err := oc.Do(req)
	if err != nil {
		return "", fmt.Errorf("ACL check from %s: %w", outsiderIP, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 403 {
		return "", fmt.Errorf("ACL check: a GET from %s (not an allowed client) got %d, want 403", outsiderIP, resp.StatusCode)
	}
	why := ""
	if r := resp.Header.Get("X-Trellis-Reason"); r != "" {
		why = fmt.Sprintf(" (%q)", r)
	}
	return fmt.Sprintf("%s: split sent %.1f%% of %d requests to v2 (want %d%%); a GET from %s got 403%s",
		t.name, v2, splitRequest, weightV2, outsiderIP, why), nil
}

// checkTCPPolicy makes sure a connection from an address that is not an
// allowed client gets no answer from a TCP listener.
func checkTCPPolicy(ctx context.Context, t *target) (string, error) {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(outsiderIP)}, Timeout: 2 * time.Second}
	otr := &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}
	oc := &http.Client{Transport: otr, Timeout: 5 * time.Second}
	req, _ := http.NewRequestWithContext(ctx, "GET", t.url, nil)
	req.Host = t.host
	resp, err := oc.Do(req)
	if err == nil {
		resp.Body.Close()
		return "", fmt.Errorf("ACL check: a connection from %s (not an allowed client) was relayed (status %d)", outsiderIP, resp.StatusCode)
	}
	return fmt.Sprintf("%s: a connection from %s was refused (%v)", t.name, outsiderIP, shortErr(err)), nil
}

func shortErr(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	return s
}

func repoRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("run from inside the trellis module (go run ./bench/dataplane)")
	}
	return filepath.Dir(mod), nil
}
