package watch

import (
	"context"
	"sync"
	"time"
)

// Debouncer turns bursts of nudges into single runs: a run starts Quiet
// after the last nudge, or Max after the first nudge of a burst, whichever
// comes first. Nudges during a run cause one more run afterwards. Nudge
// never blocks, so it is safe in informer handlers.
type Debouncer struct {
	Quiet, Max time.Duration

	once sync.Once
	ch   chan struct{}
	mu   sync.Mutex
	// first is when the oldest unserved nudge arrived (zero: none).
	first time.Time
}

func (d *Debouncer) init() { d.once.Do(func() { d.ch = make(chan struct{}, 1) }) }

// Nudge asks for a run.
func (d *Debouncer) Nudge() {
	d.init()
	d.mu.Lock()
	if d.first.IsZero() {
		d.first = time.Now()
	}
	d.mu.Unlock()
	select {
	case d.ch <- struct{}{}:
	default:
	}
}

// Pending reports how long the oldest unserved nudge has waited.
func (d *Debouncer) Pending() time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.first.IsZero() {
		return 0
	}
	return time.Since(d.first)
}

// Run calls fn for each burst until ctx ends. fn gets the time the burst's
// first nudge arrived (for lag metrics).
func (d *Debouncer) Run(ctx context.Context, fn func(ctx context.Context, since time.Time)) {
	d.init()
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.ch:
		}
		d.mu.Lock()
		start := d.first
		d.mu.Unlock()
		deadline := start.Add(d.Max)
		quiet := time.NewTimer(d.Quiet)
	wait:
		for {
			until := time.Until(deadline)
			if until <= 0 {
				break
			}
			maxT := time.NewTimer(until)
			select {
			case <-ctx.Done():
				quiet.Stop()
				maxT.Stop()
				return
			case <-d.ch:
				maxT.Stop()
				if !quiet.Stop() {
					<-quiet.C
				}
				quiet.Reset(d.Quiet)
				continue
			case <-quiet.C:
				maxT.Stop()
				break wait
			case <-maxT.C:
				quiet.Stop()
				break wait
			}
		}
		d.mu.Lock()
		since := d.first
		d.first = time.Time{}
		d.mu.Unlock()
		fn(ctx, since)
	}
}
