package watch

import (
	"context"
	"sync"
	"testing"
	"time"
)

func TestDebouncerCoalescesBursts(t *testing.T) {
	d := &Debouncer{Quiet: 30 * time.Millisecond, Max: time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runs := make(chan time.Time, 10)
	go d.Run(ctx, func(_ context.Context, since time.Time) { runs <- since })
	start := time.Now()
	for i := 0; i < 100; i++ {
		d.Nudge()
	}
	select {
	case since := <-runs:
		if since.Before(start) || since.After(time.Now()) {
			t.Errorf("since %v outside the burst", since)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no run after a burst")
	}
	select {
	case <-runs:
		t.Fatal("a burst of 100 nudges ran twice")
	case <-time.After(150 * time.Millisecond):
	}
	if d.Pending() != 0 {
		t.Error("nudge still pending after the run")
	}
}

func TestDebouncerMaxBoundsASteadyStream(t *testing.T) {
	d := &Debouncer{Quiet: 50 * time.Millisecond, Max: 200 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var at []time.Duration
	start := time.Now()
	go d.Run(ctx, func(context.Context, time.Time) {
		mu.Lock()
		at = append(at, time.Since(start))
		mu.Unlock()
	})
	// Nudge every 10ms for 1s: quiet never elapses, so only Max fires.
	tick := time.NewTicker(10 * time.Millisecond)
	for time.Since(start) < time.Second {
		<-tick.C
		d.Nudge()
	}
	tick.Stop()
	mu.Lock()
	defer mu.Unlock()
	if len(at) < 3 {
		t.Fatalf("runs at %v: a steady stream must still run every Max", at)
	}
	if at[0] > 400*time.Millisecond {
		t.Errorf("first run after %v, Max is 200ms", at[0])
	}
}
