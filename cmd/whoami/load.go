package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

// loadOptions configure the constant-rate client (--load).
type loadOptions struct {
	url      string
	host     string
	qps      float64
	duration time.Duration
	timeout  time.Duration
}

// loadFailure is one failed request.
type loadFailure struct {
	At    float64 `json:"at"` // seconds since the start
	Error string  `json:"error"`
}

// loadReport is what --load prints, as one JSON object.
type loadReport struct {
	Requests int            `json:"requests"`
	OK       int            `json:"ok"`
	Failed   int            `json:"failed"`
	Statuses map[string]int `json:"statuses"`
	// Answers counts the Hostname line of whoami answers: which backend
	// served each successful request.
	Answers  map[string]int `json:"answers"`
	Failures []loadFailure  `json:"failures,omitempty"` // the first 50
	P50ms    float64        `json:"p50ms"`
	P99ms    float64        `json:"p99ms"`
	MaxMs    float64        `json:"maxMs"`
	Seconds  float64        `json:"seconds"`
}

// runLoad sends GETs at a constant rate, each on its own schedule (open
// loop: a slow answer does not delay the next request), until the duration
// passes or ctx ends, and reports every failure: a transport error, a
// timeout or a status other than 2xx. Latency is measured from each
// request's scheduled time.
func runLoad(ctx context.Context, o loadOptions, out io.Writer) error {
	if o.qps <= 0 || o.qps > 10000 {
		return fmt.Errorf("--qps must be in (0, 10000], got %v", o.qps)
	}
	if o.duration <= 0 {
		return fmt.Errorf("--duration must be positive, got %v", o.duration)
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second}
	client := &http.Client{Transport: tr, Timeout: o.timeout}
	var (
		mu   sync.Mutex
		rep  = loadReport{Statuses: map[string]int{}, Answers: map[string]int{}}
		lats []time.Duration
		wg   sync.WaitGroup
	)
	start := time.Now()
	fail := func(at time.Time, err string) {
		rep.Failed++
		if len(rep.Failures) < 50 {
			rep.Failures = append(rep.Failures, loadFailure{At: at.Sub(start).Seconds(), Error: err})
		}
	}
	interval := time.Duration(float64(time.Second) / o.qps)
	inflight := make(chan struct{}, 512)
	ctx, cancel := context.WithTimeout(ctx, o.duration)
	defer cancel()
	for i := 0; ; i++ {
		due := start.Add(time.Duration(i) * interval)
		if wait := time.Until(due); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
			case <-t.C:
			}
		}
		if ctx.Err() != nil {
			break
		}
		select {
		case inflight <- struct{}{}:
		default:
			mu.Lock()
			rep.Requests++
			fail(due, "more than 512 requests in flight")
			mu.Unlock()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-inflight }()
			status, answer, err := get(client, o.url, o.host)
			lat := time.Since(due)
			mu.Lock()
			defer mu.Unlock()
			rep.Requests++
			switch {
			case err != nil:
				fail(due, err.Error())
			case status < 200 || status > 299:
				rep.Statuses[fmt.Sprint(status)]++
				fail(due, fmt.Sprintf("status %d", status))
			default:
				rep.Statuses[fmt.Sprint(status)]++
				rep.Answers[answer]++
				rep.OK++
				lats = append(lats, lat)
			}
		}()
	}
	wg.Wait()
	rep.Seconds = time.Since(start).Seconds()
	sort.Slice(lats, func(i, j int) bool { return lats[i] < lats[j] })
	q := func(p float64) float64 {
		if len(lats) == 0 {
			return 0
		}
		return float64(lats[min(len(lats)-1, int(p*float64(len(lats))))].Microseconds()) / 1000
	}
	rep.P50ms, rep.P99ms = q(0.50), q(0.99)
	if len(lats) > 0 {
		rep.MaxMs = float64(lats[len(lats)-1].Microseconds()) / 1000
	}
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(&rep)
}

// get does one GET and returns the status and the Hostname whoami reported.
func get(c *http.Client, url, host string) (int, string, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	if host != "" {
		req.Host = host
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	answer := ""
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 64<<10))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Hostname: "); ok {
			answer = v
		}
	}
	if err := sc.Err(); err != nil {
		return resp.StatusCode, "", fmt.Errorf("reading the body: %w", err)
	}
	return resp.StatusCode, answer, nil
}
