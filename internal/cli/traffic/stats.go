package traffic

import (
	"math"
	"sort"
)

// How stat and top count a request:
//
//   - RPS counts every request a proxy handled for the destination,
//     including the ones it rejected itself.
//   - SUCCESS is the share of non-5xx responses among the requests the
//     mesh's policy let through. Requests the proxy itself refused by
//     policy — 403 for access control (error_class "denied") and 429 for a
//     rate limit ("rate_limited") — are not failures of the Service and are
//     left out of it; they are shown on their own as DENIED and
//     RATE_LIMITED (shares of all requests, -o wide). A 403 or 429 written
//     by the application counts as a success, like any non-5xx. Requests
//     whose client went away before the response (code_class
//     "client_closed") are not 5xx and count as successes.
//   - Latency quantiles come from the duration histogram of every request,
//     rejected ones included.

// tally accumulates one row's counts.
type tally struct {
	rps      float64 // requests per second, summed over proxies
	total    float64 // requests in the window
	admitted float64 // requests not rejected by policy
	ok       float64 // admitted requests without a 5xx
	denied   float64
	limited  float64
	connRate float64 // TCP connections and UDP flows per second
	hists    []*hist
	proxies  map[string]bool
}

func (t *tally) addRequest(p proxy, secs float64, k reqKey, n float64) {
	t.rps += n / secs
	t.total += n
	switch k.Class {
	case classDenied:
		t.denied += n
	case classRateLimited:
		t.limited += n
	default:
		t.admitted += n
		if k.Code != "5xx" {
			t.ok += n
		}
	}
	t.seen(p)
}

func (t *tally) seen(p proxy) {
	if t.proxies == nil {
		t.proxies = map[string]bool{}
	}
	t.proxies[p.Pod] = true
}

// figures are a row's numbers, nil where there is nothing to measure.
type figures struct {
	RPS              float64   `json:"rps"`
	SuccessRate      *float64  `json:"successRate"`
	DeniedShare      *float64  `json:"deniedShare"`
	RateLimitedShare *float64  `json:"rateLimitedShare"`
	LatencyMs        latencies `json:"latencyMs"`
	ConnsPerSecond   float64   `json:"connectionsPerSecond"`
	Proxies          int       `json:"proxies"`
}

type latencies struct {
	P50 *float64 `json:"p50"`
	P95 *float64 `json:"p95"`
	P99 *float64 `json:"p99"`
}

func (t *tally) figures() figures {
	f := figures{RPS: roundTo(t.rps, 3), ConnsPerSecond: roundTo(t.connRate, 3), Proxies: len(t.proxies)}
	if t.admitted > 0 {
		f.SuccessRate = ptr(roundTo(t.ok/t.admitted, 4))
	}
	if t.total > 0 {
		f.DeniedShare = ptr(roundTo(t.denied/t.total, 4))
		f.RateLimitedShare = ptr(roundTo(t.limited/t.total, 4))
	}
	h := mergeHists(t.hists)
	for _, q := range []struct {
		q   float64
		dst **float64
	}{{0.5, &f.LatencyMs.P50}, {0.95, &f.LatencyMs.P95}, {0.99, &f.LatencyMs.P99}} {
		if v := quantile(q.q, h); !math.IsNaN(v) && !math.IsInf(v, 0) {
			*q.dst = ptr(roundTo(v*1000, 3))
		}
	}
	return f
}

func ptr(v float64) *float64 { return &v }

func roundTo(v float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(v*p) / p
}

type svcKey struct{ NS, Name string }

// byService sums a window per destination Service.
func byService(w *window) map[svcKey]*tally {
	out := map[svcKey]*tally{}
	get := func(ns, name string) *tally {
		k := svcKey{ns, name}
		t := out[k]
		if t == nil {
			t = &tally{}
			out[k] = t
		}
		return t
	}
	for _, d := range w.Deltas {
		for k, n := range d.Requests {
			if k.DstSvc == "" { // no route: not addressed to any Service
				continue
			}
			get(k.DstNS, k.DstSvc).addRequest(d.Proxy, d.Seconds, k, n)
		}
		for k, n := range d.L4 {
			if k.DstSvc == "" {
				continue
			}
			t := get(k.DstNS, k.DstSvc)
			t.connRate += n / d.Seconds
			t.seen(d.Proxy)
		}
		for k, h := range d.Durations {
			if k.DstSvc == "" {
				continue
			}
			t := get(k.DstNS, k.DstSvc)
			t.hists = append(t.hists, h)
		}
	}
	return out
}

// pairTally is one source→destination pair. Shared is set when some of
// its latency observations cannot be told apart from another pair's.
type pairTally struct {
	tally
	shared bool
}

// byPair sums a window per source (identity and Service) and destination.
// The proxy's duration histogram has no source ServiceAccount label, so a
// pair's latency comes from every histogram series of its source
// namespace, source Service and destination; when such a series could
// also belong to another pair (two identities behind one source Service,
// or several client-only identities in one namespace), both pairs are
// marked shared.
func byPair(w *window) map[pair]*pairTally {
	out := map[pair]*pairTally{}
	for _, d := range w.Deltas {
		for k, n := range d.Requests {
			if k.DstSvc == "" {
				continue
			}
			t := out[k.pair]
			if t == nil {
				t = &pairTally{}
				out[k.pair] = t
			}
			t.addRequest(d.Proxy, d.Seconds, k, n)
		}
	}
	for _, d := range w.Deltas {
		for k, h := range d.Durations {
			var owners []*pairTally
			for p, t := range out {
				if p.SrcNS == k.SrcNS && p.SrcSvc == k.SrcSvc && p.DstNS == k.DstNS && p.DstSvc == k.DstSvc && (!k.HasSA || p.SrcSA == k.SrcSA) {
					owners = append(owners, t)
				}
			}
			for _, t := range owners {
				t.hists = append(t.hists, h)
				if len(owners) > 1 {
					t.shared = true
				}
			}
		}
	}
	return out
}

// sortedPairs orders pairs by rate, busiest first, then by name.
func sortedPairs(m map[pair]*pairTally) []pair {
	ps := make([]pair, 0, len(m))
	for p := range m {
		ps = append(ps, p)
	}
	sort.Slice(ps, func(i, j int) bool {
		a, b := m[ps[i]].rps, m[ps[j]].rps
		if a != b {
			return a > b
		}
		return pairLess(ps[i], ps[j])
	})
	return ps
}

func pairLess(a, b pair) bool {
	for _, c := range [][2]string{{a.DstNS, b.DstNS}, {a.DstSvc, b.DstSvc}, {a.SrcNS, b.SrcNS}, {a.SrcSA, b.SrcSA}, {a.SrcSvc, b.SrcSvc}} {
		if c[0] != c[1] {
			return c[0] < c[1]
		}
	}
	return false
}
