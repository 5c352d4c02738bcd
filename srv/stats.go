package srv

import (
	"math/bits"
	"sync/atomic"
	"time"

	"github.com/chaintable/chaintable/codec"
)

// Stats counts what a node does. All methods are safe for concurrent use
// and every counter is exact. Recording costs a few atomic additions and
// never allocates; everything else is left to whoever reads the counters.
type Stats struct {
	ops     atomic.Int64
	opTime  Pow2Histogram // nanoseconds per table operation
	clients atomic.Int64

	requests [len(RequestOps)][NumStatuses]atomic.Uint64
	opened   atomic.Uint64
	closed   [numCloseReasons]atomic.Uint64

	pauses    atomic.Uint64 // connections paused for backpressure, ever
	pausedNow atomic.Int64  // connections paused now
	heldBytes atomic.Int64  // reply and request bytes paused connections hold
}

// Backpressure returns how many times connections were paused because
// their clients did not read their replies (see Config.ReplyBudget), how
// many are paused now, and the bytes those hold: replies not yet read and
// requests not yet decoded, as of the last look at each.
func (s *Stats) Backpressure() (pauses uint64, pausedNow, heldBytes int64) {
	return s.pauses.Load(), s.pausedNow.Load(), s.heldBytes.Load()
}

// RecordOps counts n table operations that took d together: a batch of
// writes timed with one clock reading at each end rather than two per
// write. The time they took adds up exactly; the histogram counts each
// of them at the batch's mean.
func (s *Stats) RecordOps(n int, d time.Duration) {
	if n <= 0 {
		return
	}
	s.ops.Add(int64(n))
	s.opTime.ObserveN(uint64(n), uint64(max(d, 0)))
}

// Snapshot returns the operations executed, the microseconds spent in them
// and the connections open now.
func (s *Stats) Snapshot() (ops int64, micros int64, clients int64) {
	return s.ops.Load(), int64(s.opTime.sum.Load() / 1000), s.clients.Load()
}

// OpTime returns the histogram of the nanoseconds each table operation
// took.
func (s *Stats) OpTime() Pow2Buckets { return s.opTime.Snapshot() }

// Pow2Histogram counts values in buckets bounded by powers of two, at the
// cost of two atomic additions per value: bucket i holds the values below
// 2^i and at least 2^(i-1) (bucket 0 holds 0), and the last bucket also
// holds everything larger. The zero value is empty and ready to use.
type Pow2Histogram struct {
	buckets [NumPow2Buckets]atomic.Uint64
	sum     atomic.Uint64
}

// NumPow2Buckets is how many buckets a Pow2Histogram has: its last one
// starts at 2^38, over four minutes in nanoseconds.
const NumPow2Buckets = 40

// Pow2Buckets is a Pow2Histogram at one moment.
type Pow2Buckets struct {
	Counts [NumPow2Buckets]uint64 // values in each bucket
	Sum    uint64                 // of all values
}

// Observe counts v.
func (h *Pow2Histogram) Observe(v uint64) {
	h.buckets[min(bits.Len64(v), NumPow2Buckets-1)].Add(1)
	h.sum.Add(v)
}

// ObserveN counts n values, n > 0, that add up to sum, each as their
// mean.
func (h *Pow2Histogram) ObserveN(n, sum uint64) {
	h.buckets[min(bits.Len64(sum/n), NumPow2Buckets-1)].Add(n)
	h.sum.Add(sum)
}

// Snapshot returns the counts, bucket by bucket at slightly different
// moments under concurrent Observes.
func (h *Pow2Histogram) Snapshot() Pow2Buckets {
	var b Pow2Buckets
	for i := range b.Counts {
		b.Counts[i] = h.buckets[i].Load()
	}
	b.Sum = h.sum.Load()
	return b
}

// RequestOps are the client opcodes Stats counts requests of, in the order
// of Requests' rows; every other opcode is counted in the last row.
var RequestOps = [...]codec.MessageT_Opcode{
	codec.OpPut, codec.OpGet, codec.OpDel, codec.OpSize, codec.OpGetKeys, codec.OpGetTable, codec.OpStats, codec.MessageT_OP_BAD,
}

// NumStatuses is how many outcome statuses Stats tells apart: every
// codec.Status; an unknown one is counted as BAD_REQUEST.
const NumStatuses = int(codec.Status_STATUS_OUTCOME_UNKNOWN) + 1

// opRow returns op's row in requests: opcodes 10, 20, ... 70 are rows 0
// to 6, anything else the last.
func opRow(op codec.MessageT_Opcode) int {
	if op%10 == 0 && op >= codec.OpPut && op <= codec.OpStats {
		return int(op/10) - 1
	}
	return len(RequestOps) - 1
}

// CountRequest counts a client request of opcode op answered with status
// (STATUS_OK for a success). Whoever decides a request's outcome counts
// it, once.
func (s *Stats) CountRequest(op codec.MessageT_Opcode, status codec.Status) {
	if status < 0 || int(status) >= NumStatuses {
		status = codec.Status_STATUS_BAD_REQUEST
	}
	s.requests[opRow(op)][status].Add(1)
}

// Requests returns the requests counted, by RequestOps row and status.
func (s *Stats) Requests() (counts [len(RequestOps)][NumStatuses]uint64) {
	for i := range counts {
		for j := range counts[i] {
			counts[i][j] = s.requests[i][j].Load()
		}
	}
	return counts
}

// CloseReason says why a connection closed.
type CloseReason int32

// The reasons a server closes a connection, or sees it closed.
const (
	CloseByPeer    CloseReason = iota // the client closed it, or the network failed, or the server stopped
	CloseIdle                         // silent for Config.IdleTimeout
	CloseUnread                       // more than Config.MaxOutbound reply bytes left unread: backpressure
	CloseBadFrame                     // a frame above Config.MaxFrame, or one that cannot be split
	CloseOverLimit                    // opened while Config.MaxConns were open
	numCloseReasons
)

// String names the reason, as the metrics label it.
func (r CloseReason) String() string {
	return [...]string{"peer", "idle", "unread", "bad_frame", "max_conns"}[r]
}

// CloseReasons lists every CloseReason, in order.
var CloseReasons = [...]CloseReason{CloseByPeer, CloseIdle, CloseUnread, CloseBadFrame, CloseOverLimit}

// Connections returns the connections opened so far, and those closed,
// by reason.
func (s *Stats) Connections() (opened uint64, closed [numCloseReasons]uint64) {
	for i := range closed {
		closed[i] = s.closed[i].Load()
	}
	return s.opened.Load(), closed
}
