package store

import (
	"sync"
	"time"
)

// HLC is a hybrid logical clock: 48 bits of milliseconds since the Unix
// epoch and 16 bits of logical counter. It never goes backwards, observes
// every version it receives, and starts after the last value persisted.
type HLC struct {
	mu   sync.Mutex
	now  func() time.Time
	last uint64
}

// NewHLC returns a clock that starts after last.
func NewHLC(now func() time.Time, last uint64) *HLC {
	return &HLC{now: now, last: last}
}

func (c *HLC) physical() uint64 { return uint64(c.now().UnixMilli()) << 16 }

// Now returns a new timestamp, greater than every one returned or observed.
func (c *HLC) Now() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.physical()
	if p > c.last {
		c.last = p
	} else {
		c.last++
	}
	return c.last
}

// Observe moves the clock past a timestamp received from a peer.
func (c *HLC) Observe(t uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t > c.last {
		c.last = t
	}
}

// Last returns the latest timestamp issued or observed.
func (c *HLC) Last() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}
