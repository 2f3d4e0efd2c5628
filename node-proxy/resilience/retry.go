package resilience

import (
	"context"
	"math/rand/v2"
	"net/http"
	"sync/atomic"
	"time"

	retryablehttp "github.com/hashicorp/go-retryablehttp"

	"github.com/trellis-mesh/trellis/node-proxy/config"
	"github.com/trellis-mesh/trellis/node-proxy/proxyerr"
)

// Retry is a compiled retry policy for one service.
type Retry struct {
	Attempts     int
	PerTry       time.Duration
	MaxBodyBytes int64
	on           [10]uint64 // bit per status 0-639: retried statuses
	base, max    time.Duration
	// Check and Backoff use go-retryablehttp's policy shapes so they can be
	// swapped for its stock policies.
	Check   retryablehttp.CheckRetry
	Backoff retryablehttp.Backoff
	Budget  *Budget
}

// NewRetry compiles cfg. Without a retry policy (nil) a Service still
// gets one: a second try, on another endpoint, of an idempotent request
// whose connection failed (refused, reset, or a connect timeout) before an
// answer, within a 20% retry budget. Such a failure says nothing about the
// request, only about the endpoint (a pod going away, a node cut off), and
// a client could not tell it from a failure of the Service. Statuses are
// not retried unless configured.
func NewRetry(cfg *config.Retries) *Retry {
	if cfg == nil {
		r := &Retry{Attempts: 2, MaxBodyBytes: 64 << 10, base: 25 * time.Millisecond, max: 250 * time.Millisecond,
			Budget: NewBudget(0.2, 10), Backoff: ExponentialJitter}
		r.Check = r.checkRetry
		return r
	}
	r := &Retry{Attempts: 1}
	r.Attempts = int(cfg.Attempts)
	r.PerTry = cfg.PerTryTimeout.D()
	r.MaxBodyBytes = cfg.MaxBodyBytes
	if r.MaxBodyBytes == 0 {
		r.MaxBodyBytes = 64 << 10
	}
	on := cfg.On
	if len(on) == 0 {
		on = []int32{502, 503, 504}
	}
	for _, c := range on {
		r.on[c/64] |= 1 << (c % 64)
	}
	r.base, r.max = cfg.BackoffBase.D(), cfg.BackoffMax.D()
	if r.base == 0 {
		r.base = 25 * time.Millisecond
	}
	if r.max == 0 {
		r.max = 250 * time.Millisecond
	}
	if r.max < r.base {
		r.max = r.base
	}
	budget := cfg.Budget
	if budget == 0 {
		budget = 0.2
	}
	r.Budget = NewBudget(budget, 10)
	r.Check = r.checkRetry
	r.Backoff = ExponentialJitter
	return r
}

// checkRetry is a retryablehttp.CheckRetry: retry on connection failures,
// per-try timeouts and the configured statuses; never once the overall
// context is done.
func (r *Retry) checkRetry(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	if err != nil {
		switch proxyerr.Classify(err) {
		case proxyerr.Refused, proxyerr.Reset, proxyerr.Timeout:
			return true, nil
		}
		return false, err
	}
	if resp != nil && resp.StatusCode > 0 && resp.StatusCode < 600 && r.on[resp.StatusCode/64]&(1<<(resp.StatusCode%64)) != 0 {
		return true, nil
	}
	return false, nil
}

// ExponentialJitter is a retryablehttp.Backoff: "full jitter" exponential
// backoff, a uniform random wait in [0, min(max, min·2^attempt)).
func ExponentialJitter(min, max time.Duration, attempt int, _ *http.Response) time.Duration {
	d := min
	for i := 0; i < attempt && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	if d <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(d))) + 1
}

// Attempt describes one finished try, for Decide.
type Attempt struct {
	N          int // 1-based number of the try that just finished
	Resp       *http.Response
	Err        error
	Replayable bool // the body can be sent again
	Idempotent bool // the method may be repeated
}

// Decide is the single retry decision: whether to try again and after
// what wait. A retry needs a replayable body, an idempotent method (or a
// failure before anything was sent), attempts left, CheckRetry's yes, and a
// token from the budget.
func (r *Retry) Decide(ctx context.Context, a Attempt) (bool, time.Duration) {
	if r == nil || a.N >= r.Attempts || !a.Replayable {
		return false, 0
	}
	if !a.Idempotent && !(a.Err != nil && proxyerr.IsDialError(a.Err)) {
		return false, 0
	}
	ok, _ := r.Check(ctx, a.Resp, a.Err)
	if !ok || !r.Budget.Withdraw() {
		return false, 0
	}
	return true, r.Backoff(r.base, r.max, a.N-1, a.Resp)
}

// Idempotent reports whether method may be repeated (RFC 9110 9.2.2).
func Idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// Budget bounds retries to a ratio of requests: every request deposits
// ratio tokens, every retry withdraws one, the balance is capped. Over any
// period retries ≤ ratio × requests + cap, so retries add at most ratio
// extra load, however many attempts the policy allows.
type Budget struct {
	milli   atomic.Int64 // balance in thousandths of a token
	deposit int64
	cap     int64
}

// NewBudget returns a budget with ratio and an initial/maximum balance of
// reserve tokens (so a quiet service can still retry a little).
func NewBudget(ratio float64, reserve int) *Budget {
	b := &Budget{deposit: int64(ratio * 1000), cap: int64(reserve) * 1000}
	b.milli.Store(b.cap)
	return b
}

// Deposit records one request.
func (b *Budget) Deposit() {
	if b == nil {
		return
	}
	if v := b.milli.Add(b.deposit); v > b.cap {
		b.milli.CompareAndSwap(v, b.cap)
	}
}

// Withdraw takes a token for one retry; false when the budget is spent.
func (b *Budget) Withdraw() bool {
	if b == nil {
		return false
	}
	for {
		v := b.milli.Load()
		if v < 1000 {
			return false
		}
		if b.milli.CompareAndSwap(v, v-1000) {
			return true
		}
	}
}
