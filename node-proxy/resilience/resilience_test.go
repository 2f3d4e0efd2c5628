package resilience

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/node-proxy/config"
)

func dialErr(t *testing.T) error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, err = net.Dial("tcp", addr)
	if err == nil {
		t.Fatal("dial to a closed port succeeded")
	}
	return err
}

func TestDecide(t *testing.T) {
	refused := dialErr(t)
	r503 := &http.Response{StatusCode: 503}
	r500 := &http.Response{StatusCode: 500}
	cases := []struct {
		name string
		a    Attempt
		want bool
	}{
		{"GET 503 retried", Attempt{N: 1, Resp: r503, Replayable: true, Idempotent: true}, true},
		{"GET 500 not in list", Attempt{N: 1, Resp: r500, Replayable: true, Idempotent: true}, false},
		{"POST 503 not idempotent", Attempt{N: 1, Resp: r503, Replayable: true}, false},
		{"POST refused dial is safe", Attempt{N: 1, Err: refused, Replayable: true}, true},
		{"GET body not replayable", Attempt{N: 1, Resp: r503, Idempotent: true}, false},
		{"attempts exhausted", Attempt{N: 3, Resp: r503, Replayable: true, Idempotent: true}, false},
		{"GET timeout retried", Attempt{N: 2, Err: context.DeadlineExceeded, Replayable: true, Idempotent: true}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := NewRetry(&config.Retries{Attempts: 3})
			got, wait := r.Decide(context.Background(), tc.a)
			if got != tc.want {
				t.Fatalf("Decide = %v, want %v", got, tc.want)
			}
			if got && (wait <= 0 || wait > 250*time.Millisecond) {
				t.Fatalf("backoff %v outside (0, 250ms]", wait)
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if ok, _ := NewRetry(&config.Retries{Attempts: 3}).Decide(ctx, Attempt{N: 1, Resp: r503, Replayable: true, Idempotent: true}); ok {
		t.Fatal("retried after the request context ended")
	}
	var none *Retry
	if ok, _ := none.Decide(context.Background(), Attempt{N: 1, Resp: r503, Replayable: true, Idempotent: true}); ok {
		t.Fatal("nil policy retried")
	}
}

func TestBudgetBoundsRetries(t *testing.T) {
	r := NewRetry(&config.Retries{Attempts: 10, Budget: 0.2})
	retries := 0
	const requests = 10000
	for i := 0; i < requests; i++ {
		r.Budget.Deposit()
		// Every try fails: without a budget this would be 9 retries each.
		for n := 1; ; n++ {
			ok, _ := r.Decide(context.Background(), Attempt{N: n, Resp: &http.Response{StatusCode: 503}, Replayable: true, Idempotent: true})
			if !ok {
				break
			}
			retries++
		}
	}
	if max := requests/5 + 10; retries > max || retries < requests/5-10 {
		t.Fatalf("%d retries for %d requests, want about %d", retries, requests, max)
	}
}

func TestExponentialJitter(t *testing.T) {
	for attempt := 0; attempt < 10; attempt++ {
		limit := 10 * time.Millisecond << attempt
		if limit > time.Second {
			limit = time.Second
		}
		for i := 0; i < 200; i++ {
			d := ExponentialJitter(10*time.Millisecond, time.Second, attempt, nil)
			if d <= 0 || d > limit {
				t.Fatalf("attempt %d: wait %v outside (0, %v]", attempt, d, limit)
			}
		}
	}
}

func TestBreakerConsecutive(t *testing.T) {
	b := NewBreaker(&config.CircuitBreaker{ConsecutiveFailures: 3, OpenFor: config.Duration(time.Second)})
	var states []BreakerState
	b.OnChange = func(s BreakerState) { states = append(states, s) }
	now := time.Unix(1000, 0)
	for i := 0; i < 3; i++ {
		if !b.Allow(now) {
			t.Fatalf("rejected while closed (i=%d)", i)
		}
		b.Done(Failure, now)
	}
	if b.State() != Open || b.Allow(now) {
		t.Fatal("breaker should be open after 3 failures")
	}
	now = now.Add(time.Second)
	if !b.Allow(now) {
		t.Fatal("no probe after openFor")
	}
	if b.Allow(now) {
		t.Fatal("second concurrent probe admitted in half-open")
	}
	b.Done(Failure, now)
	if b.State() != Open {
		t.Fatal("failed probe must reopen")
	}
	now = now.Add(time.Second)
	b.Allow(now)
	b.Done(Success, now)
	if b.State() != Closed || !b.Allow(now) {
		t.Fatal("successful probe must close")
	}
	if want := []BreakerState{Open, HalfOpen, Open, HalfOpen, Closed}; len(states) != len(want) {
		t.Fatalf("transitions %v, want %v", states, want)
	}
}

func TestBreakerRatio(t *testing.T) {
	b := NewBreaker(&config.CircuitBreaker{FailureRatio: 0.5, MinRequests: 10})
	now := time.Unix(1000, 0)
	for i := 0; i < 9; i++ { // alternate: 50% but below MinRequests
		b.Allow(now)
		b.Done(Outcome(i%2), now)
	}
	if b.State() != Closed {
		t.Fatal("opened below minRequests")
	}
	b.Allow(now)
	b.Done(Failure, now) // 10 requests, 5 failures
	if b.State() != Open {
		t.Fatal("should open at ratio 0.5 with 10 requests")
	}
	var nilB *Breaker
	if !nilB.Allow(now) {
		t.Fatal("nil breaker must admit")
	}
}

// TestDefaultRetry: a Service without a retry policy retries an idempotent
// request once after a connection failure, and nothing else.
func TestDefaultRetry(t *testing.T) {
	refused := dialErr(t)
	cases := []struct {
		name string
		a    Attempt
		want bool
	}{
		{"GET refused", Attempt{N: 1, Err: refused, Replayable: true, Idempotent: true}, true},
		{"GET connect timeout", Attempt{N: 1, Err: context.DeadlineExceeded, Replayable: true, Idempotent: true}, true},
		{"POST refused before sending", Attempt{N: 1, Err: refused, Replayable: true}, true},
		{"GET 503 is an answer", Attempt{N: 1, Resp: &http.Response{StatusCode: 503}, Replayable: true, Idempotent: true}, false},
		{"one retry only", Attempt{N: 2, Err: refused, Replayable: true, Idempotent: true}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got, _ := NewRetry(nil).Decide(context.Background(), tc.a); got != tc.want {
				t.Fatalf("Decide = %v, want %v", got, tc.want)
			}
		})
	}
	// The default policy has its own budget per Service: retries stay
	// within 20% of requests even when every request fails.
	r := NewRetry(nil)
	retried := 0
	for range 1000 {
		r.Budget.Deposit()
		if ok, _ := r.Decide(context.Background(), Attempt{N: 1, Err: refused, Replayable: true, Idempotent: true}); ok {
			retried++
		}
	}
	if retried > 220 {
		t.Fatalf("%d retries for 1000 failing requests; the budget is 20%%", retried)
	}
}
