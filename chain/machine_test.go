package chain

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/chaintable/chaintable/codec"
	"github.com/chaintable/chaintable/srv"
)

// sim runs Machines against each other in memory, message by message, so
// that a test chooses exactly which message is delivered when.
type sim struct {
	t     *testing.T
	rng   *rand.Rand
	nodes map[string]*simNode
	order []string // the view, head first
	seq   int      // for member names
	val   int      // for unique values

	lagViews bool                // deliver views to nodes one by one (deliverView)
	pending  map[string][]Member // views not yet delivered, by node

	acked    map[string]ackedWrite // key -> the acknowledged write with the highest seq
	valueSeq map[string]uint64     // value -> seq it was applied under
	observed map[string]uint64     // key -> the highest seq of a value a read returned

	requests       uint64 // the last request id given to the sim's client
	duringSnapshot func() // runs while a snapshot is read, after its point
}

// simClient is the client id of the sim's writes.
const simClient = 99

type ackedWrite struct {
	value string // "" for a del
	seq   uint64
}

type simNode struct {
	name  string
	m     *Machine
	store *srv.Store
	link  simLink // to the successor
}

type simLink struct {
	gen         uint64
	established bool
	next        uint64
	frames      []simFrame // in flight to the successor
	acks        []simAck   // in flight back
}

// simAck is an acknowledgement in flight, with the link generation of the
// connection it travels on: one from an older connection never arrives.
type simAck struct {
	gen uint64
	pos Position
}

type simFrame struct {
	writes []*codec.WriteT
	live   bool
}

var traceSim = false

// forever is a session lease that does not run out during a test.
var forever = time.Now().Add(100 * 365 * 24 * time.Hour)

func newSim(t *testing.T, seed uint64) *sim {
	return &sim{t: t, rng: rand.New(rand.NewPCG(seed, seed)), nodes: map[string]*simNode{}, pending: map[string][]Member{},
		acked: map[string]ackedWrite{}, valueSeq: map[string]uint64{}, observed: map[string]uint64{}}
}

func (s *sim) add() *simNode {
	s.seq++
	name := fmt.Sprintf("node%010d", s.seq)
	store, _ := srv.NewStore(4)
	n := &simNode{name: name, m: NewMachine(name, store, 0), store: store}
	n.m.SetSessionLease(forever)
	s.nodes[name] = n
	s.order = append(s.order, name)
	s.setViews()
	return n
}

func (s *sim) kill(name string) {
	if traceSim {
		s.t.Logf("kill %s", name)
	}
	delete(s.nodes, name)
	s.order = slices.DeleteFunc(s.order, func(n string) bool { return n == name })
	s.setViews()
}

func (s *sim) setViews() {
	var members []Member
	for _, name := range s.order {
		members = append(members, Member{Name: name, Addr: name})
	}
	for name, n := range s.nodes {
		if s.lagViews && len(n.m.members) > 0 {
			s.pending[name] = members
			continue
		}
		n.m.SetView(members)
	}
	s.drain()
}

// deliverView gives a node the newest view it has not seen yet.
func (s *sim) deliverView(name string) {
	if v, ok := s.pending[name]; ok && s.nodes[name] != nil {
		delete(s.pending, name)
		s.nodes[name].m.SetView(v)
		s.drain()
	}
}

// breakLink makes n's connection to its successor fail.
func (s *sim) breakLink(n *simNode) {
	_, gen := n.m.Successor()
	n.m.SuccessorLost(gen)
	n.link = simLink{}
	s.drain()
}

func (s *sim) head() *simNode { return s.nodes[s.order[0]] }
func (s *sim) tail() *simNode { return s.nodes[s.order[len(s.order)-1]] }

// simClientWaiter records a write as acknowledged once it commits.
type simClientWaiter struct {
	s     *sim
	key   string
	value string
	seq   uint64
	at    string // the head that took the write
}

func (w *simClientWaiter) Done(_ Position, err error) {
	if err != nil {
		return
	}
	if traceSim {
		w.s.t.Logf("acked %s=%s seq %d at %s", w.key, w.value, w.seq, w.at)
	}
	if a, ok := w.s.acked[w.key]; !ok || w.seq > a.seq {
		w.s.acked[w.key] = ackedWrite{w.value, w.seq}
	}
}

// simAckWaiter sends the successor's acknowledgement of a frame upstream.
type simAckWaiter struct {
	l   *simLink
	gen uint64
}

func (w simAckWaiter) Done(pos Position, err error) {
	if err == nil {
		w.l.acks = append(w.l.acks, simAck{w.gen, pos})
	}
}

func (s *sim) drain() {
	for _, n := range s.nodes {
		done, pos, failed := n.m.TakeDone()
		for _, w := range done {
			w.Done(pos, nil)
		}
		for _, w := range failed {
			w.Done(Position{}, ErrUnavailable)
		}
	}
}

// write sends a client write to a node that believes it is the head:
// with lagging views there may be several.
func (s *sim) write(key string, del bool) error {
	var heads []*simNode
	for _, name := range slices.Sorted(maps.Keys(s.nodes)) {
		if n := s.nodes[name]; n.m.IsHead() {
			heads = append(heads, n)
		}
	}
	if len(heads) == 0 {
		return ErrNotHead
	}
	h := heads[s.rng.IntN(len(heads))]
	s.val++
	value := fmt.Sprintf("v%d", s.val)
	op := codec.OpPut
	if del {
		op, value = codec.OpDel, ""
	}
	s.requests++
	w := &codec.WriteT{Op: op, Key: key, Value: []byte(value), ClientId: simClient, RequestId: s.requests}
	cw := &simClientWaiter{s: s, key: key, value: value, at: h.name}
	// The waiter learns its seq before it can be called: ClientWrite
	// assigns it, and calls happen only in drain.
	seq, _, err := h.m.ClientWrite(w)
	if err == nil {
		h.m.Await(seq, cw)
		cw.seq = seq
		if value != "" {
			s.valueSeq[value] = w.Seq
		}
	}
	s.drain()
	return err
}

// pump takes one step on n's link to its successor; it reports whether
// anything happened.
func (s *sim) pump(n *simNode, step int) bool {
	succ, gen := n.m.Successor()
	sn := s.nodes[succ.Name]
	l := &n.link
	if sn == nil {
		return false
	}
	if !l.established || l.gen != gen {
		*l = simLink{gen: gen}
		h, err := sn.m.Hello(n.name, succ.Name)
		if errors.Is(err, ErrStale) && s.lagViews {
			return false // views differ for now
		}
		if err != nil {
			s.t.Fatalf("hello %s->%s: %v", n.name, succ.Name, err)
		}
		act, err := n.m.SuccessorHello(gen, h)
		if err != nil {
			if errors.Is(err, ErrUnavailable) {
				return false
			}
			s.t.Fatalf("successor hello at %s: %v", n.name, err)
		}
		if act.Snapshot {
			// As a Node does: the records as of the snapshot point, the
			// table stripe by stripe while writes go on.
			dedup := n.m.DedupRecords()
			if s.duringSnapshot != nil {
				s.duringSnapshot()
			}
			var entries []*codec.WriteT
			for _, e := range n.store.Table.Entries() {
				entries = append(entries, &codec.WriteT{Op: codec.OpPut, Key: e.Key, Value: e.Value})
			}
			if err := sn.m.Snapshot(n.name, succ.Name, true, entries, dedup, &SnapshotEnd{At: Point{Seq: act.Next - 1, Epoch: act.Epoch}, AheadTo: n.m.Applied()}); err != nil {
				s.t.Fatalf("snapshot: %v", err)
			}
			if err := n.m.SuccessorAck(gen, sn.m.Position(), 0, false); err != nil {
				s.t.Fatalf("snapshot ack: %v", err)
			}
		}
		l.established, l.next = true, act.Next
		s.drain()
		return true
	}
	if traceSim {
		s.t.Logf("pump %s step %d: %v | succ %v", n.name, step%3, n.m, sn.m)
	}
	switch step % 3 {
	case 0:
		ws, live, err := n.m.Writes(gen, l.next, 1+s.rng.IntN(3))
		if err != nil {
			s.t.Fatalf("writes at %s: %v", n.name, err)
		}
		if len(ws) == 0 && !live {
			return false
		}
		l.frames = append(l.frames, simFrame{ws, live})
		if len(ws) > 0 {
			l.next = ws[len(ws)-1].Seq + 1
		}
	case 1:
		if len(l.frames) == 0 {
			return false
		}
		f := l.frames[0]
		l.frames = l.frames[1:]
		last, _, err := sn.m.Replicate(n.name, succ.Name, f.writes, f.live, codec.Grant{})
		if errors.Is(err, ErrStale) && s.lagViews {
			s.breakLink(n)
			return true
		}
		if err != nil {
			s.t.Fatalf("replicate %s->%s: %v", n.name, succ.Name, err)
		}
		if sn.m.Live() {
			sn.m.Await(last, simAckWaiter{l, gen})
		} else {
			l.acks = append(l.acks, simAck{gen, sn.m.Position()})
		}
	case 2:
		if len(l.acks) == 0 {
			return false
		}
		ack := l.acks[0]
		l.acks = l.acks[1:]
		if ack.gen != gen {
			return true // sent on a connection that is gone
		}
		if err := n.m.SuccessorAck(gen, ack.pos, 0, false); err != nil {
			s.t.Fatalf("ack at %s: %v", n.name, err)
		}
	}
	s.drain()
	return true
}

// settle delivers everything in flight until nothing moves.
func (s *sim) settle() {
	s.rejoinExpired()
	for _, name := range slices.Sorted(maps.Keys(s.pending)) {
		s.deliverView(name)
	}
	for range 100000 {
		moved := false
		for _, name := range s.order {
			for step := range 3 {
				if n := s.nodes[name]; n != nil && s.pump(n, step) {
					moved = true
				}
			}
		}
		if !moved {
			return
		}
	}
	s.t.Fatal("chain did not settle")
}

// survivable reports whether some node other than victim holds every
// acknowledged write: chain replication promises nothing when the last
// complete copy dies.
func (s *sim) survivable(victim string) bool {
	var need uint64
	for _, a := range s.acked {
		need = max(need, a.seq)
	}
	for _, name := range s.order {
		if n := s.nodes[name]; name != victim && n.m.synced && n.m.Applied() >= need {
			return true
		}
	}
	return false
}

// expire drops a live node from the chain, as ZooKeeper does when its
// session expires: the node keeps running on its old view until it sees
// the new one, then waits to rejoin.
func (s *sim) expire(name string) {
	if traceSim {
		s.t.Logf("expire %s", name)
	}
	// Its ZooKeeper lease ran out before ZooKeeper expired the session.
	s.nodes[name].m.SetSessionLease(time.Time{})
	s.order = slices.DeleteFunc(s.order, func(n string) bool { return n == name })
	s.setViews()
}

// rejoinExpired registers every expired node again under a new name.
func (s *sim) rejoinExpired() {
	for _, name := range slices.Sorted(maps.Keys(s.nodes)) {
		if slices.Contains(s.order, name) {
			continue
		}
		n := s.nodes[name]
		delete(s.nodes, name)
		delete(s.pending, name)
		s.seq++
		n.name = fmt.Sprintf("node%010d", s.seq)
		n.m.Rejoin(n.name)
		n.m.SetSessionLease(forever)
		n.link = simLink{}
		s.nodes[n.name] = n
		s.order = append(s.order, n.name)
		// The new member gets the current view at once, like a new node.
		var members []Member
		for _, o := range s.order {
			members = append(members, Member{Name: o, Addr: o})
		}
		n.m.SetView(members)
	}
	s.setViews()
}

// read reads key at every node that serves reads, as a client would: a
// clean key at once, a dirty one once the write it sees commits.
func (s *sim) read(key string) {
	for _, n := range s.nodes {
		if n.m.CanRead(time.Time{}) != nil {
			continue
		}
		v, found := n.store.Table.Get(key)
		r := &simRead{s: s, node: n.name, key: key, value: string(v), found: found, observed: s.observed[key]}
		r.acked, r.wasAcked = s.acked[key]
		if need := n.m.ReadNeed([]byte(key)); need != 0 {
			n.m.Await(need, r)
			continue
		}
		r.check()
	}
}

// simRead is a read taken at a node, with what it must not be older than:
// the acknowledged write and the newest value read when it was called.
type simRead struct {
	s         *sim
	node, key string
	value     string
	found     bool
	acked     ackedWrite
	wasAcked  bool
	observed  uint64
}

func (r *simRead) Done(_ Position, err error) {
	if err == nil {
		r.check()
	}
}

// check fails the test if the read went back in time: older than a write
// acknowledged, or than a value read, before it was called.
func (r *simRead) check() {
	s, a, seq := r.s, r.acked, r.s.valueSeq[r.value]
	switch {
	case r.found && seq < r.observed:
		s.t.Fatalf("read %s at %s = %q (seq %d), but a read before it returned seq %d", r.key, r.node, r.value, seq, r.observed)
	case !r.wasAcked:
	case a.value == "" && r.found && seq < a.seq:
		s.t.Fatalf("read %s at %s = %q, but a del at seq %d was acknowledged", r.key, r.node, r.value, a.seq)
	case a.value != "" && !r.found:
		// A later del, acknowledged or not, may have removed it.
	case a.value != "" && seq < a.seq:
		for _, name := range s.order {
			s.t.Log(s.nodes[name].m)
		}
		s.t.Fatalf("read %s at %s = %q (seq %d), but %q at seq %d was acknowledged", r.key, r.node, r.value, seq, a.value, a.seq)
	}
	if r.found {
		s.observed[r.key] = max(s.observed[r.key], seq)
	}
}

func (s *sim) checkConverged() {
	s.t.Helper()
	tail := s.tail()
	if err := tail.m.CanRead(time.Time{}); err != nil {
		s.t.Fatalf("settled tail %s cannot serve reads: %v (%v)", tail.name, err, tail.m)
	}
	if err := s.head().m.CanWrite(); err != nil {
		s.t.Fatalf("settled head cannot take writes: %v", err)
	}
	want := tail.store.Table.Entries()
	for _, n := range s.nodes {
		if got := n.store.Table.Entries(); !slices.EqualFunc(got, want, func(a, b srv.Entry) bool {
			return a.Key == b.Key && string(a.Value) == string(b.Value)
		}) {
			s.t.Fatalf("%s holds %v, tail %s holds %v", n.name, got, tail.name, want)
		}
		if n.m.Applied() != tail.m.Applied() || n.m.Committed() != n.m.Applied() {
			s.t.Fatalf("%s: %v; tail %v", n.name, n.m, tail.m)
		}
		if got, want := dedupState(n.m), dedupState(tail.m); !slices.Equal(got, want) {
			s.t.Fatalf("%s records %v, tail %s %v", n.name, got, tail.name, want)
		}
	}
	for key, a := range s.acked {
		v, found := tail.store.Table.Get(key)
		if a.value == "" {
			if found && s.valueSeq[string(v)] < a.seq {
				s.t.Fatalf("acknowledged del of %s at seq %d lost: tail has %q", key, a.seq, v)
			}
			continue
		}
		if !found && a.value != "" {
			continue // a later del removed it (checked by seq below when acked)
		}
		if s.valueSeq[string(v)] < a.seq {
			s.t.Fatalf("acknowledged put %s=%s at seq %d lost: tail has %q", key, a.value, a.seq, v)
		}
	}
}

// dedupState returns a node's exactly-once records in a canonical order.
func dedupState(m *Machine) []string {
	var recs []string
	for _, r := range m.DedupRecords() {
		recs = append(recs, fmt.Sprintf("%d/%d seq=%d found=%v digest=%x first=%d", r.ClientId, r.RequestId, r.Seq, r.Found, r.Digest, r.FirstUnacked))
	}
	slices.Sort(recs)
	return recs
}

func TestMachineSingleNode(t *testing.T) {
	s := newSim(t, 1)
	s.add()
	for i := range 10 {
		if err := s.write(fmt.Sprintf("k%d", i%3), i%4 == 3); err != nil {
			t.Fatal(err)
		}
	}
	if len(s.acked) != 3 {
		t.Fatalf("a single node must commit at once; acked %v", s.acked)
	}
	s.checkConverged()
}

func TestMachineThreeNodesCommitOnlyAtTail(t *testing.T) {
	s := newSim(t, 2)
	a := s.add()
	s.add()
	s.add()
	s.settle()
	if err := s.write("k", false); err != nil {
		t.Fatal(err)
	}
	if len(s.acked) != 0 {
		t.Fatal("write acknowledged before it reached the tail")
	}
	// Deliver the write down the chain but hold the acknowledgements.
	for _, name := range s.order {
		s.pump(s.nodes[name], 0)
		s.pump(s.nodes[name], 1)
	}
	if v, ok := s.tail().store.Table.Get("k"); !ok || len(s.acked) != 0 {
		t.Fatalf("tail has %q %v; acked %v", v, ok, s.acked)
	}
	// Every member serves reads, but one of a key with a write that is
	// not known committed must wait for it; other keys are clean.
	for _, name := range s.order {
		m := s.nodes[name].m
		tail := name == s.order[len(s.order)-1]
		if err := m.CanRead(time.Time{}); err != nil {
			t.Fatalf("%s cannot serve reads: %v", name, err)
		}
		if need := m.ReadNeed([]byte("k")); tail && need != 0 || !tail && need != 1 {
			t.Fatalf("read of the written key at %s needs write %d (%v)", name, need, m)
		}
		if need := m.ReadNeed([]byte("other")); need != 0 {
			t.Fatalf("read of a clean key at %s needs write %d", name, need)
		}
	}
	s.settle()
	if len(s.acked) != 1 || a.m.Committed() != 1 {
		t.Fatalf("after the acks: acked %v, head %v", s.acked, a.m)
	}
	if need := a.m.ReadNeed([]byte("k")); need != 0 {
		t.Fatalf("the head still waits for write %d once it committed", need)
	}
	s.checkConverged()
}

func TestMachineRetriedWriteAppliedOnce(t *testing.T) {
	s := newSim(t, 3)
	s.add()
	s.add()
	s.settle()
	h := s.head()
	put := func() (*codec.WriteT, error) {
		w := &codec.WriteT{Op: codec.OpDel, Key: "k", ClientId: 7, RequestId: 1}
		_, _, err := h.m.ClientWrite(w)
		return w, err
	}
	h.store.Table.Put("k", []byte("x")) // so the del finds it
	w1, _ := put()
	s.settle()
	seq, found, err := h.m.ClientWrite(&codec.WriteT{Op: codec.OpDel, Key: "k", ClientId: 7, RequestId: 1})
	if err != nil || !found || seq != w1.Seq {
		t.Fatalf("retry: found=%v err=%v; want the original outcome (found)", found, err)
	}
	if h.m.Applied() != w1.Seq {
		t.Fatalf("retry applied again: applied %d, first write seq %d", h.m.Applied(), w1.Seq)
	}
	// Requests of one client may overtake each other: 3 before 2.
	for _, id := range []uint64{3, 2} {
		if _, _, err := h.m.ClientWrite(&codec.WriteT{Op: codec.OpPut, Key: "x", ClientId: 7, RequestId: id}); err != nil {
			t.Fatalf("request %d after a newer one: %v", id, err)
		}
	}
	if applied := h.m.Applied(); applied != w1.Seq+2 {
		t.Fatalf("applied %d, want %d", applied, w1.Seq+2)
	}
	for i := uint64(4); i <= dedupWindow+2; i++ {
		h.m.ClientWrite(&codec.WriteT{Op: codec.OpPut, Key: "x", ClientId: 7, RequestId: i})
	}
	if _, _, err := h.m.ClientWrite(&codec.WriteT{Op: codec.OpDel, Key: "k", ClientId: 7, RequestId: 1}); !errors.Is(err, ErrTooOld) {
		t.Fatalf("retry beyond the window: %v, want ErrTooOld", err)
	}
}

func TestMachineFailures(t *testing.T) {
	tests := []struct {
		name string
		kill func(s *sim) string
	}{
		{"head", func(s *sim) string { return s.order[0] }},
		{"middle", func(s *sim) string { return s.order[1] }},
		{"tail", func(s *sim) string { return s.order[len(s.order)-1] }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSim(t, 4)
			for range 3 {
				s.add()
			}
			s.settle()
			for i := range 20 {
				s.write(fmt.Sprintf("k%d", i%5), false)
				s.pump(s.nodes[s.order[i%3]], i)
			}
			s.kill(tt.kill(s))
			for i := range 20 {
				s.write(fmt.Sprintf("k%d", i%5), i%7 == 0)
				s.pump(s.nodes[s.order[i%2]], i)
			}
			s.settle()
			s.checkConverged()
		})
	}
}

func TestMachineJoinCatchesUpBeforeServingReads(t *testing.T) {
	s := newSim(t, 5)
	s.add()
	s.add()
	s.settle()
	for i := range 30 {
		s.write(fmt.Sprintf("k%d", i%7), false)
	}
	s.settle()
	n := s.add()
	if n.m.CanRead(time.Time{}) == nil {
		t.Fatal("a new node serves reads before it caught up")
	}
	old := s.nodes[s.order[1]]
	s.pump(old, 0) // handshake, snapshot, and its acknowledgement: hand-off
	for i := range 10 {
		s.write(fmt.Sprintf("k%d", i%7), false)
	}
	if n.m.CanRead(time.Time{}) == nil {
		t.Fatal("new node live before the hand-off marker reached it")
	}
	if old.m.Committed() != 30 {
		t.Fatalf("after the hand-off the old tail commits alone: %v", old.m)
	}
	s.settle()
	if n.m.CanRead(time.Time{}) != nil || old.m.CanRead(time.Time{}) != nil {
		t.Fatalf("after the hand-off: new %v, old %v", n.m, old.m)
	}
	s.checkConverged()
}

func TestMachineStaleMessagesRefused(t *testing.T) {
	s := newSim(t, 6)
	a := s.add()
	b := s.add()
	c := s.add()
	s.settle()
	if _, _, err := c.m.Replicate(a.name, c.name, nil, false, codec.Grant{}); !errors.Is(err, ErrStale) {
		t.Fatalf("replicate from a non-predecessor: %v", err)
	}
	if _, err := c.m.Hello(b.name, "someone-else"); !errors.Is(err, ErrStale) {
		t.Fatalf("hello to the wrong member: %v", err)
	}
	s.kill(b.name)
	if _, err := c.m.Hello(b.name, c.name); !errors.Is(err, ErrStale) {
		t.Fatalf("hello from a removed member: %v", err)
	}
	if _, err := c.m.Hello(a.name, c.name); err != nil {
		t.Fatalf("hello from the new predecessor: %v", err)
	}
}

func TestMachineLeaseAndRejoin(t *testing.T) {
	s := newSim(t, 7)
	a := s.add()
	s.write("k", false)
	a.m.SetSessionLease(time.Time{})
	if a.m.CanRead(time.Time{}) == nil || a.m.CanWrite() == nil {
		t.Fatal("a node without its lease serves")
	}
	a.m.SetSessionLease(forever)
	a.m.Rejoin("node9999999999")
	if a.m.CanRead(time.Time{}) == nil || a.m.CanWrite() == nil {
		t.Fatal("a rejoined node serves before its view places it")
	}
	// Alone in the chain, it is all there is: it serves what it had.
	a.m.SetView([]Member{{Name: "node9999999999", Addr: "a"}})
	if v, ok := a.store.Table.Get("k"); !ok || a.m.CanRead(time.Time{}) != nil || a.m.DataLost() {
		t.Fatalf("a node that rejoined alone: k=%q %v, %v", v, ok, a.m)
	}
}

// TestMachineRandomFaults runs random writes, deliveries, kills and joins,
// and checks that no acknowledged write is lost and reads never go back.
func TestMachineRandomFaults(t *testing.T) {
	for seed := uint64(100); seed < 400; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			s := newSim(t, seed)
			s.lagViews = seed%2 == 1
			for range 3 {
				s.add()
			}
			for i := range 400 {
				switch r := s.rng.IntN(100); {
				case r < 35:
					s.write(fmt.Sprintf("k%d", s.rng.IntN(6)), s.rng.IntN(5) == 0)
				case r < 90:
					names := slices.Sorted(maps.Keys(s.nodes))
					s.pump(s.nodes[names[s.rng.IntN(len(names))]], s.rng.IntN(3))
				case r < 93:
					s.read(fmt.Sprintf("k%d", s.rng.IntN(6)))
				case r < 94:
					s.breakLink(s.nodes[s.order[s.rng.IntN(len(s.order))]])
				case r < 95:
					if lagging := slices.Sorted(maps.Keys(s.pending)); len(lagging) > 0 {
						s.deliverView(lagging[s.rng.IntN(len(lagging))])
					}
				case r < 96:
					if victim := s.order[s.rng.IntN(len(s.order))]; len(s.order) > 1 && s.survivable(victim) {
						s.kill(victim)
					}
				case r < 97:
					if victim := s.order[s.rng.IntN(len(s.order))]; len(s.order) > 1 && s.survivable(victim) {
						s.expire(victim)
					}
				case r < 98:
					s.rejoinExpired()
				case len(s.order) < 5:
					s.add()
				}
				if i%10 == 0 {
					s.read(fmt.Sprintf("k%d", s.rng.IntN(6)))
				}
			}
			s.settle()
			s.checkConverged()
		})
	}
}

// TestMachineLeases walks a two-node chain through a tail that loses
// ZooKeeper: it serves on its predecessor's lease until that runs out, and
// the predecessor commits on its own only after that.
func TestMachineLeases(t *testing.T) {
	const term = 2 * time.Second
	t0 := time.Unix(1000, 0)
	storeA, _ := srv.NewStore(2)
	storeB, _ := srv.NewStore(2)
	a := NewMachine("node0000000001", storeA, term)
	b := NewMachine("node0000000002", storeB, term)
	view := []Member{{Name: a.Self(), Addr: "a"}, {Name: b.Self(), Addr: "b"}}
	for _, m := range []*Machine{a, b} {
		m.Tick(t0)
		m.SetSessionLease(t0.Add(time.Hour))
		m.SetView(view)
	}
	_, gen := a.Successor()
	h, _ := b.Hello(a.Self(), b.Self())
	act, err := a.SuccessorHello(gen, h)
	if err != nil || !act.Snapshot {
		t.Fatalf("hello: %+v, %v", act, err)
	}
	if err := b.Snapshot(a.Self(), b.Self(), true, nil, nil, &SnapshotEnd{At: Point{Seq: act.Next - 1, Epoch: act.Epoch}}); err != nil {
		t.Fatal(err)
	}
	if err := a.SuccessorAck(gen, b.Position(), 0, false); err != nil {
		t.Fatal(err)
	}
	// The live marker, then a lease ask and its grant.
	ws, live, _ := a.Writes(gen, act.Next, 10)
	_, ask, err := b.Replicate(a.Self(), b.Self(), ws, live, codec.Grant{})
	if err != nil || ask == 0 || !live {
		t.Fatalf("replicate: ask %d, %v", ask, err)
	}
	if err := a.SuccessorAck(gen, b.Position(), ask, false); err != nil {
		t.Fatal(err)
	}
	grant := a.Grant(gen, t0)
	if grant.ID != ask || grant.TermUS != uint64(term/time.Microsecond) {
		t.Fatalf("grant %+v for ask %d", grant, ask)
	}
	b.Tick(t0.Add(100 * time.Millisecond))
	if _, _, err := b.Replicate(a.Self(), b.Self(), nil, false, grant); err != nil {
		t.Fatal(err)
	}

	// B loses ZooKeeper: it serves reads until its lease ends.
	b.SetSessionLease(t0)
	if err := b.CanRead(t0.Add(term - time.Millisecond)); err != nil {
		t.Fatalf("tail within its lease: %v (%v)", err, b)
	}
	if err := b.CanRead(t0.Add(term)); err == nil {
		t.Fatal("tail serves reads past its lease without ZooKeeper")
	}

	// ZooKeeper drops B: A must not commit on its own while B may serve.
	a.SetView(view[:1])
	if _, _, err := a.ClientWrite(&codec.WriteT{Op: codec.OpPut, Key: "k", Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	if a.Committed() != 0 || a.ReadNeed([]byte("k")) != 1 {
		t.Fatalf("committed alone during the lease it granted: %v", a)
	}
	a.Tick(t0.Add(term + leaseMargin))
	if a.Committed() != 1 || a.CanRead(t0.Add(term+leaseMargin)) != nil || a.ReadNeed([]byte("k")) != 0 {
		t.Fatalf("after the lease ran out: %v", a)
	}
}

// TestMachineLeaseRelease: a tail that leaves gracefully gives its lease
// back, so its predecessor takes over at once instead of waiting it out.
func TestMachineLeaseRelease(t *testing.T) {
	const term = 2 * time.Second
	t0 := time.Unix(1000, 0)
	storeA, _ := srv.NewStore(2)
	storeB, _ := srv.NewStore(2)
	a := NewMachine("node0000000001", storeA, term)
	b := NewMachine("node0000000002", storeB, term)
	view := []Member{{Name: a.Self(), Addr: "a"}, {Name: b.Self(), Addr: "b"}}
	for _, m := range []*Machine{a, b} {
		m.Tick(t0)
		m.SetSessionLease(t0.Add(time.Hour))
		m.SetView(view)
	}
	_, gen := a.Successor()
	h, _ := b.Hello(a.Self(), b.Self())
	act, _ := a.SuccessorHello(gen, h)
	b.Snapshot(a.Self(), b.Self(), true, nil, nil, &SnapshotEnd{At: Point{Seq: act.Next - 1, Epoch: act.Epoch}})
	a.SuccessorAck(gen, b.Position(), 0, false)
	ws, live, _ := a.Writes(gen, act.Next, 10)
	_, ask, _ := b.Replicate(a.Self(), b.Self(), ws, live, codec.Grant{})
	a.SuccessorAck(gen, b.Position(), ask, false) // a grants b a lease
	if err := b.CanRead(t0); err != nil {
		t.Fatalf("tail: %v", err)
	}

	b.Drain()
	if b.CanRead(t0) == nil {
		t.Fatal("a draining tail answers reads")
	}
	_, ask, _ = b.Replicate(a.Self(), b.Self(), nil, false, a.Grant(gen, t0))
	if ask != 0 {
		t.Fatalf("a draining node asked for a lease (%d)", ask)
	}
	if err := a.SuccessorAck(gen, b.Position(), 0, true); err != nil {
		t.Fatal(err)
	}
	a.SetView(view[:1]) // b leaves ZooKeeper
	if _, _, err := a.ClientWrite(&codec.WriteT{Op: codec.OpPut, Key: "k", Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	if a.Committed() != a.Applied() || a.CanRead(t0) != nil {
		t.Fatalf("after its successor released its lease and left, the node still waits: %v", a)
	}
}

func TestMachineDedupRules(t *testing.T) {
	store, _ := srv.NewStore(2)
	m := NewMachine("node0000000001", store, 0)
	m.SetSessionLease(forever)
	m.SetView([]Member{{Name: m.Self(), Addr: "a"}})
	const new = "new"
	steps := []struct {
		name              string
		client, id, first uint64
		op                codec.MessageT_Opcode
		key, value        string
		want              string // "new", "dup" or the error's text
		wantFound         bool
		err               error
	}{
		{"first write", 7, 1, 1, codec.OpPut, "a", "1", new, true, nil},
		{"retry", 7, 1, 1, codec.OpPut, "a", "1", "dup", true, nil},
		{"id reused for another value", 7, 1, 1, codec.OpPut, "a", "2", "", false, ErrIDReused},
		{"id reused for another key", 7, 1, 1, codec.OpPut, "b", "1", "", false, ErrIDReused},
		{"id reused for a del", 7, 1, 1, codec.OpDel, "a", "", "", false, ErrIDReused},
		{"request id 0", 7, 0, 1, codec.OpPut, "a", "1", "", false, ErrOutOfWindow},
		{"beyond the window", 7, 65, 1, codec.OpPut, "a", "1", "", false, ErrOutOfWindow},
		{"below its own first_unacked", 7, 2, 3, codec.OpPut, "a", "1", "", false, ErrOutOfWindow},
		{"last id of the window", 7, 64, 1, codec.OpPut, "c", "1", new, true, nil},
		{"out of order, in the window", 7, 3, 1, codec.OpDel, "a", "", new, true, nil},
		{"its retry keeps the outcome after the key is back", 7, 3, 1, codec.OpDel, "a", "", "dup", true, nil},
		{"a del of a missing key", 7, 2, 1, codec.OpDel, "zz", "", new, false, nil},
		{"and its retry", 7, 2, 1, codec.OpDel, "zz", "", "dup", false, nil},
		{"the client is done with 1 and 2", 7, 4, 3, codec.OpPut, "d", "1", new, true, nil},
		{"a late duplicate of 2", 7, 2, 2, codec.OpDel, "zz", "", "", false, ErrTooOld},
		{"the slot of 1 is free again", 7, 65, 3, codec.OpPut, "e", "1", new, true, nil},
		{"a client with answered writes and no record", 8, 5, 5, codec.OpPut, "a", "1", "", false, ErrSessionExpired},
		{"a new client", 8, 1, 1, codec.OpPut, "a", "1", new, true, nil},
		{"an old client that does not say first_unacked, no record", 9, 100, 0, codec.OpPut, "a", "1", "", false, ErrSessionExpired},
		{"an old client from the start", 9, 1, 0, codec.OpPut, "a", "1", new, true, nil},
		{"an old client 64 ahead", 9, 65, 0, codec.OpPut, "a", "2", new, true, nil},
		{"an old client's retry 64 behind", 9, 1, 0, codec.OpPut, "a", "1", "", false, ErrTooOld},
		{"a course client", 0, 0, 0, codec.OpPut, "a", "1", new, true, nil},
		{"a course client, the same write", 0, 0, 0, codec.OpPut, "a", "1", new, true, nil},
	}
	for _, st := range steps {
		if st.key == "a" && st.op == codec.OpDel && st.want == "dup" {
			store.Table.Put("a", []byte("back"))
		}
		before := m.Applied()
		w := &codec.WriteT{Op: st.op, Key: st.key, ClientId: st.client, RequestId: st.id, FirstUnacked: st.first}
		if st.value != "" {
			w.Value = []byte(st.value)
		}
		seq, found, err := m.ClientWrite(w)
		switch {
		case st.err != nil:
			if !errors.Is(err, st.err) || m.Applied() != before {
				t.Fatalf("%s: err %v, applied %d->%d; want %v, nothing applied", st.name, err, before, m.Applied(), st.err)
			}
		case err != nil || found != st.wantFound:
			t.Fatalf("%s: found %v, err %v; want found %v", st.name, found, err, st.wantFound)
		case st.want == new && (seq != before+1 || m.Applied() != seq):
			t.Fatalf("%s: seq %d, applied %d->%d; want applied as %d", st.name, seq, before, m.Applied(), before+1)
		case st.want == "dup" && (m.Applied() != before || seq == 0):
			t.Fatalf("%s: seq %d, applied %d->%d; want the first outcome, nothing applied", st.name, seq, before, m.Applied())
		}
	}
	if got := Status(ErrSessionExpired); got != codec.Status_STATUS_SESSION_EXPIRED {
		t.Fatalf("status of an expired client: %v", got)
	}
}

// A del that a snapshot already reflects is replayed on the new node, which
// finds the key gone: it must record the head's outcome all the same, and
// answer a retry with it once it is the head (issue 16, part 2).
func TestMachineDelOutcomeThroughJoinAndFailover(t *testing.T) {
	s := newSim(t, 16)
	a := s.add()
	s.settle()
	for i := range 10 {
		a.store.Table.Put(fmt.Sprintf("k%d", i), []byte("x"))
	}
	del := func(n *simNode, i int) (uint64, bool, error) {
		return n.m.ClientWrite(&codec.WriteT{Op: codec.OpDel, Key: fmt.Sprintf("k%d", i), ClientId: 5, RequestId: uint64(i + 1), FirstUnacked: 1})
	}
	if _, found, err := del(a, 0); err != nil || !found {
		t.Fatalf("del before the join: found %v, err %v", found, err)
	}
	s.duringSnapshot = func() {
		s.duringSnapshot = nil
		for i := 1; i < 10; i++ {
			if _, found, err := del(a, i); err != nil || !found {
				t.Fatalf("del during the snapshot: found %v, err %v", found, err)
			}
		}
	}
	b := s.add()
	s.settle()
	s.checkConverged()
	applied := b.m.Applied()
	s.kill(a.name)
	s.settle()
	for i := range 10 {
		if _, found, err := del(b, i); err != nil || !found {
			t.Fatalf("retry of del %d at the new head: found %v, err %v; want the first outcome (found)", i, found, err)
		}
	}
	if b.m.Applied() != applied {
		t.Fatalf("retries applied again: %d -> %d", applied, b.m.Applied())
	}
}

// A snapshot carries what the chain knows of each client, not only its
// outcomes: after a join and a failover, the new head takes the client's
// next write, refuses what the client said it is done with, and answers
// retries as the old head would.
func TestMachineClientRecordThroughJoinAndFailover(t *testing.T) {
	s := newSim(t, 18)
	a := s.add()
	s.settle()
	put := func(n *simNode, id, first uint64) (uint64, error) {
		seq, _, err := n.m.ClientWrite(&codec.WriteT{Op: codec.OpPut, Key: "k", Value: []byte{byte(id)}, ClientId: 6, RequestId: id, FirstUnacked: first})
		s.settle()
		return seq, err
	}
	for id := uint64(1); id <= 3; id++ {
		if _, err := put(a, id, id); err != nil {
			t.Fatal(err)
		}
	}
	b := s.add()
	s.settle()
	s.kill(a.name)
	s.settle()
	if _, err := put(b, 2, 2); !errors.Is(err, ErrTooOld) {
		t.Fatalf("a write the client was done with, at the new head: %v, want ErrTooOld", err)
	}
	applied := b.m.Applied()
	if seq, err := put(b, 3, 3); err != nil || seq != applied || b.m.Applied() != applied {
		t.Fatalf("retry of the latest write at the new head: seq %d, err %v, applied %d; want its first outcome", seq, err, b.m.Applied())
	}
	if seq, err := put(b, 4, 4); err != nil || seq != applied+1 {
		t.Fatalf("the client's next write at the new head: seq %d, err %v", seq, err)
	}
}

// A client's records expire by time, as the head measures it, on every
// node alike; a client still writing keeps its own.
func TestMachineClientExpiry(t *testing.T) {
	s := newSim(t, 17)
	a := s.add()
	s.add()
	s.settle()
	a.m.SetClientExpiry(time.Minute) // only the head's setting counts
	t0 := time.Unix(1000, 0)
	write := func(at time.Duration, client, id uint64) error {
		a.m.Tick(t0.Add(at))
		_, _, err := a.m.ClientWrite(&codec.WriteT{Op: codec.OpPut, Key: "k", ClientId: client, RequestId: id, FirstUnacked: id})
		s.settle()
		return err
	}
	write(0, 1, 1) // a client that goes away
	for i := range uint64(40) {
		if err := write(time.Duration(i)*5*time.Second, 2, i+1); err != nil { // one that keeps writing
			t.Fatal(err)
		}
	}
	for _, n := range s.nodes {
		if _, ok := n.m.dedup[1]; ok {
			t.Fatalf("%s still remembers client 1 more than a minute after its write", n.name)
		}
		if _, ok := n.m.dedup[2]; !ok {
			t.Fatalf("%s forgot an active client", n.name)
		}
	}
	s.checkConverged()
	if err := write(200*time.Second, 1, 2); !errors.Is(err, ErrSessionExpired) {
		t.Fatalf("client 1 back after its records expired: %v, want ErrSessionExpired", err)
	}
}

// BenchmarkMachineClientWrite measures the head's work for one put with
// exactly-once ids, 32-byte values, 64 writes in flight, 1000 clients.
func BenchmarkMachineClientWrite(b *testing.B) {
	store, _ := srv.NewStore(16)
	m := NewMachine("node0000000001", store, 0)
	m.SetSessionLease(forever)
	m.SetView([]Member{{Name: m.Self(), Addr: "a"}})
	value := make([]byte, 32)
	ids := make([]uint64, 1000)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		c := i % len(ids)
		ids[c]++
		first := uint64(1)
		if ids[c] > 63 {
			first = ids[c] - 63
		}
		w := &codec.WriteT{Op: codec.OpPut, Key: "key:12345", Value: value, ClientId: uint64(c + 1), RequestId: ids[c], FirstUnacked: first}
		if _, _, err := m.ClientWrite(w); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
