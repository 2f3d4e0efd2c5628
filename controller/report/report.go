package report

import (
	"sort"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/record"

	"github.com/trellis-mesh/trellis/smi"
)

// Event reasons.
const (
	ReasonInvalid = "TrellisInvalid" // the object, or part of it, is disabled
	ReasonWarning = "TrellisWarning" // applied, but probably not as meant
)

// Lookup finds the object a problem is about (nil when it is gone).
type Lookup func(smi.Ref) runtime.Object

// Reporter keeps the current problems.
type Reporter struct {
	Recorder record.EventRecorder
	gauge    *prometheus.GaugeVec

	mu       sync.Mutex
	current  []smi.Problem
	emitted  map[string]bool
	observed map[string]bool // emitted by Observe
}

// New registers trellis_config_errors with reg (nil: not registered).
func New(rec record.EventRecorder, reg prometheus.Registerer) *Reporter {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "trellis_config_errors",
		Help: "Problems found on user objects (annotations, SMI), by object and severity. An error disables the object or the part of it named in its Event.",
	}, []string{"kind", "namespace", "name", "severity"})
	if reg != nil {
		reg.MustRegister(g)
	}
	return &Reporter{Recorder: rec, gauge: g, emitted: map[string]bool{}, observed: map[string]bool{}}
}

// Observe emits, on any replica, Events for problems this replica observed
// itself (what the proxies connected to it reported), each once while it
// lasts. Problems found in the cluster's objects are the leader's to
// report (Update); an observation is only this replica's to make.
func (r *Reporter) Observe(ps []smi.Problem, lookup Lookup) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := map[string]bool{}
	for _, p := range ps {
		key := string(p.Severity) + " " + p.String()
		now[key] = true
		if !r.observed[key] {
			r.emit(p, lookup)
		}
	}
	r.observed = now
}

// emit records p as an Event on its object; r.mu is held.
func (r *Reporter) emit(p smi.Problem, lookup Lookup) {
	if r.Recorder == nil || lookup == nil {
		return
	}
	obj := lookup(p.Object)
	if obj == nil {
		return
	}
	reason, typ := ReasonWarning, corev1.EventTypeWarning
	if p.Severity == smi.Error {
		reason = ReasonInvalid
	}
	msg := p.String()
	if len(msg) > 1000 {
		msg = msg[:997] + "..."
	}
	r.Recorder.Event(obj, typ, reason, msg)
}

// Update replaces the current problems. With emit (the leader), each
// problem not emitted before as an Event is emitted on its object.
func (r *Reporter) Update(ps []smi.Problem, lookup Lookup, emit bool) {
	ps = append([]smi.Problem(nil), ps...)
	smi.SortProblems(ps)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.current = ps
	r.gauge.Reset()
	for _, p := range ps {
		r.gauge.WithLabelValues(string(p.Object.Kind), p.Object.Namespace, p.Object.Name, string(p.Severity)).Inc()
	}
	if !emit {
		r.emitted = map[string]bool{} // a new leader re-announces
		return
	}
	now := map[string]bool{}
	for _, p := range ps {
		key := string(p.Severity) + " " + p.String()
		now[key] = true
		if !r.emitted[key] {
			r.emit(p, lookup)
		}
	}
	r.emitted = now
}

// Problems returns the current problems, sorted.
func (r *Reporter) Problems() []smi.Problem {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]smi.Problem(nil), r.current...)
}

// Summary counts current problems by severity.
func (r *Reporter) Summary() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]int{}
	for _, p := range r.current {
		out[string(p.Severity)]++
	}
	return out
}

var _ = sort.Strings
