package balance

import (
	"math/rand/v2"
	"net/netip"
	"sync/atomic"
	"time"
)

// State is the live health of one pod address. It is shared by every Pool
// that contains the address and carried over across config reloads.
type State struct {
	inflight     atomic.Int64
	fails        atomic.Int32 // consecutive failures
	ejections    atomic.Int32 // times ejected, drives the growing interval
	ejectedUntil atomic.Int64 // unix nanos; 0 = not ejected
}

// Inflight is the number of outstanding requests/connections.
func (s *State) Inflight() int64 { return s.inflight.Load() }

// Ejected reports whether the endpoint is ejected at now (unix nanos).
func (s *State) Ejected(now int64) bool { return s.ejectedUntil.Load() > now }

// Endpoint is one pod address in one Pool.
type Endpoint struct {
	Addr     netip.AddrPort
	HostPort string // Addr.String(), precomputed for URLs
	Node     string
	Zone     string
	Ready    bool
	*State
}

// Outlier is the ejection policy of a Pool.
type Outlier struct {
	Consecutive       int32 // failures in a row that eject; <= 0 disables
	Base, Max         time.Duration
	MaxEjectedPercent int32
}

// Pool is the immutable set of endpoints of one (service, port).
type Pool struct {
	all     []*Endpoint
	tiers   [3][]*Endpoint // preference order; empty tiers skipped
	outlier Outlier
	// OnEject, when set, is called (synchronously, rarely) when an endpoint
	// is ejected, for metrics and logs.
	OnEject func(e *Endpoint, d time.Duration)
}

// NewPool builds a Pool. When localZone is non-empty the first tier holds
// ready endpoints in that zone, the second the other ready ones; not-ready
// endpoints come last and get traffic only when nothing else is eligible.
func NewPool(eps []*Endpoint, localZone string, o Outlier) *Pool {
	p := &Pool{all: eps, outlier: o}
	for _, e := range eps {
		switch {
		case e.Ready && localZone != "" && e.Zone == localZone:
			p.tiers[0] = append(p.tiers[0], e)
		case e.Ready:
			p.tiers[1] = append(p.tiers[1], e)
		default:
			p.tiers[2] = append(p.tiers[2], e)
		}
	}
	return p
}

// Len is the number of endpoints.
func (p *Pool) Len() int { return len(p.all) }

// Endpoints returns the endpoints (read-only).
func (p *Pool) Endpoints() []*Endpoint { return p.all }

// Pick chooses an endpoint, avoiding avoid (the one that just failed) when
// another is eligible. It returns nil only when the pool is empty. When all
// endpoints are ejected it ignores ejection (better a likely failure than a
// certain one) and picks among the ready, then the rest.
func (p *Pool) Pick(now int64, avoid *Endpoint) *Endpoint {
	for i := range p.tiers {
		if e := pickTier(p.tiers[i], now, avoid); e != nil {
			return e
		}
	}
	if avoid != nil {
		// Only the avoided endpoint is eligible: use it rather than fail.
		for i := range p.tiers {
			for _, e := range p.tiers[i] {
				if e == avoid && !e.Ejected(now) {
					return e
				}
			}
		}
	}
	// Panic mode: everything ejected.
	for i := range p.tiers {
		if t := p.tiers[i]; len(t) > 0 {
			return p2c(t)
		}
	}
	return nil
}

func eligible(e *Endpoint, now int64, avoid *Endpoint) bool {
	return e != avoid && !e.Ejected(now)
}

func pickTier(t []*Endpoint, now int64, avoid *Endpoint) *Endpoint {
	n := len(t)
	switch n {
	case 0:
		return nil
	case 1:
		if eligible(t[0], now, avoid) {
			return t[0]
		}
		return nil
	}
	i := rand.IntN(n)
	j := rand.IntN(n - 1)
	if j >= i {
		j++
	}
	a, b := t[i], t[j]
	ea, eb := eligible(a, now, avoid), eligible(b, now, avoid)
	switch {
	case ea && eb:
		if b.inflight.Load() < a.inflight.Load() {
			return b
		}
		return a
	case ea:
		return a
	case eb:
		return b
	}
	// Both samples ineligible: scan from a random start.
	for k := 0; k < n; k++ {
		if e := t[(i+k)%n]; eligible(e, now, avoid) {
			return e
		}
	}
	return nil
}

func p2c(t []*Endpoint) *Endpoint {
	if len(t) == 1 {
		return t[0]
	}
	i := rand.IntN(len(t))
	j := rand.IntN(len(t) - 1)
	if j >= i {
		j++
	}
	if t[j].inflight.Load() < t[i].inflight.Load() {
		return t[j]
	}
	return t[i]
}

// Start marks a request or connection to e as outstanding.
func Start(e *Endpoint) { e.inflight.Add(1) }

// Finish ends what Start began.
func Finish(e *Endpoint) { e.inflight.Add(-1) }

// Report records the outcome of one request or connection attempt to e
// (failure means connect error, reset, timeout or a gateway 5xx) and ejects
// e after Outlier.Consecutive failures in a row, for Base doubled per past
// ejection up to Max, unless that would eject more than MaxEjectedPercent.
// It returns the ejection duration, 0 if e was not ejected.
func (p *Pool) Report(e *Endpoint, success bool, now int64) time.Duration {
	o := p.outlier
	if success {
		if e.fails.Load() != 0 {
			e.fails.Store(0)
		}
		// Forget past ejections once the pod has been back for Max.
		if until := e.ejectedUntil.Load(); until != 0 && now-until > int64(o.Max) {
			e.ejections.Store(0)
			e.ejectedUntil.Store(0)
		}
		return 0
	}
	if o.Consecutive <= 0 {
		return 0
	}
	if e.fails.Add(1) < o.Consecutive || e.Ejected(now) {
		return 0
	}
	ejected := 0
	for _, x := range p.all {
		if x.Ejected(now) {
			ejected++
		}
	}
	if (ejected+1)*100 > int(o.MaxEjectedPercent)*len(p.all) {
		return 0
	}
	n := e.ejections.Add(1)
	d := o.Base
	for k := int32(1); k < n && d < o.Max; k++ {
		d *= 2
	}
	if d > o.Max {
		d = o.Max
	}
	old := e.ejectedUntil.Load()
	if old > now || !e.ejectedUntil.CompareAndSwap(old, now+int64(d)) {
		return 0 // another goroutine ejected it first
	}
	e.fails.Store(0)
	if p.OnEject != nil {
		p.OnEject(e, d)
	}
	return d
}

// Split chooses among weighted choices.
type Split[T any] struct {
	choices []T
	cum     []uint32 // cumulative weights
	total   uint32
}

// NewSplit returns a weighted chooser. Choices with weight 0 are never
// chosen. total must be > 0.
func NewSplit[T any](choices []T, weights []uint32) *Split[T] {
	s := &Split[T]{choices: choices, cum: make([]uint32, len(weights))}
	for i, w := range weights {
		s.total += w
		s.cum[i] = s.total
	}
	return s
}

// Choose returns a choice with probability weight/total.
func (s *Split[T]) Choose() T {
	r := rand.Uint32N(s.total)
	for i, c := range s.cum {
		if r < c {
			return s.choices[i]
		}
	}
	return s.choices[len(s.choices)-1]
}

// Choices returns the choices in order.
func (s *Split[T]) Choices() []T { return s.choices }
