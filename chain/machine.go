package chain

import (
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"time"

	"github.com/chaintable/chaintable/codec"
)

// Member is one node of the chain as ZooKeeper lists it.
type Member struct {
	Name string // the member's znode name, unique for the life of its session
	Addr string // host:port where it serves
}

// Applier is the table a Machine replicates.
type Applier interface {
	// Apply executes a put or del and reports whether a deleted key was
	// present. It takes value over: the Machine never modifies it again.
	Apply(op codec.MessageT_Opcode, key string, value []byte) (found bool)
	// Reset empties the table.
	Reset()
}

// A batchApplier is an Applier that times writes applied together as one
// batch, with two clock readings rather than two per write (see
// srv.Store.ApplyUntimed).
type batchApplier interface {
	ApplyUntimed(op codec.MessageT_Opcode, key string, value []byte) (found bool)
	OpClock() time.Duration
	RecordOps(n int, d time.Duration)
}

// A prefetcher is an Applier that can be told which keys are about to be
// written, so that it brings them into the CPU's caches together (see
// srv.Table.Prefetch).
type prefetcher interface {
	Prefetch(n int, key func(i int) string)
}

// Position is how far a node has got: the last write it applied, and the
// last write it knows reached the tail.
type Position struct {
	Applied, Committed uint64
}

// A Waiter is told when the write it waits for is committed, or that it
// never will be on this node.
type Waiter interface {
	// Done is called outside the Machine's lock with the node's position,
	// or with an error when the wait was abandoned.
	Done(pos Position, err error)
}

// Errors a Machine reports. Each maps to a codec.Status for the wire.
var (
	ErrNotHead     = errors.New("chain: this node is not the head")
	ErrUnavailable = errors.New("chain: this node cannot serve now")
	ErrCatchingUp  = errors.New("chain: this node is still catching up")
	ErrLeaving     = errors.New("chain: this node is leaving the chain")
	ErrStale       = errors.New("chain: message from a node that is not the predecessor")
	ErrProtocol    = errors.New("chain: protocol violation")
)

// Status returns the wire status for an error of this package.
func Status(err error) codec.Status {
	switch {
	case errors.Is(err, ErrNotHead):
		return codec.Status_STATUS_NOT_HEAD
	case errors.Is(err, ErrStale):
		return codec.Status_STATUS_STALE_CONFIG
	case errors.Is(err, ErrTooOld):
		return codec.Status_STATUS_TOO_OLD
	case errors.Is(err, ErrIDReused):
		return codec.Status_STATUS_ID_REUSED
	case errors.Is(err, ErrSessionExpired):
		return codec.Status_STATUS_SESSION_EXPIRED
	case errors.Is(err, ErrOutOfWindow):
		return codec.Status_STATUS_OUT_OF_WINDOW
	case errors.Is(err, ErrProtocol):
		return codec.Status_STATUS_BAD_REQUEST
	case errors.Is(err, ErrDiskFailed):
		return codec.Status_STATUS_DISK_FAILED
	}
	return codec.Status_STATUS_UNAVAILABLE
}

// succState is what a node knows of its successor.
type succState int

const (
	succNone    succState = iota // no successor: the node is the tail
	succUnknown                  // a successor, not yet handshaken: wait
	succSyncing                  // catching up: the node acts as tail
	succLive                     // caught up: it is the tail (or leads to it)
)

func (s succState) String() string {
	return [...]string{"none", "unknown", "syncing", "live"}[s]
}

type waiter struct {
	seq uint64
	w   Waiter
}

// Machine is the replication protocol of one node, without I/O: events go
// in through its methods, and what must happen as a result comes out as
// return values, Waiters to wake (TakeDone) and a link generation that
// says when the successor connection must be replaced (LinkGen).
//
// A Machine is not safe for concurrent use; its driver serialises calls.
type Machine struct {
	self    string
	store   Applier
	members []Member
	index   int // own position in members, -1 when not a member
	pred    Member
	succ    Member

	succState succState
	linkGen   uint64    // changes whenever the successor link must restart
	synced    bool      // holds a complete copy (or is the first node)
	live      bool      // may act as tail
	zkLease   time.Time // ZooKeeper cannot have expired the session before then
	sendLive  bool      // the next message to the successor carries the live marker
	dataLost  bool      // became head before it finished catching up
	draining  bool      // shutting down: takes no new client writes
	partial   bool      // rejoined while a snapshot was replacing its table
	whole     bool      // no snapshot began to replace the table since the node was last live

	holderID string  // the process's entry in the holders record; "" if not tracked
	holders  Holders // the holders record as last read or written

	applied     uint64
	committed   uint64
	dirty       map[uint64]uint64 // key hash -> last write to the key applied here and maybe not committed
	dirtyUntil  uint64            // every key counts as dirty until this write commits (see becomeLive)
	hashSeed    maphash.Seed
	succAcked   uint64          // the successor's last report of what reached the tail
	succApplied uint64          // the successor's last report of what it applied
	sent        []*codec.WriteT // applied writes above succAcked, in order

	waiters []waiter // by ascending seq
	done    []waiter
	failed  []Waiter
	dedup   map[uint64]*clientLog

	clientExpiry time.Duration // how long the records of an idle client live
	seqTimes     []seqAt       // at the head: what was applied when, oldest first (see expireSeq)
	expiredTo    uint64        // clients whose latest write is at or below this seq were forgotten

	// Leases let a tail answer reads while ZooKeeper is away, and make
	// sure it stops before its predecessor commits without it. The tail
	// asks with every acknowledgement; a grant of ask k lets it serve
	// until the time it asked plus leaseTerm; a predecessor that granted
	// at time g acts as the tail on its own no sooner than g+leaseTerm.
	leaseTerm  time.Duration
	now        time.Time            // the driver's clock, as of the last event
	asks       map[uint64]time.Time // lease asks not yet granted, by id
	lastAsk    uint64
	predLease  time.Time // reads allowed without ZooKeeper until then
	grant      uint64    // the successor's latest ask, to grant in the next message
	grantUntil time.Time // no commits as the tail on our own before then, for leases granted on earlier links
	linkGrant  time.Time // the same for leases granted on the current link, which the successor may release
	// bypassUntil holds back writes to a new successor that replaced one
	// this node leased reads to: the old one may answer reads until then,
	// so nothing may commit that it lacks.
	bypassUntil time.Time

	// Durability (see journal.go): with a log, nothing commits here
	// before this node has it on disk.
	journal   bool            // writes applied go to logged, and commits wait for durable
	logged    []*codec.WriteT // applied writes the driver has not yet taken for the log
	durable   uint64          // the last write on disk here
	diskErr   error           // the log failed: take no more writes
	epoch     uint64          // what this node stamps the writes it takes as head with
	lastEpoch uint64          // the epoch of the last write applied
	aheadTo   uint64          // the table may hold writes up to this one, from a snapshot (see SnapshotEnd)
	adopted   bool            // the table was taken as the state as of applied, for the log to save (see TakeAdopted)
	restored  bool            // started from its log, and not yet live or replaced by a snapshot
	liveAt    uint64          // the last write applied when the node became live

	// A batch of writes (see BeginWrites) is timed as one.
	batcher    batchApplier  // the store, if it times batches
	batching   bool          // between BeginWrites and EndWrites
	batchOps   int           // writes applied in the batch so far
	batchStart time.Duration // the batcher's OpClock when the batch began
}

// leaseMargin covers the difference in clock rates between two nodes over
// one lease term: the granting side waits this much longer.
const leaseMargin = 100 * time.Millisecond

// NewMachine returns the state machine of a node that registered as self.
// leaseTerm is how long a grant from its predecessor lets the node answer
// reads while its ZooKeeper session is not connected; zero disables that.
func NewMachine(self string, store Applier, leaseTerm time.Duration) *Machine {
	batcher, _ := store.(batchApplier)
	return &Machine{self: self, store: store, index: -1, leaseTerm: leaseTerm, whole: true,
		dedup: make(map[uint64]*clientLog), clientExpiry: DefaultClientExpiry, asks: make(map[uint64]time.Time),
		dirty: make(map[uint64]uint64), hashSeed: maphash.MakeSeed(), batcher: batcher}
}

// BeginWrites starts a batch of writes, which ends with EndWrites: the
// store's statistics count the writes applied in between as table
// operations that took the batch's time between them, replication
// bookkeeping included. It reports whether it started one: within a
// batch, it does nothing, and the caller must not end it.
func (m *Machine) BeginWrites() bool {
	if m.batcher == nil || m.batching {
		return false
	}
	m.batching, m.batchOps, m.batchStart = true, 0, m.batcher.OpClock()
	return true
}

// EndWrites ends the batch BeginWrites started.
func (m *Machine) EndWrites() {
	m.batching = false
	m.batcher.RecordOps(m.batchOps, m.batcher.OpClock()-m.batchStart)
}

// applyToStore executes a write on the store, timed with its batch if
// there is one.
func (m *Machine) applyToStore(w *codec.WriteT) bool {
	if !m.batching {
		return m.store.Apply(w.Op, w.Key, w.Value)
	}
	m.batchOps++
	return m.batcher.ApplyUntimed(w.Op, w.Key, w.Value)
}

// SetClientExpiry sets how long the exactly-once records of a client that
// writes nothing are kept (DefaultClientExpiry unless set).
func (m *Machine) SetClientExpiry(d time.Duration) { m.clientExpiry = d }

// Self returns the node's member name.
func (m *Machine) Self() string { return m.self }

// Applied returns the sequence number of the last write applied.
func (m *Machine) Applied() uint64 { return m.applied }

// consistent reports whether the table is the state as of the last write
// applied: not still ahead of it in places, from a snapshot (see
// SnapshotEnd).
func (m *Machine) consistent() bool { return m.applied >= m.aheadTo }

// Last returns the last write applied, with its epoch.
func (m *Machine) Last() Point { return Point{Seq: m.applied, Epoch: m.lastEpoch} }

// Committed returns the sequence number up to which writes are committed.
func (m *Machine) Committed() uint64 { return m.committed }

// Successor returns the successor and the link generation that any
// connection to it must carry; the generation changes when the link must
// be torn down and made anew.
func (m *Machine) Successor() (Member, uint64) { return m.succ, m.linkGen }

// IsHead reports whether the node is the head in its current view.
func (m *Machine) IsHead() bool { return m.index == 0 }

// DataLost reports whether the node had to become head before it caught
// up with a predecessor that then vanished: writes may have been lost.
func (m *Machine) DataLost() bool { return m.dataLost }

// String describes the node's state for logs.
func (m *Machine) String() string {
	return fmt.Sprintf("%s index=%d pred=%q succ=%q/%v synced=%v live=%v zkLease=%v predLease=%v applied=%d committed=%d succAcked=%d sent=%d",
		m.self, m.index, m.pred.Name, m.succ.Name, m.succState, m.synced, m.live, m.now.Before(m.zkLease), m.now.Before(m.predLease),
		m.applied, m.committed, m.succAcked, len(m.sent))
}

// CanWrite reports whether the node accepts client writes now. Without
// ZooKeeper a head still takes writes when it has a successor: they
// commit only if the rest of the chain still follows it.
func (m *Machine) CanWrite() error {
	switch {
	case m.index != 0:
		return ErrNotHead
	case m.diskErr != nil:
		// Before draining: the node leaves because of it (see
		// Node.Failed), and no later head takes a held write from it.
		return m.diskFailed()
	case !m.synced || !m.consistent() || m.restored || m.draining || m.succ.Name == "" && !m.now.Before(m.zkLease):
		return ErrUnavailable
	}
	return nil
}

// CanRead reports whether the node may answer reads from its own table
// at time now, as every member does (CRAQ): it must be a live member and
// hold a lease, on its ZooKeeper session or from its predecessor, which
// proves that no write can commit without it. A read of a key that is
// dirty here (see ReadNeed) must also wait until the write it sees
// commits. ErrCatchingUp and ErrLeaving say that another member must
// answer; ErrUnavailable that the node must wait.
func (m *Machine) CanRead(now time.Time) error {
	switch {
	case m.index < 0 || !m.leased(now):
		return ErrUnavailable
	case !m.live:
		return ErrCatchingUp
	case m.draining:
		return ErrLeaving
	}
	return nil
}

// ReadNeed returns the write that a read of key must see committed before
// the node may answer it with what its table holds now: the last write to
// key it applied without knowing it committed, or 0 when there is none
// (the key is clean, and its value the latest committed one).
func (m *Machine) ReadNeed(key []byte) uint64 {
	if m.applied == m.committed {
		return 0
	}
	need := m.dirty[maphash.Bytes(m.hashSeed, key)]
	if m.dirtyUntil > need {
		need = m.dirtyUntil
	}
	if need <= m.committed {
		return 0
	}
	return need
}

// TableNeed is ReadNeed for a read of the whole table (size, getkeys,
// gettable): the last write applied, unless all are committed.
func (m *Machine) TableNeed() uint64 {
	if m.applied == m.committed {
		return 0
	}
	return m.applied
}

// markDirty remembers an applied write that is not known committed, so
// that reads of its key wait for it (see ReadNeed).
func (m *Machine) markDirty(w *codec.WriteT) {
	// A node that is not live answers no reads, and when it becomes live
	// every key counts as dirty until what it applied commits (see
	// becomeLive): a log replayed at start, or a catch-up, needs no marks.
	if w.Seq <= m.committed || !m.live {
		return
	}
	m.dirty[maphash.String(m.hashSeed, w.Key)] = w.Seq
	if n := len(m.dirty); n > 1024 && n > 2*int(m.applied-m.committed) {
		// Mostly committed writes: drop them, at a cost spread over as
		// many writes as there are entries.
		for h, seq := range m.dirty {
			if seq <= m.committed {
				delete(m.dirty, h)
			}
		}
	}
}

// Drain makes the node refuse new client writes and reads, so that what
// is in flight can commit before it leaves the chain; it asks for no more
// read leases and grants none, and once those it granted ran out its
// acknowledgements release the one it holds (see Released).
func (m *Machine) Drain() { m.draining = true }

// Draining reports whether Drain was called.
func (m *Machine) Draining() bool { return m.draining }

// Released reports whether the node's acknowledgements may release the
// read lease its predecessor granted it: it is draining, and no lease it
// granted its own successor still runs. A draining node grants none (see
// Grant), but one granted before may outlast the node's stay in the
// chain, on the node's own session: a predecessor that took the release
// while it ran would bypass a successor still answering reads.
func (m *Machine) Released() bool { return m.draining && !m.now.Before(m.granted()) }

// Idle reports whether every write the node applied is committed.
func (m *Machine) Idle() bool { return m.committed == m.applied }

// SetSessionLease records a time before which ZooKeeper cannot have
// expired the node's session, and so cannot have dropped it from the
// chain.
func (m *Machine) SetSessionLease(until time.Time) {
	m.zkLease = until
	if m.commitsAlone() {
		m.advanceCommitted(m.applied)
	}
}

// lease returns the time before which the node knows it is still in the
// chain: its ZooKeeper session cannot have expired yet, or its
// predecessor still leases it reads. No lease it grants its successor
// outlasts it (see Grant), so a node that ZooKeeper dropped stops
// granting before anything commits without it, however many of the nodes
// after it still talk to it.
func (m *Machine) lease() time.Time {
	if m.pred.Name == "" {
		return m.zkLease
	}
	return maxTime(m.zkLease, m.predLease)
}

// leased reports whether the node knows at time t that it is still in the
// chain (see lease).
func (m *Machine) leased(t time.Time) bool { return t.Before(m.lease()) }

// Tick advances the machine's clock. A node that waited for the lease it
// granted its old successor to run out may now commit on its own.
func (m *Machine) Tick(now time.Time) {
	m.now = now
	if m.commitsAlone() {
		m.advanceCommitted(m.applied)
	}
}

// SetView installs a new membership, ordered head first. A node that
// tracks holders refuses a view it would act on while the holders record
// lists a node the view lacks (see PlanHolders), and keeps its old one.
func (m *Machine) SetView(members []Member) error {
	index := slices.IndexFunc(members, func(mb Member) bool { return mb.Name == m.self })
	if err := m.checkHolders(members, index); err != nil {
		return err
	}
	m.members, m.index = members, index
	if m.index < 0 {
		// Dropped from the chain (its session expired): commit nothing
		// more, whatever the rest of the view says, until it rejoins
		// under a new name. Taking the view as "no successor" would make
		// it commit writes no other node has.
		if m.succ.Name != "" || m.succState != succUnknown {
			m.newLink()
		}
		m.pred, m.succ, m.succState, m.sendLive = Member{}, Member{}, succUnknown, false
		return nil
	}
	var pred, succ Member
	if m.index > 0 {
		pred = members[m.index-1]
	}
	if m.index >= 0 && m.index+1 < len(members) {
		succ = members[m.index+1]
	}
	if m.index == 0 && !m.live && m.mayLead() {
		// No predecessor left to catch up with: what this node has is
		// all there is. For the first node of a chain that is everything;
		// for one that was still catching up, writes are lost, unless
		// the holders record lists it: then it has every committed
		// write (as a node restarted from its data dir does).
		_, listed := m.holders.byID(m.holderID)
		m.dataLost = m.partial || m.pred.Name != "" && !(m.holderID != "" && listed)
		m.synced = true
		if !m.consistent() {
			// Still ahead of its seq in places from a snapshot whose
			// later writes will never come: the table as it is becomes
			// the state as of the last write applied (see TakeAdopted).
			m.aheadTo, m.adopted = 0, m.journal
		}
		m.becomeLive()
	}
	if pred != m.pred {
		// A lease from the old predecessor says nothing of the new one,
		// which never promised to wait for this node.
		m.predLease = time.Time{}
	}
	m.pred = pred
	if succ != m.succ || succ.Name == "" && m.succState != succNone {
		if m.succ.Name != "" && succ.Name != m.succ.Name {
			// The old successor is bypassed, and may answer reads on
			// what this node granted it until then: no successor may
			// get writes before, neither one that replaces it now nor
			// one that joins after the node went on alone.
			m.bypassUntil = maxTime(m.bypassUntil, m.granted())
		}
		m.succ = succ
		m.newLink()
		m.sendLive = false
		if succ.Name == "" {
			// The tail now, but not before a lease it granted the old
			// successor ran out (see Tick).
			m.succState = succNone
			m.sent = nil
			if m.commitsAlone() {
				m.advanceCommitted(m.applied)
			}
		} else {
			m.succState = succUnknown
		}
	}
	return nil
}

// Rejoin makes the node a new member named self, not yet caught up: it
// lost its place (its session expired) and registered again. Every waiter
// fails. The table stays: when every member lost its place at once, as
// when the whole chain was cut off from ZooKeeper, the first one back is
// the chain's only copy, and becomes its head with it; otherwise its new
// predecessor replaces it with a snapshot.
func (m *Machine) Rejoin(self string) {
	failed := m.failed
	for _, w := range m.waiters {
		failed = append(failed, w.w)
	}
	old := m
	m2 := NewMachine(self, old.store, old.leaseTerm)
	m2.failed, m2.zkLease, m2.linkGen, m2.now, m2.grantUntil = failed, old.zkLease, old.linkGen+1, old.now, old.granted()
	m2.bypassUntil = maxTime(old.bypassUntil, old.granted())
	m2.applied, m2.committed, m2.dedup = old.applied, old.committed, old.dedup
	m2.clientExpiry, m2.expiredTo = old.clientExpiry, old.expiredTo
	m2.whole, m2.holderID, m2.holders = old.whole, old.holderID, old.holders
	m2.partial = !old.whole
	m2.journal, m2.logged, m2.durable, m2.diskErr = old.journal, old.logged, old.durable, old.diskErr
	m2.epoch, m2.lastEpoch, m2.restored, m2.synced = epochOf(self), old.lastEpoch, old.restored, old.restored
	m2.aheadTo, m2.adopted = old.aheadTo, old.adopted
	*m = *m2
}

// ClientWrite executes a put or del from a client at the head. The write
// is applied now under sequence number seq; its client may be answered
// once seq is committed (see Await). found reports, for a del, whether
// the key was present. A retried write (same client and request id) is
// not applied again: it reports the original outcome and sequence number
// (see dedup.go for the rules).
func (m *Machine) ClientWrite(req *codec.WriteT) (seq uint64, found bool, err error) {
	if err := m.CanWrite(); err != nil {
		return 0, false, err
	}
	if req.ClientId != 0 {
		if o, dup, err := m.dedupCheck(req); err != nil || dup {
			return o.seq, o.found, err
		}
	}
	req.Seq, req.ExpireSeq = m.applied+1, m.expireSeq()
	if m.journal {
		req.Epoch = m.epoch
	}
	return req.Seq, m.apply(req, true), nil
}

// apply executes the next write in sequence and keeps it for the
// successor. At the head, the write takes the outcome along, so that every
// node records the head's: a node catching up may replay a del its
// snapshot already reflects.
func (m *Machine) apply(w *codec.WriteT, atHead bool) bool {
	found := m.applyToStore(w)
	m.applied, m.lastEpoch = w.Seq, w.Epoch
	if w.ExpireSeq > m.expiredTo {
		m.forgetIdleClients(w.ExpireSeq)
	}
	if w.ClientId != 0 {
		if atHead && w.Op == codec.OpDel {
			w.Found = found
		}
		m.record(w)
	}
	if m.journal {
		m.logged = append(m.logged, w)
	}
	if m.succState != succNone {
		m.sent = append(m.sent, w)
	}
	if m.commitsAlone() {
		m.advanceCommitted(m.applied)
	}
	m.markDirty(w)
	return found
}

// actingTail reports whether the node is the tail as far as the chain
// goes: no successor, or one still catching up.
func (m *Machine) actingTail() bool { return m.succState == succNone || m.succState == succSyncing }

// commitsAlone reports whether the node commits what it applies: it is
// live, acts as tail, knows it is still in the chain, and no lease it
// granted a former successor is still running. A node that is not live
// may lack writes its predecessor committed; one dropped from the chain
// would commit writes that no member has.
func (m *Machine) commitsAlone() bool {
	return m.live && m.actingTail() && m.leased(m.now) && !m.now.Before(m.granted())
}

// await makes w wait until seq is committed.
func (m *Machine) await(seq uint64, w Waiter) {
	if seq <= m.committed {
		m.done = append(m.done, waiter{seq, w})
		return
	}
	i := len(m.waiters)
	for i > 0 && m.waiters[i-1].seq > seq {
		i--
	}
	m.waiters = append(m.waiters, waiter{})
	copy(m.waiters[i+1:], m.waiters[i:])
	m.waiters[i] = waiter{seq, w}
}

// Await makes w wait until seq is committed: a client's write, or an
// acknowledgement owed to the predecessor.
func (m *Machine) Await(seq uint64, w Waiter) { m.await(seq, w) }

func (m *Machine) advanceCommitted(seq uint64) {
	if m.journal {
		seq = min(seq, m.durable)
	}
	if seq <= m.committed {
		return
	}
	m.committed = seq
	if seq == m.applied {
		clear(m.dirty)
	}
	i := 0
	for ; i < len(m.waiters) && m.waiters[i].seq <= seq; i++ {
	}
	m.done = append(m.done, m.waiters[:i]...)
	m.waiters = append(m.waiters[:0], m.waiters[i:]...)
}

// TakeDone returns the waiters whose writes are now committed, the
// position to tell them, and the waiters that failed.
func (m *Machine) TakeDone() (done []Waiter, pos Position, failed []Waiter) {
	for _, w := range m.done {
		done = append(done, w.w)
	}
	failed = m.failed
	m.done, m.failed = m.done[:0], nil
	return done, m.Position(), failed
}

// AckPosition returns what an acknowledgement of the writes up to last,
// sent once last is committed, may tell the predecessor: pos, the node's
// position by then, but never past last. By then the node may have taken
// the lead (its predecessor was dropped) and committed writes of its own
// under sequence numbers that the old predecessor, still taking writes,
// gave to others: reported, they would make it acknowledge writes no
// other node has.
func AckPosition(last uint64, pos Position) Position {
	return Position{Applied: min(pos.Applied, last), Committed: min(pos.Committed, last)}
}

// Position returns how far the node has got.
func (m *Machine) Position() Position { return Position{Applied: m.applied, Committed: m.committed} }

// Live reports whether the node may act as the tail: a node still
// catching up acknowledges what it applies at once, since it commits
// nothing on its own and its predecessor waits for it to catch up.
func (m *Machine) Live() bool { return m.live }

// HelloReply is what a node tells a predecessor that opens a link.
type HelloReply struct {
	Applied   uint64 // the last write applied
	Committed uint64 // the last write known to have reached the tail
	Synced    bool   // holds a complete copy
	Live      bool   // acts as tail or leads to it
	LastEpoch uint64 // the epoch of the write at Applied (with a data dir)
	// Logged is filled in by the predecessor's driver: what its own log
	// holds at Applied (see journal.go).
	Logged Logged
}

// Hello answers a predecessor that opens a link.
func (m *Machine) Hello(from, to string) (HelloReply, error) {
	if err := m.checkPred(from, to); err != nil {
		return HelloReply{}, err
	}
	return HelloReply{Applied: m.applied, Committed: m.committed, Synced: m.synced && m.consistent(), Live: m.live, LastEpoch: m.lastEpoch}, nil
}

func (m *Machine) checkPred(from, to string) error {
	if to != m.self || from == "" || from != m.pred.Name {
		return fmt.Errorf("%w: %q to %q, but %q's predecessor is %q", ErrStale, from, to, m.self, m.pred.Name)
	}
	return nil
}

// SnapshotEnd is what the last frame of a snapshot says.
type SnapshotEnd struct {
	At Point // the write the snapshot is as of
	// AheadTo is the last write the sender had applied when it finished
	// reading its table, which it read while it went on applying writes:
	// the table may hold writes up to AheadTo, which follow the snapshot.
	// Until it applied them too, the receiver's table is the state of no
	// history, neither At's nor any later one's.
	AheadTo uint64
}

// Snapshot installs part of a snapshot from the predecessor. reset drops
// all state first; end, on the last part, says what it is as of.
func (m *Machine) Snapshot(from, to string, reset bool, entries []*codec.WriteT, dedup []*codec.DedupT, end *SnapshotEnd) error {
	if err := m.checkPred(from, to); err != nil {
		return err
	}
	if err := m.diskFailed(); err != nil {
		return err
	}
	if reset {
		m.store.Reset()
		m.dedup, m.seqTimes, m.expiredTo = make(map[uint64]*clientLog), nil, 0
		m.applied, m.committed, m.synced, m.live, m.whole = 0, 0, false, false, false
		m.durable = 0 // until the driver has the snapshot on disk
		m.lastEpoch, m.restored, m.aheadTo = 0, false, 0
		if m.succState != succNone {
			// Whatever the successor got from us came from the old state.
			m.succState, m.sent, m.succAcked = succUnknown, nil, 0
			m.newLink()
		}
	} else if m.synced {
		return fmt.Errorf("%w: snapshot data without a reset on a synced node", ErrProtocol)
	}
	for _, e := range entries {
		m.store.Apply(codec.OpPut, e.Key, e.Value)
	}
	m.installDedup(dedup)
	if end != nil {
		m.applied, m.lastEpoch, m.synced, m.aheadTo = end.At.Seq, end.At.Epoch, true, end.AheadTo
		if m.commitsAlone() {
			m.advanceCommitted(end.At.Seq)
		}
	}
	return nil
}

// Replicate applies writes from the predecessor, in sequence order. Writes
// already applied are skipped, so a resent write is never applied twice.
// live says the predecessor hands the tail role to this node; grant, when
// not zero, grants the lease this node asked for under that id, for as
// long from the ask as it says and at most the lease term. It returns the
// sequence number of the last write in the batch, and the lease ask to
// send with its acknowledgement.
func (m *Machine) Replicate(from, to string, writes []*codec.WriteT, live bool, grant codec.Grant) (last, ask uint64, err error) {
	if err := m.checkPred(from, to); err != nil {
		return 0, 0, err
	}
	if asked, ok := m.asks[grant.ID]; ok {
		term := min(m.leaseTerm, time.Duration(grant.TermUS)*time.Microsecond)
		m.predLease = maxTime(m.predLease, asked.Add(term))
		for id := range m.asks {
			if id <= grant.ID {
				delete(m.asks, id)
			}
		}
	}
	if m.leaseTerm > 0 && !m.draining {
		// Asked now, before the acknowledgement is even sent: the lease
		// counts from no later than the moment the predecessor grants it.
		m.lastAsk++
		ask = m.lastAsk
		m.asks[ask] = m.now
	}
	if !m.synced {
		return 0, 0, fmt.Errorf("%w: writes before a snapshot", ErrProtocol)
	}
	if err := m.diskFailed(); err != nil {
		return 0, 0, err
	}
	last = m.applied
	if m.BeginWrites() {
		defer m.EndWrites()
	}
	if p, ok := m.store.(prefetcher); ok && len(writes) > 1 {
		p.Prefetch(len(writes), func(i int) string { return writes[i].Key })
	}
	for _, w := range writes {
		switch {
		case w.Seq <= m.applied:
		case w.Seq == m.applied+1:
			m.apply(w, false)
		default:
			return last, 0, fmt.Errorf("%w: write %d after %d", ErrProtocol, w.Seq, m.applied)
		}
		last = w.Seq
	}
	if live && !m.live {
		m.becomeLive()
	}
	return last, ask, nil
}

// becomeLive makes the node live: it holds every committed write, so it
// may commit on its own if it is the tail, and hand the role on. What it
// got from a snapshot or from before a rejoin was never marked dirty, so
// every key counts as dirty until what it applied commits.
func (m *Machine) becomeLive() {
	m.live, m.whole, m.restored, m.liveAt = true, true, false, m.applied
	if m.commitsAlone() {
		m.advanceCommitted(m.applied)
	}
	if m.committed < m.applied {
		m.dirtyUntil = m.applied
	}
	if m.succState == succSyncing {
		m.maybeHandOff()
	}
}

// newLink ends the current successor link: what follows goes on a new
// connection. Leases granted on the old one still bind.
func (m *Machine) newLink() {
	m.linkGen++
	m.grantUntil = m.granted()
	m.linkGrant = time.Time{}
}

// granted returns the time before which a lease this node granted may
// still let a successor answer reads.
func (m *Machine) granted() time.Time { return maxTime(m.grantUntil, m.linkGrant) }

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// LinkAction is what a successor link does after its handshake.
type LinkAction struct {
	Snapshot bool   // send a snapshot (as of Next-1, of epoch Epoch), then writes
	Epoch    uint64 // the epoch of write Next-1, for a snapshot
	Delta    uint64 // if not 0: send the writes from Delta to Next-1 from the log first
	Next     uint64 // the first write to send
}

// SuccessorHello takes the successor's answer to Hello on link gen.
func (m *Machine) SuccessorHello(gen uint64, h HelloReply) (LinkAction, error) {
	applied, synced, live := h.Applied, h.Synced, h.Live
	if gen != m.linkGen {
		return LinkAction{}, ErrStale
	}
	if !m.synced || !m.consistent() || m.restored {
		return LinkAction{}, fmt.Errorf("%w: not caught up, cannot feed a successor", ErrUnavailable)
	}
	inSent := len(m.sent) > 0 && m.sent[0].Seq <= applied+1
	resumable := synced && applied <= m.applied && m.sameHistory(applied, h) &&
		(applied == m.applied || inSent || h.Logged.OK)
	if resumable && applied < m.applied && !inSent {
		// What the successor lacks is in this node's log only.
		next := m.startSnapshot()
		m.succAcked, m.succApplied = applied, applied
		return LinkAction{Delta: applied + 1, Next: next}, nil
	}
	if !resumable {
		if live {
			// A live successor may have answered reads: it must never
			// go back in time, so refuse to overwrite it.
			return LinkAction{}, fmt.Errorf("%w: live successor at %d cannot resume from %d", ErrProtocol, applied, m.applied)
		}
		next := m.startSnapshot()
		return LinkAction{Snapshot: true, Epoch: m.lastEpoch, Next: next}, nil
	}
	// Only what reached the tail may leave the sent list: the successor
	// may die, and its own successor may be behind it.
	m.ackedBy(h.Committed)
	m.succApplied = applied
	if live {
		m.succState = succLive
		m.advanceCommitted(m.succAcked)
	} else {
		m.succState = succSyncing
		if m.commitsAlone() {
			m.advanceCommitted(m.applied)
		}
		m.maybeHandOff()
	}
	return LinkAction{Next: applied + 1}, nil
}

// startSnapshot prepares to send a snapshot as of the current write and
// returns the first write to send after it.
func (m *Machine) startSnapshot() uint64 {
	m.succState = succSyncing
	m.sent = nil
	m.succAcked, m.succApplied = m.applied, 0
	if m.commitsAlone() {
		m.advanceCommitted(m.applied)
	}
	return m.applied + 1
}

// Grant returns the grant of the successor's latest lease ask, to go with
// the next message on link gen, sent at time now: it holds for the lease
// term, but never past the node's own lease, and a node without one
// grants nothing (see lease). The zero Grant grants nothing.
func (m *Machine) Grant(gen uint64, now time.Time) codec.Grant {
	if gen != m.linkGen || m.grant == 0 || m.draining {
		return codec.Grant{} // a draining node lets its grants run out (see Released)
	}
	term := min(m.leaseTerm, m.lease().Sub(now)).Truncate(time.Microsecond)
	if term <= 0 {
		return codec.Grant{} // the successor asks again with its next acknowledgement
	}
	g := codec.Grant{ID: m.grant, TermUS: uint64(term / time.Microsecond)}
	m.grant = 0
	// The successor asked before now, so its lease ends before now+term.
	m.linkGrant = maxTime(m.linkGrant, now.Add(term+leaseMargin))
	return g
}

// Writes returns the writes from seq next on, at most max of them, and
// whether the live marker must go with them. The returned writes must not
// be modified.
func (m *Machine) Writes(gen, next uint64, max int) ([]*codec.WriteT, bool, error) {
	if gen != m.linkGen {
		return nil, false, ErrStale
	}
	if m.now.Before(m.bypassUntil) {
		return nil, false, nil // the successor this one replaced may still answer reads
	}
	if len(m.sent) > 0 && m.sent[0].Seq > next {
		return nil, false, fmt.Errorf("%w: write %d is no longer kept (oldest %d)", ErrProtocol, next, m.sent[0].Seq)
	}
	i := 0
	if len(m.sent) > 0 {
		i = int(next - m.sent[0].Seq)
	}
	if i > len(m.sent) {
		i = len(m.sent)
	}
	ws := m.sent[i:min(len(m.sent), i+max)]
	live := m.sendLive && len(ws) == len(m.sent)-i
	if live {
		m.sendLive = false
	}
	return ws, live, nil
}

// LinkMark is what the successor link acts on. A step that leaves it as
// it was gave the link nothing new to send, so the link is not woken:
// waking it costs a futex call and two context switches, once per
// acknowledgement at the head and once per frame at the tail, which has
// no successor at all.
type LinkMark struct {
	gen, applied uint64
	succ         string
	live, held   bool
}

// LinkMark returns the link's mark now.
func (m *Machine) LinkMark() LinkMark {
	return LinkMark{gen: m.linkGen, applied: m.applied, succ: m.succ.Name, live: m.sendLive, held: m.now.Before(m.bypassUntil)}
}

// SuccessorAck takes the successor's acknowledgement: its position, its
// lease ask (0 for none), and whether it released its lease: it answers
// no more reads, so this node need not wait for the lease to run out.
func (m *Machine) SuccessorAck(gen uint64, pos Position, ask uint64, release bool) error {
	if gen != m.linkGen {
		return ErrStale
	}
	if release {
		m.linkGrant = time.Time{}
	}
	seq := pos.Committed
	if ask > 0 && m.leaseTerm > 0 && m.succState == succLive {
		// Only a live successor answers reads; Grant bounds the lease.
		m.grant = max(m.grant, ask)
	}
	if seq > m.applied || pos.Applied > m.applied {
		return fmt.Errorf("%w: successor reports %+v, only %d applied here", ErrProtocol, pos, m.applied)
	}
	m.ackedBy(seq)
	m.succApplied = max(m.succApplied, pos.Applied)
	switch m.succState {
	case succLive:
		m.advanceCommitted(m.succAcked)
	case succSyncing:
		m.maybeHandOff()
	}
	return nil
}

func (m *Machine) ackedBy(seq uint64) {
	if seq <= m.succAcked {
		return
	}
	m.succAcked = seq
	i := 0
	for ; i < len(m.sent) && m.sent[i].Seq <= seq; i++ {
	}
	// Reslice, never compact in place: the link may still be encoding
	// writes it got from Writes, which share this array.
	m.sent = m.sent[i:]
}

// maybeHandOff makes a caught-up successor the tail: from now on writes
// commit only when it acknowledges them, and it learns it is live from the
// marker on the next message.
//
// Only a live node may hand off: a node still catching up lacks writes its
// own predecessor committed, and so does everything it fed. Nor may it
// while a successor it bypassed may still answer reads (bypassUntil): the
// hand-off commits what the snapshot carried, which that one may lack, and
// the first acknowledgement after it would commit them at once.
func (m *Machine) maybeHandOff() {
	if m.live && m.succApplied == m.applied && !m.now.Before(m.bypassUntil) {
		m.succState = succLive
		m.sendLive = true
	}
}

// SuccessorLost says the link of generation gen broke. Until a new
// handshake, nothing more is committed through the successor.
func (m *Machine) SuccessorLost(gen uint64) {
	if gen != m.linkGen || m.succState == succNone {
		return
	}
	m.succState = succUnknown
	m.sendLive = false
	m.newLink()
}
