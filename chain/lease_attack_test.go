package chain

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// round delivers, on every link, a handshake, a send (with a grant),
// a frame and an acknowledgement, n times over, at the current time.
func (s *lsim) round(n int) {
	for range n {
		for _, name := range s.procNames() {
			for step := range 4 {
				if p := s.procs[name]; p != nil {
					p.hbeat = true
					s.pump(p, step)
				}
			}
		}
	}
}

// deliverViews gives every connected node the latest view.
func (s *lsim) deliverViews() {
	for _, name := range s.procNames() {
		if p := s.procs[name]; p != nil {
			s.deliverView(p)
		}
	}
}

// run lets d pass in steps of 50ms, delivering views and messages and
// reading key at every node that answers, after every step.
func (s *lsim) run(d time.Duration, key string) {
	for end := s.now.Add(d); s.now.Before(end); {
		s.advance(50 * time.Millisecond)
		s.deliverViews()
		s.round(3)
		s.read(key)
	}
}

// newLeaseChain starts a chain of n nodes with 4s sessions and 2s leases,
// linked, live and leased, with k=before acknowledged.
func newLeaseChain(t *testing.T, n int) (*lsim, []*lproc) {
	s := newLsim(t, 1, 4*time.Second, 2*time.Second)
	var ps []*lproc
	for range n {
		ps = append(ps, s.join())
		s.deliverViews()
		s.round(5)
	}
	s.writeAt(ps[0], "k", false)
	s.round(5)
	if _, ok := s.acked["k"]; !ok {
		t.Fatalf("write not acknowledged: %v", ps[0].m)
	}
	s.run(time.Second, "k")
	for _, p := range ps {
		if err := p.m.CanRead(s.now); err != nil {
			t.Fatalf("%s cannot read: %v (%v)", p.name, err, p.m)
		}
	}
	return s, ps
}

// writeAcked writes key at the head h until a write is acknowledged,
// letting time pass (and reading key everywhere) meanwhile.
func (s *lsim) writeAcked(h *lproc, key string, within time.Duration) {
	s.t.Helper()
	before := s.acked[key]
	for end := s.now.Add(within); s.now.Before(end); {
		s.event(h)
		s.writeAt(h, key, false)
		s.run(100*time.Millisecond, key)
		if a := s.acked[key]; a.seq > before.seq {
			return
		}
	}
	s.t.Fatalf("no write to %s acknowledged within %v: %v", key, within, h.m)
}

// TestLeaseCutMiddleAndTail is issue 16's scenario 1: A→B→C, B and C cut
// off ZooKeeper with the B–C link up; ZooKeeper expires them, and A goes
// on alone. Neither B nor C may answer a read without A's later writes.
func TestLeaseCutMiddleAndTail(t *testing.T) {
	s, ps := newLeaseChain(t, 3)
	a, b, c := ps[0], ps[1], ps[2]
	b.cut, c.cut = true, true
	s.run(5*time.Second, "k") // ZooKeeper expires B and C; A installs [A]
	if a.seen != s.view || len(s.zk) != 1 {
		t.Fatalf("view %v, A saw %d of %d", s.zk, a.seen, s.view)
	}
	s.writeAcked(a, "k", 5*time.Second)
	s.run(10*time.Second, "k") // B and C keep their link and views
	for _, p := range []*lproc{b, c} {
		if err := p.m.CanRead(s.now); err == nil {
			t.Fatalf("%s still answers reads 10s after it was dropped: %v", p.name, p.m)
		}
	}
}

// TestLeaseJoinAfterDroppedTail: A→B; B is cut off ZooKeeper and dropped,
// and A waits out its grant to B before committing alone. A node D that
// joins meanwhile must not let a write commit before that grant ran out:
// B answers reads on it.
func TestLeaseJoinAfterDroppedTail(t *testing.T) {
	s, ps := newLeaseChain(t, 2)
	a, b := ps[0], ps[1]
	b.cut = true
	for slices.Contains(s.zk, b.name) {
		s.advance(50 * time.Millisecond)
		s.round(3)
		s.read("k")
	}
	s.deliverViews() // A installs [A]: it waits for its grant to B to run out
	if err := b.m.CanRead(s.now); err != nil {
		t.Fatalf("B lost its lease already (%v): the test needs it", b.m)
	}
	s.join() // D joins: [A, D]
	s.deliverViews()
	s.round(5) // snapshot, hand-off
	s.writeAt(a, "k", false)
	s.round(5)
	s.read("k") // B still holds A's grant
	s.run(3*time.Second, "k")
}

// TestLeaseDrainReleasesDownstreamGrant: A→X→Y with Y cut off ZooKeeper.
// X keeps granting Y leases on its own session. X leaves gracefully: its
// acknowledgement releases A's grant to it, and A bypasses X at once.
// When ZooKeeper expires Y, A commits alone at once, though Y still
// holds the lease X granted it.
func TestLeaseDrainReleasesDownstreamGrant(t *testing.T) {
	s, ps := newLeaseChain(t, 3)
	a, x, y := ps[0], ps[1], ps[2]
	y.cut = true
	s.run(3*time.Second, "k") // X grants Y leases until past Y's expiry
	s.drain(x)
	for slices.Contains(s.zk, x.name) {
		s.advance(10 * time.Millisecond)
		s.round(2)
		s.maybeLeave(x)
		s.read("k")
	}
	s.deliverViews()
	for slices.Contains(s.zk, y.name) {
		s.advance(10 * time.Millisecond)
		s.round(2)
		s.read("k")
	}
	s.deliverViews() // A installs [A]
	s.writeAcked(a, "k", 3*time.Second)
	s.run(3*time.Second, "k")
}

// TestLeaseStaleAckAcrossHistories: A→B→C with A cut off ZooKeeper. A's
// write w reaches B, whose acknowledgement waits for C. ZooKeeper drops A;
// B leads and commits writes of its own under the sequence numbers that A,
// still believing it leads, gives to writes of its own (the lost ones).
// The acknowledgement B owed A for w must not tell A that those commit:
// an acknowledgement says at most "up to w", never B's later position,
// which counts writes of another history.
func TestLeaseStaleAckAcrossHistories(t *testing.T) {
	s, ps := newLeaseChain(t, 3)
	a, b, c := ps[0], ps[1], ps[2]
	a.cut = true
	s.event(a)
	s.writeAt(a, "k", false) // w
	s.pump(a, 1)             // A sends w
	s.pump(a, 2)             // B applies it; its acknowledgement waits for C
	for slices.Contains(s.zk, a.name) {
		s.advance(100 * time.Millisecond)
		s.zkTick()
	}
	s.deliverViews() // B leads: [B, C]
	if !b.m.IsHead() {
		t.Fatalf("B: %v", b.m)
	}
	s.event(a)
	s.writeAt(a, "lost", false) // A, cut off, still takes writes
	s.writeAt(a, "lost", false)
	s.event(b)
	s.writeAt(b, "x", false) // the same sequence numbers at B
	s.writeAt(b, "x", false)
	s.batch = 10 // w and B's writes go to C in one frame
	for range 5 {
		for _, p := range []*lproc{b, c} {
			for step := range 4 {
				s.pump(p, step)
			}
		}
	}
	for len(a.acks) > 0 {
		s.pump(a, 3) // B's acknowledgements reach A, the one of w last
	}
	if got, ok := s.acked["lost"]; ok {
		t.Fatalf("A acknowledged %q (seq %d), a write no other node has: %v; B %v", got.value, got.seq, a.m, b.m)
	}
	if _, ok := c.store.Table.Get("lost"); ok {
		t.Fatal("test broken: C has the lost write")
	}
}

// TestLeaseSnapshotToNewSuccessorDuringBypass: A→B, B cut off ZooKeeper.
// A's grants keep B answering reads; then the A→B link goes down with a
// write w applied at A and not at B. ZooKeeper expires B, and D joins. A
// snapshots D, w included, while its grant to B still runs: the hand-off
// that follows must not commit w before that grant ran out, though w
// never passes through Writes (which the bypass holds back).
func TestLeaseSnapshotToNewSuccessorDuringBypass(t *testing.T) {
	s, ps := newLeaseChain(t, 2)
	a, b := ps[0], ps[1]
	b.cut = true
	s.run(3*time.Second, "k") // A grants B leases until past B's expiry
	s.breakLink(a)
	s.writeAt(a, "k", false) // w: applied at A only
	for slices.Contains(s.zk, b.name) {
		s.advance(50 * time.Millisecond)
		s.read("k")
	}
	if err := b.m.CanRead(s.now); err != nil {
		t.Fatalf("B lost its lease already (%v): the test needs it", b.m)
	}
	s.join() // D: A installs [A, D]
	s.deliverViews()
	s.run(3*time.Second, "k") // snapshot, hand-off, heartbeats; B still reads
	if a, ok := s.acked["k"]; !ok || a.seq != s.valueSeq[fmt.Sprintf("v%d", s.val)] {
		t.Fatalf("w not acknowledged once B's lease ran out: %v", s.acked)
	}
}
