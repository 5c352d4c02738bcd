package chain

import (
	"sync/atomic"
	"time"

	"github.com/chaintable/chaintable/codec"
	"github.com/chaintable/chaintable/srv"
)

// Roles a node reports in NodeStatus.Role: its part in the chain as it sees
// it.
const (
	RoleNone    = "none"      // not in the chain: not yet placed, or dropped and registering again
	RoleWaiting = "waiting"   // first in the chain, but may not lead (see Node.Waiting)
	RoleJoining = "joining"   // catching up with its predecessor
	RoleHead    = "head"      // takes client writes
	RoleMiddle  = "middle"    // forwards writes
	RoleTail    = "tail"      // last in the chain, or acting as it while its successor catches up
	RoleAlone   = "head+tail" // both: the only member, or the head while its successor catches up
)

// NodeStatus is a node's place and progress in the chain at one moment, with
// the counters of its replication: what its metrics and its stats replies
// show.
type NodeStatus struct {
	Member    string // the node's member name; "" before it has one
	Role      string // one of the Role constants
	Position  int    // index in its view, head 0; -1 when not in it
	Members   int    // members in its view
	Applied   uint64 // sequence number of the last write applied
	Committed uint64 // sequence number up to which writes are committed

	Successor      string // the successor's member name; "" at the tail
	SuccessorState string // what the node knows of it: none, unknown, syncing or live
	Live           bool   // caught up: may act as the tail
	Draining       bool   // leaving the chain
	SessionLease   bool   // holds a lease on its ZooKeeper session now
	PredLease      bool   // holds a read lease from its predecessor now
	// Serving says whether the node can serve its role now: a member
	// that knows it still is one (it holds a lease), and not leaving;
	// the head takes writes, the node acting as tail answers reads, and
	// any other member has caught up.
	Serving bool

	LinkConnects uint64 // links to a successor that passed their handshake
	LinkBreaks   uint64 // links to a successor that ended, or failed to open

	// Batches counts the writes in each replication frame sent.
	Batches srv.Pow2Buckets
	// WriteTime counts the nanoseconds from taking each client write at
	// the head to answering it: committed, or refused.
	WriteTime srv.Pow2Buckets

	SnapshotBytesSent     uint64 // keys and values streamed to successors in snapshots
	SnapshotBytesReceived uint64 // keys and values received in snapshots
	SnapshotsSent         uint64 // snapshots streamed to the end
	SnapshotsReceived     uint64 // snapshots received to the end
}

// Status returns the node's status now.
func (n *Node) Status() NodeStatus {
	n.mu.RLock()
	st := n.m.status(time.Now())
	n.mu.RUnlock()
	n.counters.fill(&st)
	return st
}

// status describes the machine at time now.
func (m *Machine) status(now time.Time) NodeStatus {
	st := NodeStatus{
		Member:         m.self,
		Role:           m.role(),
		Position:       m.index,
		Members:        len(m.members),
		Applied:        m.applied,
		Committed:      m.committed,
		Successor:      m.succ.Name,
		SuccessorState: m.succState.String(),
		Live:           m.live,
		Draining:       m.draining,
		SessionLease:   now.Before(m.zkLease),
		PredLease:      m.pred.Name != "" && now.Before(m.predLease),
	}
	if m.index < 0 {
		st.Members = 0 // a view it is not in says nothing of its chain
	}
	st.Serving = m.index >= 0 && !m.draining && m.leased(now)
	switch {
	case !st.Serving:
	case m.index == 0 && m.CanWrite() != nil:
		st.Serving = false
	case m.actingTail():
		st.Serving = m.CanRead(now) == nil
	default:
		st.Serving = m.live
	}
	return st
}

// role returns the node's part in the chain (see the Role constants).
func (m *Machine) role() string {
	switch {
	case m.index < 0:
		return RoleNone
	case !m.live && m.index == 0:
		return RoleWaiting
	case !m.live:
		return RoleJoining
	case m.index == 0 && m.actingTail():
		return RoleAlone
	case m.index == 0:
		return RoleHead
	case m.actingTail():
		return RoleTail
	}
	return RoleMiddle
}

// fillStats adds the node's place and progress to a stats reply.
func (n *Node) fillStats(st *codec.StatsT) {
	s := n.Status()
	st.Member, st.Role, st.Serving = s.Member, s.Role, s.Serving
	st.Position, st.Members = int32(s.Position), int32(s.Members)
	st.Applied, st.Committed = s.Applied, s.Committed
}

// answeredWrite counts a client write the head answered with status,
// taken at start (see sinceEpoch).
func (n *Node) answeredWrite(op codec.MessageT_Opcode, status codec.Status, start time.Duration) {
	n.store.Stats.CountRequest(op, status)
	// time.Since reads the monotonic clock alone: half a time.Now.
	n.counters.writeTime.Observe(uint64(max(time.Since(epoch)-start, 0)))
}

// epoch is when the process started, as the monotonic clock tells.
var epoch = time.Now()

// sinceEpoch returns t on the monotonic clock, as the time since epoch:
// what a client write keeps of when it was taken, in 8 bytes rather than
// a time.Time's 24.
func sinceEpoch(t time.Time) time.Duration { return t.Sub(epoch) }

// counters count a node's replication: an atomic addition or two per
// link, replication frame, snapshot frame or client write at the head.
type counters struct {
	linkConnects, linkBreaks   atomic.Uint64
	batches, writeTime         srv.Pow2Histogram
	snapBytesSent, snapBytesIn atomic.Uint64
	snapsSent, snapsIn         atomic.Uint64
}

// snapshotSent counts a snapshot frame about to be sent.
func (c *counters) snapshotSent(frame *codec.MessageT) {
	c.snapBytesSent.Add(snapshotBytes(frame))
	if frame.GetDone() {
		c.snapsSent.Add(1)
	}
}

// snapshotReceived counts a snapshot frame taken.
func (c *counters) snapshotReceived(frame *codec.MessageT) {
	c.snapBytesIn.Add(snapshotBytes(frame))
	if frame.GetDone() {
		c.snapsIn.Add(1)
	}
}

// snapshotBytes returns the bytes of keys and values in a snapshot frame.
func snapshotBytes(frame *codec.MessageT) uint64 {
	var n uint64
	for _, w := range frame.GetWrites() {
		n += uint64(len(w.GetKey()) + len(w.GetValue()))
	}
	return n
}

// fill copies the counters into st.
func (c *counters) fill(st *NodeStatus) {
	st.LinkConnects, st.LinkBreaks = c.linkConnects.Load(), c.linkBreaks.Load()
	st.Batches, st.WriteTime = c.batches.Snapshot(), c.writeTime.Snapshot()
	st.SnapshotBytesSent, st.SnapshotBytesReceived = c.snapBytesSent.Load(), c.snapBytesIn.Load()
	st.SnapshotsSent, st.SnapshotsReceived = c.snapsSent.Load(), c.snapsIn.Load()
}
