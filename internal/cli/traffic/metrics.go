package traffic

import (
	"bytes"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// The node proxy's metric names and labels (node-proxy/telemetry).
const (
	metricRequests  = "trellis_proxy_http_requests_total"
	metricDuration  = "trellis_proxy_http_request_duration_seconds"
	metricTCPConns  = "trellis_proxy_tcp_connections_total"
	metricUDPFlows  = "trellis_proxy_udp_flows_total"
	metricStartTime = "process_start_time_seconds"

	labelSrcNS    = "source_namespace"
	labelSrcSA    = "source_service_account"
	labelSrcSvc   = "source_service"
	labelDstNS    = "destination_namespace"
	labelDstSvc   = "destination_service"
	labelCode     = "code_class"
	labelErrClass = "error_class"
)

// Error classes the proxy gives requests it rejected by policy.
const (
	classDenied      = "denied"
	classRateLimited = "rate_limited"
)

// pair is who talked to whom. SrcSA is "" when unknown.
type pair struct {
	SrcNS, SrcSA, SrcSvc string
	DstNS, DstSvc        string
}

// reqKey is one series of the requests counter.
type reqKey struct {
	pair
	Code, Class string
}

// histKey is one series of the duration histogram. HasSA says whether the
// histogram carries the source ServiceAccount (the proxy's does not today:
// its latency is per source Service, not per identity).
type histKey struct {
	pair
	HasSA bool
	Code  string
}

// l4Key is one series of the TCP connection and UDP flow counters.
type l4Key struct {
	pair
	Class string
}

// hist is one cumulative histogram: Counts[i] observations were <= Bounds[i];
// the last bound is +Inf and its count is the total.
type hist struct {
	Bounds []float64
	Counts []float64
}

// Total is the number of observations.
func (h *hist) Total() float64 {
	if h == nil || len(h.Counts) == 0 {
		return 0
	}
	return h.Counts[len(h.Counts)-1]
}

// sample is what one scrape of one proxy said.
type sample struct {
	At time.Time
	// Start is the proxy process's start time (0 if not exported); a change
	// means every counter was reset.
	Start     float64
	Requests  map[reqKey]float64
	Durations map[histKey]*hist
	L4        map[l4Key]float64
}

// parseMetrics reads a Prometheus text exposition (format 0.0.4) into the
// series stat and top need. Other metrics are ignored.
func parseMetrics(body []byte) (*sample, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("not Prometheus text format: %w", err)
	}
	s := &sample{Requests: map[reqKey]float64{}, Durations: map[histKey]*hist{}, L4: map[l4Key]float64{}}
	if f := fams[metricStartTime]; f != nil && len(f.GetMetric()) > 0 {
		s.Start = value(f, f.GetMetric()[0])
	}
	if f := fams[metricRequests]; f != nil {
		for _, m := range f.GetMetric() {
			l := labels(m)
			k := reqKey{pair: pairOf(l), Code: l[labelCode], Class: l[labelErrClass]}
			s.Requests[k] += value(f, m)
		}
	}
	for _, name := range []string{metricTCPConns, metricUDPFlows} {
		if f := fams[name]; f != nil {
			for _, m := range f.GetMetric() {
				l := labels(m)
				s.L4[l4Key{pair: pairOf(l), Class: l[labelErrClass]}] += value(f, m)
			}
		}
	}
	if f := fams[metricDuration]; f != nil {
		if f.GetType() != dto.MetricType_HISTOGRAM {
			return nil, fmt.Errorf("%s is a %s, not a histogram", metricDuration, f.GetType())
		}
		for _, m := range f.GetMetric() {
			l := labels(m)
			_, hasSA := l[labelSrcSA]
			k := histKey{pair: pairOf(l), HasSA: hasSA, Code: l[labelCode]}
			h, err := histOf(m.GetHistogram())
			if err != nil {
				return nil, fmt.Errorf("%s%s: %w", metricDuration, labelText(l), err)
			}
			if old := s.Durations[k]; old != nil {
				// Same series twice (should not happen): add them up.
				if h = mergeHists([]*hist{old, h}); h == nil {
					return nil, fmt.Errorf("%s%s: listed twice with different buckets", metricDuration, labelText(l))
				}
			}
			s.Durations[k] = h
		}
	}
	return s, nil
}

func labels(m *dto.Metric) map[string]string {
	out := make(map[string]string, len(m.GetLabel()))
	for _, lp := range m.GetLabel() {
		out[lp.GetName()] = lp.GetValue()
	}
	return out
}

func labelText(l map[string]string) string {
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b bytes.Buffer
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%q", k, l[k])
	}
	b.WriteByte('}')
	return b.String()
}

// pairOf reads the source and destination labels. source_service is
// "namespace/name" in the proxy's metrics; a bare name is qualified with
// the source namespace so both forms print the same.
func pairOf(l map[string]string) pair {
	p := pair{SrcNS: l[labelSrcNS], SrcSA: l[labelSrcSA], SrcSvc: l[labelSrcSvc], DstNS: l[labelDstNS], DstSvc: l[labelDstSvc]}
	if p.SrcSvc != "" && !strings.Contains(p.SrcSvc, "/") && p.SrcNS != "" {
		p.SrcSvc = p.SrcNS + "/" + p.SrcSvc
	}
	return p
}

func value(f *dto.MetricFamily, m *dto.Metric) float64 {
	switch f.GetType() {
	case dto.MetricType_COUNTER:
		return m.GetCounter().GetValue()
	case dto.MetricType_GAUGE:
		return m.GetGauge().GetValue()
	case dto.MetricType_UNTYPED:
		return m.GetUntyped().GetValue()
	}
	return 0
}

// histOf converts a parsed histogram to cumulative counts ending in +Inf.
func histOf(h *dto.Histogram) (*hist, error) {
	if h == nil {
		return nil, fmt.Errorf("no histogram value")
	}
	total := float64(h.GetSampleCount())
	if h.GetSampleCountFloat() != 0 {
		total = h.GetSampleCountFloat()
	}
	out := &hist{}
	for _, b := range h.GetBucket() {
		c := float64(b.GetCumulativeCount())
		if b.GetCumulativeCountFloat() != 0 {
			c = b.GetCumulativeCountFloat()
		}
		ub := b.GetUpperBound()
		if math.IsNaN(ub) {
			return nil, fmt.Errorf("bucket bound is NaN")
		}
		out.Bounds = append(out.Bounds, ub)
		out.Counts = append(out.Counts, c)
	}
	idx := make([]int, len(out.Bounds))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return out.Bounds[idx[a]] < out.Bounds[idx[b]] })
	bs, cs := make([]float64, 0, len(idx)+1), make([]float64, 0, len(idx)+1)
	for _, i := range idx {
		if len(bs) > 0 && bs[len(bs)-1] == out.Bounds[i] {
			return nil, fmt.Errorf("bucket le=%g listed twice", out.Bounds[i])
		}
		bs, cs = append(bs, out.Bounds[i]), append(cs, out.Counts[i])
	}
	if len(bs) == 0 || !math.IsInf(bs[len(bs)-1], 1) {
		bs, cs = append(bs, math.Inf(1)), append(cs, total)
	}
	out.Bounds, out.Counts = bs, cs
	return out, nil
}

// deltaHist is cur - prev, or cur when the series was reset in between
// (a count went down or the buckets changed).
func deltaHist(prev, cur *hist) *hist {
	if prev == nil || !sameBounds(prev, cur) {
		return cur
	}
	d := &hist{Bounds: cur.Bounds, Counts: make([]float64, len(cur.Counts))}
	for i := range cur.Counts {
		d.Counts[i] = cur.Counts[i] - prev.Counts[i]
		if d.Counts[i] < 0 {
			return cur
		}
	}
	return d
}

func sameBounds(a, b *hist) bool {
	if len(a.Bounds) != len(b.Bounds) {
		return false
	}
	for i := range a.Bounds {
		if a.Bounds[i] != b.Bounds[i] {
			return false
		}
	}
	return true
}

// mergeHists adds histograms up. When their buckets differ (proxies of
// different versions) only the bounds every one has are kept, where the
// cumulative counts are still exact. nil for no input.
func mergeHists(hs []*hist) *hist {
	var live []*hist
	for _, h := range hs {
		if h != nil && len(h.Bounds) > 0 {
			live = append(live, h)
		}
	}
	if len(live) == 0 {
		return nil
	}
	common := append([]float64(nil), live[0].Bounds...)
	for _, h := range live[1:] {
		if sameBounds(live[0], h) {
			continue
		}
		has := map[float64]bool{}
		for _, b := range h.Bounds {
			has[b] = true
		}
		kept := common[:0]
		for _, b := range common {
			if has[b] {
				kept = append(kept, b)
			}
		}
		common = kept
	}
	out := &hist{Bounds: common, Counts: make([]float64, len(common))}
	for _, h := range live {
		j := 0
		for i, b := range h.Bounds {
			if j < len(common) && b == common[j] {
				out.Counts[j] += h.Counts[i]
				j++
			}
		}
	}
	return out
}

// quantile estimates the q-quantile of h as Prometheus's
// histogram_quantile does: find the bucket holding rank q*total and
// interpolate linearly within it, assuming the bucket starts at 0 when it
// is the first one. A rank in the +Inf bucket returns the highest finite
// bound. NaN when h has no observations or no finite bucket.
func quantile(q float64, h *hist) float64 {
	if h == nil || len(h.Bounds) < 2 || !math.IsInf(h.Bounds[len(h.Bounds)-1], 1) {
		return math.NaN()
	}
	switch {
	case q < 0:
		return math.Inf(-1)
	case q > 1:
		return math.Inf(1)
	}
	// Counts are cumulative; a scrape racing an observation can leave
	// them a little out of order, which Prometheus also irons out.
	counts := append([]float64(nil), h.Counts...)
	for i := 1; i < len(counts); i++ {
		if counts[i] < counts[i-1] {
			counts[i] = counts[i-1]
		}
	}
	total := counts[len(counts)-1]
	if total == 0 || math.IsNaN(total) {
		return math.NaN()
	}
	rank := q * total
	b := sort.Search(len(counts)-1, func(i int) bool { return counts[i] >= rank })
	if b == len(counts)-1 {
		return h.Bounds[len(h.Bounds)-2]
	}
	if b == 0 && h.Bounds[0] <= 0 {
		return h.Bounds[0]
	}
	start, end, count := 0.0, h.Bounds[b], counts[b]
	if b > 0 {
		start = h.Bounds[b-1]
		count -= counts[b-1]
		rank -= counts[b-1]
	}
	if count == 0 {
		return end
	}
	return start + (end-start)*(rank/count)
}
