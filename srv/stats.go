package srv

import (
	"sync/atomic"
	"time"
)

// Stats counts what a node does. All methods are safe for concurrent use
// and every counter is exact.
type Stats struct {
	ops     atomic.Int64
	nanos   atomic.Int64
	clients atomic.Int64
}

// recordOp counts one table operation that started at start.
func (s *Stats) recordOp(start time.Time) {
	s.ops.Add(1)
	s.nanos.Add(int64(time.Since(start)))
}

// Snapshot returns the operations executed, the microseconds spent in them
// and the connections open now.
func (s *Stats) Snapshot() (ops int64, micros int64, clients int64) {
	return s.ops.Load(), s.nanos.Load() / 1000, s.clients.Load()
}
