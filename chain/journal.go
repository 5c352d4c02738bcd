package chain

import (
	"errors"
	"fmt"
	"hash/fnv"

	"github.com/chaintable/chaintable/codec"
)

// ErrDiskFailed says that the node's log could not make a write durable:
// it takes no more writes, and acknowledges nothing it has not on disk.
// A write refused with it was not applied.
var ErrDiskFailed = errors.New("chain: the node's log failed")

// The Machine's side of durability. With a journal, every write the
// Machine applies is handed to the driver (TakeLogged), which appends it
// to the node's log, and the driver reports what reached the disk
// (SetDurable). A write commits at a node only once the node has it on
// disk: so a node acknowledges a write upstream only once it has both
// made it durable and had it acknowledged by its successor, and a client
// is answered only once every member of the chain has its write on disk.

// EnableJournal makes the Machine hand out the writes it applies from now
// on and commit only what SetDurable reported durable. Everything applied
// so far (what Restore and Replay recovered) is on disk already.
func (m *Machine) EnableJournal() {
	m.journal = true
	m.durable = max(m.durable, m.applied)
}

// TakeLogged returns the writes applied since the last call, in order, for
// the driver to append to the log before it releases the Machine.
func (m *Machine) TakeLogged() []*codec.WriteT {
	ws := m.logged
	m.logged = nil
	return ws
}

// TakeAdopted reports, once, whether the Machine took its table, ahead of
// its last write in places from a snapshot whose later writes will never
// come (its predecessor is gone and it leads), as the state as of that
// write: the driver must save the table as a snapshot as of Last and
// start the log over after it (Log.SnapshotInstalled), since the log
// cannot replay it.
func (m *Machine) TakeAdopted() bool {
	a := m.adopted
	m.adopted = false
	return a
}

// SetDurable records that the writes up to seq are on disk, and commits
// what that lets commit.
func (m *Machine) SetDurable(seq uint64) {
	if seq <= m.durable {
		return
	}
	m.durable = seq
	switch {
	case m.commitsAlone():
		m.advanceCommitted(m.applied)
	case m.succState == succLive:
		m.advanceCommitted(m.succAcked)
	}
}

// onDisk reports whether the node has on disk every write it had when it
// became live: only then may it list itself in the holders record, which
// says it holds every committed write, as a restart from its data dir
// must too.
func (m *Machine) onDisk() bool { return !m.journal || m.durable >= m.liveAt }

// DiskFailed records that the log failed: the node takes no more writes,
// from clients (CanWrite) or from its predecessor (Replicate), and, since
// nothing becomes durable any more, commits nothing more: every waiter
// fails, for none will ever be told its write committed here.
func (m *Machine) DiskFailed(err error) {
	if m.diskErr != nil {
		return
	}
	m.diskErr = err
	for _, w := range m.waiters {
		m.failed = append(m.failed, w.w)
	}
	m.waiters = nil
}

// diskFailed returns why the node takes no writes because its log
// failed, or nil.
func (m *Machine) diskFailed() error {
	if m.diskErr == nil {
		return nil
	}
	return fmt.Errorf("%w: %v", ErrDiskFailed, m.diskErr)
}

// Restore starts a Machine, before it joins, from a snapshot on disk as of
// write at, whose table the driver loaded, with its exactly-once records.
// whole says no snapshot from a predecessor was half installed when the
// node stopped.
func (m *Machine) Restore(at Point, dedup []*codec.DedupT, whole bool) {
	m.applied, m.lastEpoch, m.durable, m.whole, m.restored = at.Seq, at.Epoch, at.Seq, whole, true
	m.installDedup(dedup)
}

// Replay applies the next write from the log on disk, at start.
func (m *Machine) Replay(w *codec.WriteT) error {
	if w.Seq != m.applied+1 {
		return fmt.Errorf("%w: the log holds write %d after %d", ErrProtocol, w.Seq, m.applied)
	}
	journal := m.journal
	m.journal = false
	m.apply(w, false)
	m.journal = journal
	m.durable = w.Seq
	return nil
}

// Log is a node's write-ahead log and snapshots on disk (package durable
// implements it). The node calls Append, SnapshotBegun and
// SnapshotInstalled under its lock, in the order of the events; the Log
// reports progress to the node with Node.SetDurable.
type Log interface {
	// Recover hands over, at start, what the disk holds: the table
	// entries and exactly-once records of the newest snapshot, its seq,
	// then every write logged after it, in order. It reports whether
	// the state is whole: no snapshot from a predecessor was half
	// installed when the node stopped.
	Recover(r Recovery) (whole bool, err error)
	// Append logs writes the node applied, in order. It does not wait
	// for the disk. It reports whether it is time for a snapshot.
	Append(ws []*codec.WriteT) (snapshot bool)
	// SaveSnapshot saves the table, as of write at with exactly-once
	// records dedup, in the background, and then releases the log
	// before it.
	SaveSnapshot(at Point, dedup []*codec.DedupT)
	// SnapshotBegun says that a snapshot from the predecessor began to
	// replace the table: what the disk holds is no longer a state the
	// node may lead with.
	SnapshotBegun()
	// SnapshotInstalled says that the snapshot is complete as of write
	// at, with exactly-once records dedup: the log starts over after it,
	// and nothing is durable before the table is saved, which must wait
	// until the log holds write aheadTo (see SnapshotEnd): saved before,
	// the table would hold writes its log may never get.
	SnapshotInstalled(at Point, aheadTo uint64, dedup []*codec.DedupT)
	// ReadFrom returns the logged writes from seq on, as far as they
	// were appended, for a successor that lacks them; it fails when the
	// log no longer holds seq.
	ReadFrom(seq uint64) (LogReader, error)
}

// LogReader reads writes from a Log, in order.
type LogReader interface {
	// Next returns the next write, or io.EOF after the last.
	Next() (*codec.WriteT, error)
}

// logged returns what the node's log holds at seq, the last write a
// successor applied.
func (n *Node) logged(seq uint64) Logged {
	if n.cfg.Log == nil || n.deltaBroken.Load() {
		return Logged{}
	}
	if seq == 0 {
		// An empty successor (a new node, or one whose data dir was
		// lost) takes a snapshot, however long the log.
		return Logged{}
	}
	r, err := n.cfg.Log.ReadFrom(seq)
	if err != nil {
		return Logged{}
	}
	w, err := r.Next()
	if err != nil || w.Seq != seq {
		return Logged{}
	}
	return Logged{OK: true, Epoch: w.Epoch}
}

// errLogUnreadable marks a delta that failed reading the log, not sending.
var errLogUnreadable = errors.New("chain: the log cannot give the writes a successor lacks")

// sendDelta sends the successor the writes from `from` to next-1 from the
// log, in frames as the link's. A log that cannot give them (damaged, say)
// gives no delta again: from then on successors catch up by snapshot.
func (n *Node) sendDelta(send func([]byte) error, self, to string, from, next uint64) error {
	err := n.sendDeltaFrom(send, self, to, from, next)
	if errors.Is(err, errLogUnreadable) && !n.deltaBroken.Swap(true) {
		n.log.Error("successors catch up by snapshot from now on", "err", err)
	}
	return err
}

func (n *Node) sendDeltaFrom(send func([]byte) error, self, to string, from, next uint64) error {
	r, err := n.cfg.Log.ReadFrom(from)
	if err != nil {
		return fmt.Errorf("%w: %w", errLogUnreadable, err)
	}
	var ws []*codec.WriteT
	var buf []byte
	flush := func() error {
		buf = codec.AppendReplicate(buf[:0], self, to, ws, false, codec.Grant{})
		ws = ws[:0]
		return send(buf)
	}
	for seq := from; seq < next; seq++ {
		w, err := r.Next()
		if err != nil {
			return fmt.Errorf("%w: reading write %d: %w", errLogUnreadable, seq, err)
		}
		if w.Seq != seq {
			return fmt.Errorf("%w: it holds write %d where %d belongs", errLogUnreadable, w.Seq, seq)
		}
		if ws = append(ws, w); len(ws) == linkBatch || len(fitFrame(ws)) < len(ws) {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if len(ws) > 0 {
		return flush()
	}
	return nil
}

// Recovery receives what a Log recovers (see Log.Recover).
type Recovery struct {
	// Reserve, called before the first Entry, sizes the table for keys
	// more keys taking bytes in all.
	Reserve  func(keys, bytes int)
	Entry    func(key string, value []byte)
	Snapshot func(at Point, dedup []*codec.DedupT)
	// Write applies the next logged write; w, its key and its value are
	// valid only during the call (they may lie in a mapping of the log).
	Write func(w *codec.WriteT) error
}

// OpenNode returns a running node that starts from what cfg.Log holds:
// its table and exactly-once records as of the last write it logged. It
// joins as any node does (Rejoin): it leads with that state if the
// holders record lets it, and otherwise catches up from its predecessor.
func OpenNode(cfg NodeConfig) (*Node, error) {
	if cfg.Log == nil {
		return nil, errors.New("chain: OpenNode without a Log")
	}
	n := newNode(cfg)
	whole, err := cfg.Log.Recover(Recovery{
		Reserve: n.store.Table.Reserve,
		Entry:   func(key string, value []byte) { n.store.Table.Put(key, value) },
		Snapshot: func(at Point, dedup []*codec.DedupT) {
			n.m.Restore(at, dedup, true)
		},
		Write: n.m.Replay,
	})
	if err != nil {
		return nil, err
	}
	n.m.whole = whole
	n.m.EnableJournal()
	n.log.Info("recovered from the log", "applied", n.m.Applied(), "whole", whole)
	n.start()
	return n, nil
}

// logSnapshot tells the log of a snapshot frame from the predecessor,
// installed into m.
func (n *Node) logSnapshot(m *Machine, reset, done bool) {
	if reset {
		n.cfg.Log.SnapshotBegun()
	}
	if done {
		n.cfg.Log.SnapshotInstalled(m.Last(), m.aheadTo, m.DedupRecords())
	}
}

// DiskFailed returns a channel closed once the node's log failed: from
// then on the node refuses writes (ErrDiskFailed) and acknowledges
// nothing more, so that, as a member, it holds up every write of the
// chain until it leaves (table_server leaves at once).
func (n *Node) DiskFailed() <-chan struct{} { return n.diskFailed }

// Applied returns the sequence number of the last write in the node's
// table, as of the end of the last step. It takes no lock: a Log saving a
// snapshot calls it while a step may wait for that save.
func (n *Node) Applied() uint64 { return n.applied.Load() }

// SetDurable tells the node that its log holds the writes up to seq on
// disk, or, with err, that it failed and will make nothing more durable.
func (n *Node) SetDurable(seq uint64, err error) {
	if err != nil {
		n.diskFailedOnce.Do(func() {
			n.log.Error("the write-ahead log failed: this node takes no more writes and acknowledges nothing more", "err", err)
			n.step(func(m *Machine) { m.DiskFailed(err) })
			close(n.diskFailed)
		})
		return
	}
	n.step(func(m *Machine) { m.SetDurable(seq) })
}

// Epochs tell a predecessor whether a successor that restarted from its
// log holds a prefix of the predecessor's history, or writes that never
// committed and that a later head gave other writes' sequence numbers to
// (a head killed with writes no one else had, say). Every write a head
// takes is stamped with the head's epoch, from its member name, which
// ZooKeeper never hands out twice; a head gives each sequence number once.
// So, as with Raft's terms, two nodes whose writes at one sequence number
// carry the same epoch got them from the same head, in the same order,
// and hold the same writes up to it.

// epochOf returns the epoch of the head named name: never 0, which
// stands for writes taken without a log.
func epochOf(name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	return h.Sum64() | 1
}

// Point is a point in a history: the write at Seq, and the epoch of the
// head that took it (0 when unknown: see sameHistory).
type Point struct {
	Seq, Epoch uint64
}

// Logged is what a node's log holds at one sequence number: whether it
// has the write, and the write's epoch.
type Logged struct {
	OK    bool
	Epoch uint64
}

// sameHistory reports whether a successor that applied up to seq, whose
// write there carries h.LastEpoch, holds this node's history up to seq.
// Without a log there are no epochs, and a synced successor always does.
// With one, an epoch of 0 says nothing (a snapshot saved before
// snapshots kept their epoch, or writes from a head without a log): two
// different histories may both say it.
func (m *Machine) sameHistory(seq uint64, h HelloReply) bool {
	if !m.journal || seq == 0 {
		return true
	}
	if h.LastEpoch == 0 {
		return false
	}
	switch {
	case seq == m.applied:
		return m.lastEpoch == h.LastEpoch
	case len(m.sent) > 0 && m.sent[0].Seq <= seq && seq < m.applied:
		return m.sent[seq-m.sent[0].Seq].Epoch == h.LastEpoch
	}
	return h.Logged.OK && h.Logged.Epoch == h.LastEpoch
}
