package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"fortio.org/fortio/fhttp"
	"fortio.org/fortio/periodic"
	flog "fortio.org/log"

	"github.com/trellis-mesh/trellis/bench/dataplane/internal/result"
)

func main() {
	url := flag.String("url", "", "target URL, e.g. http://127.0.0.1:8080/")
	host := flag.String("host", "", "Host header to send (default: from the URL)")
	qps := flag.Float64("qps", 0, "open-loop request rate; 0 runs a closed loop")
	conns := flag.Int("c", 16, "connections (one fortio thread each)")
	dur := flag.Duration("d", 5*time.Second, "duration")
	flag.Parse()
	if *url == "" {
		fmt.Fprintln(os.Stderr, "loadgen: -url is required")
		os.Exit(2)
	}
	flog.SetLogLevelQuiet(flog.Error)
	flog.SetOutput(os.Stderr)
	r, err := run(*url, *host, *qps, *conns, *dur)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
	if err := json.NewEncoder(os.Stdout).Encode(r); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

// schedule mirrors fortio's periodic runner (runQPSSetup and runOne) for a
// run with a duration: how many calls each thread makes and when the i-th
// is due, relative to the thread's first call.
type schedule struct {
	threads      int
	callsPerThr  int64
	perThreadQPS float64
}

func newSchedule(qps float64, threads int, d time.Duration) schedule {
	total := int64(qps * d.Seconds())
	if total < 2 {
		total, threads = 2, 1
	}
	if int64(2*threads) > total {
		threads = int(total / 2)
	}
	return schedule{threads: threads, callsPerThr: total / int64(threads), perThreadQPS: qps / float64(threads)}
}

func (s schedule) due(i int64) time.Duration {
	n := s.callsPerThr
	if n < 2 {
		n = 2
	}
	sec := (float64(i) + float64(i)/float64(n-1)) / s.perThreadQPS
	return time.Duration(sec * 1e9)
}

// coLogger receives every call from fortio's runner. Each thread only
// touches its own slot, so no lock is needed.
type coLogger struct {
	sched   schedule
	open    bool
	threads []threadLog
}

type threadLog struct {
	first    time.Time
	latency  []float64 // corrected (open loop) or raw
	service  []float64 // raw, from the actual send
	lastDone time.Time
}

func (l *coLogger) Start(ctx context.Context, id periodic.ThreadID, iter int64, start time.Time) context.Context {
	if iter == 0 {
		l.threads[id].first = start
	}
	return ctx
}

func (l *coLogger) Report(_ context.Context, id periodic.ThreadID, iter int64, start time.Time, latency float64, _ bool, _ string) {
	t := &l.threads[id]
	done := start.Add(time.Duration(latency * 1e9))
	t.service = append(t.service, latency)
	lat := latency
	if l.open {
		if c := done.Sub(t.first.Add(l.sched.due(iter))).Seconds(); c > lat {
			lat = c
		}
	}
	t.latency = append(t.latency, lat)
	t.lastDone = done
}

func (l *coLogger) Info() string { return "coordinated-omission correction" }

func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

func run(url, host string, qps float64, conns int, d time.Duration) (*result.Run, error) {
	o := &fhttp.HTTPRunnerOptions{}
	o.RunnerOptions = periodic.RunnerOptions{
		QPS:        -1,
		Duration:   d,
		NumThreads: conns,
		Out:        io.Discard,
		Resolution: 1e-5,
	}
	lg := &coLogger{threads: make([]threadLog, conns)}
	if qps > 0 {
		o.QPS = qps
		o.Uniform = true // stagger the connections' schedules
		lg.open = true
		lg.sched = newSchedule(qps, conns, d)
		for i := range lg.threads {
			lg.threads[i].latency = make([]float64, 0, lg.sched.callsPerThr+1)
			lg.threads[i].service = make([]float64, 0, lg.sched.callsPerThr+1)
		}
	}
	o.AccessLogger = lg
	o.URL = url
	o.HTTPReqTimeOut = 10 * time.Second
	if host != "" {
		if err := o.AddAndValidateExtraHeader("Host: " + host); err != nil {
			return nil, err
		}
	}
	cpu0 := cpuSeconds()
	res, err := fhttp.RunHTTPTest(o)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", url, err)
	}
	out := &result.Run{URL: url, Connections: conns, RequestedQPS: qps, Codes: res.RetCodes,
		CPUSeconds: cpuSeconds() - cpu0}
	var lat, svc []float64
	var first, last time.Time
	for _, t := range lg.threads {
		lat = append(lat, t.latency...)
		svc = append(svc, t.service...)
		if !t.first.IsZero() && (first.IsZero() || t.first.Before(first)) {
			first = t.first
		}
		if t.lastDone.After(last) {
			last = t.lastDone
		}
	}
	out.Requests = int64(len(lat))
	for code, n := range res.RetCodes {
		if code < 200 || code > 299 {
			out.Errors += n
		}
	}
	out.Seconds = res.ActualDuration.Seconds()
	if !first.IsZero() && last.After(first) {
		out.Seconds = last.Sub(first).Seconds()
	}
	if out.Seconds > 0 {
		out.ActualQPS = float64(out.Requests) / out.Seconds
	}
	out.Latency = result.Compute(lat)
	out.ServiceTime = result.Compute(svc)
	return out, nil
}
