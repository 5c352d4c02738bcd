package chain

import (
	"testing"
	"time"

	"github.com/chaintable/chaintable/codec"
)

// fuzzyInstalled returns a Machine p, the successor of h, that installed
// a snapshot as of write 5 whose table is ahead to write 7 (key "ghost"
// holds what h's write 6 put), and got none of the writes after 5.
func fuzzyInstalled(t *testing.T) (m *Machine, h, p Member) {
	t.Helper()
	m = journalMachine("p")
	h, p = Member{Name: "h", Addr: "127.0.0.1:1"}, Member{Name: "p", Addr: "127.0.0.1:2"}
	if err := m.SetView([]Member{h, p}); err != nil {
		t.Fatal(err)
	}
	entries := []*codec.WriteT{{Op: codec.OpPut, Key: "a", Value: []byte("1")}, {Op: codec.OpPut, Key: "ghost", Value: []byte("6")}}
	if err := m.Snapshot("h", "p", true, entries, nil, &SnapshotEnd{At: Point{Seq: 5, Epoch: epochOf("h")}, AheadTo: 7}); err != nil {
		t.Fatal(err)
	}
	m.SetDurable(5)
	return m, h, p
}

// A node whose table is ahead of its seq from a fuzzy snapshot, whose
// predecessor then vanishes, is first in the view and may lead (no
// holders record, or after table_server -force-start): SetView makes it
// live (it answers reads, the chain counts it as its head and tail), yet
// it is not consistent and never will be, since no predecessor is left to
// send writes 6 and 7. It refuses every client write (ErrUnavailable)
// and every successor (SuccessorHello) for ever: the chain is stuck, with
// a head that says "wait" to every client. Either it must not lead, or
// leading must accept the table as it is (writes lost, as dataLost
// already says) and take writes.
func TestFuzzyInstallThenLeadTakesWrites(t *testing.T) {
	m, _, p := fuzzyInstalled(t)
	if err := m.SetView([]Member{p}); err != nil {
		t.Fatal(err)
	}
	if !m.Live() {
		return // not leading: the chain waits for a node that has the writes, as designed
	}
	m.Tick(time.Now())
	if err := m.CanWrite(); err != nil {
		t.Errorf("live head (DataLost=%v, applied %d, ahead to %d) refuses client writes for ever: %v", m.DataLost(), m.applied, m.aheadTo, err)
	}
	s := Member{Name: "s", Addr: "127.0.0.1:3"}
	if err := m.SetView([]Member{p, s}); err != nil {
		t.Fatal(err)
	}
	_, gen := m.Successor()
	if _, err := m.SuccessorHello(gen, HelloReply{}); err != nil {
		t.Errorf("live head refuses to feed a new successor for ever: %v", err)
	}
}

// Rejoin (the node's session expired while it waited for writes 6 and 7
// of a fuzzy snapshot) keeps the table and the seq, but forgets that the
// table is ahead of the seq: the rejoined node counts as consistent, so
// that, first in a view that lets it lead, it takes client writes at seq
// 6 and 7 on top of a table that already holds the old head's write 6
// under key "ghost", and its log (package durable), still waiting to
// append write 7 before it saves the snapshot and reports anything
// durable, sees the node's own writes reach 7 instead and saves. Rejoin
// must keep aheadTo (or the node must not count as consistent).
func TestRejoinKeepsFuzzyAheadTo(t *testing.T) {
	m, _, _ := fuzzyInstalled(t)
	m.Rejoin("p2")
	if !m.consistent() {
		return
	}
	if m.applied < 7 {
		t.Errorf("after Rejoin the node counts as consistent at %d, with a table ahead to 7", m.applied)
	}
}
