package serve

import (
	"sync"
	"time"

	"github.com/trellis-mesh/trellis/controller/compile"
)

// Hub holds the current compile result and wakes streams when it changes.
type Hub struct {
	mu      sync.Mutex
	cur     *compile.Result
	at      time.Time
	changed chan struct{}
}

// NewHub returns an empty hub (streams wait for the first Publish).
func NewHub() *Hub { return &Hub{changed: make(chan struct{})} }

// Publish makes r current and wakes every stream.
func (h *Hub) Publish(r *compile.Result) {
	h.mu.Lock()
	h.cur = r
	h.at = time.Now()
	close(h.changed)
	h.changed = make(chan struct{})
	h.mu.Unlock()
}

// Current returns the current result (nil before the first Publish), when
// it was published, and a channel closed at the next Publish.
func (h *Hub) Current() (*compile.Result, time.Time, <-chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cur, h.at, h.changed
}
