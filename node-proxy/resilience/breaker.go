package resilience

import (
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/trellis-mesh/trellis/node-proxy/config"
)

// BreakerState is closed (passing), open (failing fast) or half-open
// (letting one probe through).
type BreakerState uint8

// Breaker states.
const (
	Closed BreakerState = iota
	Open
	HalfOpen
)

func (s BreakerState) String() string {
	return [...]string{"closed", "open", "half-open"}[s]
}

// Outcome of a request admitted by a Breaker.
type Outcome uint8

// Outcomes. Ignore is for requests that say nothing about the backend
// (the client went away).
const (
	Success Outcome = iota
	Failure
	Ignore
)

// Breaker is a circuit breaker. A nil *Breaker admits everything.
type Breaker struct {
	consecutive int32
	ratio       float64
	minReqs     int32
	window      time.Duration
	openFor     time.Duration

	mu          sync.Mutex
	state       BreakerState
	streak      int32
	winStart    time.Time
	reqs, fails int32
	openedAt    time.Time
	probing     bool
	// OnChange, when set, is called with the new state (under no lock).
	OnChange func(BreakerState)
}

// NewBreaker returns nil when cfg is nil.
func NewBreaker(cfg *config.CircuitBreaker) *Breaker {
	if cfg == nil {
		return nil
	}
	b := &Breaker{consecutive: cfg.ConsecutiveFailures, ratio: cfg.FailureRatio,
		minReqs: cfg.MinRequests, window: cfg.Window.D(), openFor: cfg.OpenFor.D()}
	if b.minReqs == 0 {
		b.minReqs = 20
	}
	if b.window == 0 {
		b.window = 10 * time.Second
	}
	if b.openFor == 0 {
		b.openFor = 5 * time.Second
	}
	return b
}

// Allow reports whether a request may go out now. Every true must be
// followed by exactly one Done.
func (b *Breaker) Allow(now time.Time) bool {
	if b == nil {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case Open:
		if now.Sub(b.openedAt) < b.openFor {
			return false
		}
		b.state = HalfOpen
		b.probing = true
		b.notify(HalfOpen)
		return true
	case HalfOpen:
		if b.probing {
			return false
		}
		b.probing = true
		return true
	}
	return true
}

// SetOnChange sets the state-change callback (safe while in use).
func (b *Breaker) SetOnChange(f func(BreakerState)) {
	if b == nil {
		return
	}
	b.mu.Lock()
	b.OnChange = f
	b.mu.Unlock()
}

// State is the current state.
func (b *Breaker) State() BreakerState {
	if b == nil {
		return Closed
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state
}

// Done records the outcome of an admitted request.
func (b *Breaker) Done(o Outcome, now time.Time) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state == HalfOpen {
		b.probing = false
		switch o {
		case Success:
			b.state, b.streak, b.reqs, b.fails, b.winStart = Closed, 0, 0, 0, now
			b.notify(Closed)
		case Failure:
			b.trip(now)
		}
		return
	}
	if b.state != Closed || o == Ignore {
		return
	}
	if now.Sub(b.winStart) > b.window {
		b.winStart, b.reqs, b.fails = now, 0, 0
	}
	b.reqs++
	if o == Success {
		b.streak = 0
		return
	}
	b.fails++
	b.streak++
	if b.consecutive > 0 && b.streak >= b.consecutive {
		b.trip(now)
		return
	}
	if b.ratio > 0 && b.reqs >= b.minReqs && float64(b.fails) >= b.ratio*float64(b.reqs)-1e-9 {
		b.trip(now)
	}
}

func (b *Breaker) trip(now time.Time) {
	b.state, b.openedAt, b.streak, b.reqs, b.fails = Open, now, 0, 0, 0
	b.notify(Open)
}

func (b *Breaker) notify(s BreakerState) {
	if b.OnChange != nil {
		f := b.OnChange
		// Called with the lock held only for a tiny callback (a gauge set).
		f(s)
	}
}

// NewLimiter returns a token bucket for cfg, nil when cfg is nil.
func NewLimiter(cfg *config.RateLimit) *rate.Limiter {
	if cfg == nil {
		return nil
	}
	burst := int(cfg.Burst)
	if burst == 0 {
		burst = int(math.Ceil(cfg.RPS))
	}
	return rate.NewLimiter(rate.Limit(cfg.RPS), burst)
}
