package cli

import (
	"context"
	"math/rand/v2"
	"sync"

	"github.com/chaintable/chaintable/codec"
)

// ids numbers the writes of one client id for exactly-once execution. Ids
// are given in the order writes go on the wire, and never DedupWindow or
// more above the first id not yet done, so the server holds the outcome
// of every write the client may still retry; each write tells the server
// that first id (first_unacked), so it may forget the outcomes below.
// A write is done when the client will not send it again: answered, or
// given up.
type ids struct {
	client uint64 // the client id

	mu       sync.Mutex
	next     uint64                  // the next request id to give
	first    uint64                  // the first id not yet done
	reserved int                     // writes waiting for an id
	done     [codec.DedupWindow]bool // done[id%DedupWindow], for ids from first to next
	moved    chan struct{}           // closed and replaced when room is made
}

func newIDs() *ids {
	return &ids{client: rand.Uint64() | 1, next: 1, first: 1, moved: make(chan struct{})}
}

// reserve waits until a write may take an id: one will be free for it
// when it is sent.
func (s *ids) reserve(ctx context.Context) error {
	for {
		s.mu.Lock()
		if s.next+uint64(s.reserved) < s.first+codec.DedupWindow {
			s.reserved++
			s.mu.Unlock()
			return nil
		}
		moved := s.moved
		s.mu.Unlock()
		select {
		case <-moved:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// stamp gives req the next id of a reservation, and the client's first
// unacknowledged id. It runs while req is being sent (see Conn.do).
func (s *ids) stamp(req *codec.MessageT) {
	s.mu.Lock()
	defer s.mu.Unlock()
	req.ClientId, req.RequestId, req.FirstUnacked = s.client, s.next, s.first
	s.next++
	s.reserved--
}

// restamp updates the first unacknowledged id of a retried write.
func (s *ids) restamp(req *codec.MessageT) {
	s.mu.Lock()
	defer s.mu.Unlock()
	req.FirstUnacked = s.first
}

// finish marks a write done: id, or its reservation if it never got one.
func (s *ids) finish(id uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if id == 0 {
		s.reserved--
	} else {
		s.done[id%codec.DedupWindow] = true
		for s.first < s.next && s.done[s.first%codec.DedupWindow] {
			s.done[s.first%codec.DedupWindow] = false
			s.first++
		}
	}
	close(s.moved)
	s.moved = make(chan struct{})
}
