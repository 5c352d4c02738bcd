package chain

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"google.golang.org/protobuf/proto"

	"github.com/chaintable/chaintable/codec"
	"github.com/chaintable/chaintable/srv"
)

// NodeConfig configures a Node.
type NodeConfig struct {
	// Store is the node's table.
	Store *srv.Store
	// MaxFrame bounds the frames the node reads from its successor; zero
	// means codec.DefaultMaxFrame.
	MaxFrame int
	// DialTimeout bounds connecting to the successor; zero means 2s.
	DialTimeout time.Duration
	// SessionLease returns a time before which ZooKeeper cannot have
	// expired the node's session (see zkwatch.Client.Lease); the node
	// asks it on every tick. Nil means a session that never expires, for
	// tests that feed the membership by hand.
	SessionLease func() time.Time
	// LeaseTerm is how long the tail may go on answering reads on its
	// predecessor's word while its own ZooKeeper session is not
	// connected (so a chain keeps serving while ZooKeeper restarts), and
	// how long a node waits, after losing a successor it leased to,
	// before it commits on its own. Zero means DefaultLeaseTerm.
	LeaseTerm time.Duration
	// HoldTimeout bounds how long the node holds a client request that it
	// cannot answer correctly yet (it lost its place, or a lease ran out)
	// before it gives up on it by closing that client's connection: a
	// client of the course protocol takes any OP_ERROR for "not found",
	// so it must never get one for a key that exists. Zero means
	// DefaultHoldTimeout.
	HoldTimeout time.Duration
	// ClientExpiry is how long the exactly-once records of a client that
	// writes nothing are kept, at the head (which decides for the chain);
	// zero means DefaultClientExpiry.
	ClientExpiry time.Duration
	// Logger receives the node's logs; nil means slog.Default().
	Logger *slog.Logger
	// Log, if set, is the node's write-ahead log (see OpenNode); nil
	// keeps everything in memory only.
	Log Log
}

// Node drives a Machine: it is the srv.Handler of a chain member, it keeps
// the link to the successor, and it takes membership and session changes.
// All methods are safe for concurrent use.
type Node struct {
	cfg   NodeConfig
	log   *slog.Logger
	store *srv.Store

	// mu guards m and blocks. Reads take it shared so that a read is
	// never executed while the node stops being the tail.
	mu     sync.RWMutex
	m      *Machine
	blocks blocks
	// applied is m.Applied() as of the end of the last step's apply, for
	// the Log (see Applied).
	applied atomic.Uint64

	// The successor connection and its generation, guarded by mu, so that
	// a change of successor closes it even while the link is blocked.
	conn    net.Conn
	connGen uint64

	// preds maps the srv connections that opened a link with a valid
	// hello to the member that said it: replication is taken only there.
	preds sync.Map // uint64 -> string

	released atomic.Bool // an acknowledgement released the read lease (see Drain)
	counters counters    // for Status

	diskFailed     chan struct{} // closed when the log failed (see DiskFailed)
	diskFailedOnce sync.Once
	deltaBroken    atomic.Bool // the log failed to give a delta (see sendDelta)

	fwd *forwarder // client requests this node passes on to other members

	// server, once set (see UseServer), reads the successor's
	// acknowledgements on its event loops; predConn is the predecessor's
	// link there, whose loop they are read on, so that the
	// acknowledgements they release upstream go out in the same pass.
	server   atomic.Pointer[srv.Server]
	predConn atomic.Pointer[srv.Conn]

	kick     chan struct{} // wakes the link: new writes, or a new successor
	linkMark LinkMark      // the machine's LinkMark as the link last saw it or was woken for (under mu)
	quit     chan struct{}
	wg       sync.WaitGroup
}

// DefaultLeaseTerm is the lease term of the zero NodeConfig.
const DefaultLeaseTerm = 2 * time.Second

// DefaultHoldTimeout is the hold timeout of the zero NodeConfig.
const DefaultHoldTimeout = 3 * time.Second

// retryHeld is how often a held request is tried again.
const retryHeld = 20 * time.Millisecond

// linkBatch is the most writes one replication frame carries, and
// linkBytes the most bytes of keys and values, unless one write alone
// has more: a frame must stay below the successor's largest frame.
const (
	linkBatch = 1024
	linkBytes = 4 << 20
)

// linkOverhead is what a replication or snapshot frame may add to the key
// and value of the one write it carries: names, numbers, field tags. A
// client write must leave that much room below the largest frame.
const linkOverhead = 4 << 10

// snapshotChunk is the payload size a snapshot frame aims for.
const snapshotChunk = 1 << 20

// NewNode returns a running node that is not yet a member: it serves
// nothing until Rejoin names it and SetView places it.
func NewNode(cfg NodeConfig) *Node {
	n := newNode(cfg)
	n.start()
	return n
}

// newNode returns a node that is not yet running.
func newNode(cfg NodeConfig) *Node {
	if cfg.MaxFrame <= 0 {
		cfg.MaxFrame = codec.DefaultMaxFrame
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.LeaseTerm <= 0 {
		cfg.LeaseTerm = DefaultLeaseTerm
	}
	if cfg.HoldTimeout <= 0 {
		cfg.HoldTimeout = DefaultHoldTimeout
	}
	n := &Node{
		cfg:   cfg,
		log:   cfg.Logger,
		store: cfg.Store,
		m:     NewMachine("", cfg.Store, cfg.LeaseTerm),
		kick:  make(chan struct{}, 1),
		quit:  make(chan struct{}),
		fwd:   newForwarder(cfg.DialTimeout),

		diskFailed: make(chan struct{}),
	}
	if cfg.ClientExpiry > 0 {
		n.m.SetClientExpiry(cfg.ClientExpiry)
	}
	return n
}

// start runs the node's link and clock.
func (n *Node) start() {
	n.wg.Add(2)
	go n.runLink()
	go n.runClock()
}

// heartbeat is how often an idle link and the machine's clock tick: often
// enough that the successor's lease never lapses while the link works.
func (n *Node) heartbeat() time.Duration { return n.cfg.LeaseTerm / 4 }

// renewSessionLease tells the machine the session's lease.
func (n *Node) renewSessionLease(m *Machine) {
	if n.cfg.SessionLease == nil {
		m.SetSessionLease(time.Now().Add(time.Hour))
		return
	}
	m.SetSessionLease(n.cfg.SessionLease())
}

// runClock ticks the machine, so that waits on time end without events.
func (n *Node) runClock() {
	defer n.wg.Done()
	t := time.NewTicker(n.heartbeat())
	defer t.Stop()
	for {
		select {
		case <-t.C:
			n.step(n.renewSessionLease)
		case <-n.quit:
			return
		}
	}
}

// Close stops the link to the successor and every forwarded request, and
// waits for them. A held request that would be tried again gives up
// instead, as at its hold timeout.
func (n *Node) Close() {
	close(n.quit)
	n.wg.Wait()
	n.fwd.close()
}

// closed reports whether Close was called: held requests end rather
// than being tried again.
func (n *Node) closed() bool {
	select {
	case <-n.quit:
		return true
	default:
		return false
	}
}

// UseServer has s, the server whose Handler the node is, read the
// successor's acknowledgements on its event loops, from the next link on:
// an acknowledgement then costs no wake-up of a goroutine, and the
// replies it releases to connections of that loop none of the loop.
// Without it, a goroutine of the link reads them.
func (n *Node) UseServer(s *srv.Server) { n.server.Store(s) }

// step runs f on the machine under the lock, then wakes whoever is done
// and the link.
func (n *Node) step(f func(m *Machine)) { n.stepIn(nil, f) }

// A passWaiter is a Waiter that can complete its reply within an event
// loop's pass (see srv.Pass).
type passWaiter interface {
	doneIn(pass *srv.Pass, pos Position, err error)
}

// stepIn is step on an event loop, in pass: the waiters done complete
// their replies through it.
func (n *Node) stepIn(pass *srv.Pass, f func(m *Machine)) {
	n.mu.Lock()
	n.m.Tick(time.Now())
	f(n.m)
	n.applied.Store(n.m.Applied())
	if n.cfg.Log != nil {
		// In apply order, before any other step applies more.
		if ws := n.m.TakeLogged(); len(ws) > 0 && n.cfg.Log.Append(ws) {
			n.cfg.Log.SaveSnapshot(n.m.Last(), n.m.DedupRecords())
		}
		if n.m.TakeAdopted() {
			n.cfg.Log.SnapshotInstalled(n.m.Last(), 0, n.m.DedupRecords())
		}
	}
	done, pos, failed := n.m.TakeDone()
	if n.conn != nil && n.connGen != n.m.linkGen {
		closeLink(n.conn)
		n.conn = nil
	}
	mark := n.m.LinkMark()
	wake := mark != n.linkMark
	n.linkMark = mark
	n.mu.Unlock()
	for _, w := range done {
		if pw, ok := w.(passWaiter); ok && pass != nil {
			pw.doneIn(pass, pos, nil)
			continue
		}
		w.Done(pos, nil)
	}
	for _, w := range failed {
		w.Done(Position{}, ErrUnavailable)
	}
	if wake {
		select {
		case n.kick <- struct{}{}:
		default:
		}
	}
}

// Rejoin makes the node the member named self, with empty state: at start,
// and after its session expired and it registered again.
func (n *Node) Rejoin(self string) {
	n.log.Info("joining the chain", "member", self)
	n.step(func(m *Machine) {
		m.Rejoin(self)
		n.renewSessionLease(m)
	})
}

// SetView installs the chain's membership, head first. It fails, and
// the node keeps its old view, if the node tracks holders and the record
// it was last told must first be brought in line with the view (see
// PlanHolders).
func (n *Node) SetView(members []Member) error {
	var err error
	n.step(func(m *Machine) {
		wasHead := m.IsHead()
		if err = m.SetView(members); err != nil {
			return
		}
		n.log.Debug("new view", "members", len(members), "state", m)
		if m.IsHead() && !wasHead && m.DataLost() {
			n.log.Error("became head before catching up with a predecessor that is gone: writes may be lost", "state", m)
		}
	})
	return err
}

// TrackHolders makes the node follow the holders record as process id
// (see Machine.TrackHolders).
func (n *Node) TrackHolders(id string) { n.step(func(m *Machine) { m.TrackHolders(id) }) }

// PlanHolders returns the holders record to write before installing
// members, from the record as read (see Machine.PlanHolders), and whether
// it changed.
func (n *Node) PlanHolders(hs Holders, members []Member) (Holders, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.m.PlanHolders(hs, members)
}

// SetHolders tells the node the holders record as last read or written.
func (n *Node) SetHolders(hs Holders) { n.step(func(m *Machine) { m.SetHolders(hs) }) }

// ShouldYield reports whether the node should move to the end of the
// chain (see Machine.ShouldYield).
func (n *Node) ShouldYield() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.m.ShouldYield()
}

// Waiting reports whether the node is first but may not lead, and the
// holders record it waits on.
func (n *Node) Waiting() (Holders, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.m.Waiting()
}

// Drain stops taking client writes and reads and waits, at most timeout,
// until every write the node applied is committed and, if it holds a read
// lease from a predecessor, until it has told the predecessor it gave the
// lease up: the first step of leaving the chain without losing work in
// flight, and without the predecessor waiting the lease out.
func (n *Node) Drain(timeout time.Duration) bool {
	var hasPred bool
	n.step(func(m *Machine) {
		m.Drain()
		hasPred = m.pred.Name != ""
	})
	deadline := time.Now().Add(timeout)
	for {
		n.mu.RLock()
		idle := n.m.Idle()
		n.mu.RUnlock()
		if idle && (!hasPred || n.released.Load()) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Live reports whether the node has caught up: it holds every committed
// write and answers reads from its own table.
func (n *Node) Live() bool {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.m.Live()
}

// State describes the node for logs and tests.
func (n *Node) State() string {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.m.String()
}

// Serve is the srv.Handler of a chain member.
func (n *Node) Serve(c *srv.Conn, req, reply *codec.MessageT) bool {
	switch op := req.GetOpcode(); {
	case op >= codec.MessageT_OP_HELLO:
		return n.serveLink(c, req, reply)
	case op == codec.OpStats:
		n.store.Execute(req, reply)
		n.fillStats(reply.Stats)
		return true
	}
	if err := srv.Check(req); err != nil {
		n.store.Stats.CountRequest(req.GetOpcode(), codec.Status_STATUS_BAD_REQUEST)
		srv.SetError(reply, codec.Status_STATUS_BAD_REQUEST)
		return true
	}
	if codec.IsWrite(req.GetOpcode()) {
		n.clientWrites(c, nil, codec.WriteOf(req), req.GetForwarded())
		return false
	}
	n.mu.RLock()
	err := n.m.CanRead(time.Now())
	clean := err == nil && n.readNeed(req) == 0
	if clean {
		n.store.Execute(req, reply)
	}
	n.mu.RUnlock()
	if clean {
		return true
	}
	r := &heldRead{n: n, p: c.Defer(), req: proto.Clone(req).(*codec.MessageT), deadline: time.Now().Add(n.cfg.HoldTimeout)}
	r.try()
	return false
}

// readNeed returns the write that must commit before req, a read, may be
// answered from the table as it is now (see Machine.ReadNeed). Called
// with mu held.
func (n *Node) readNeed(req *codec.MessageT) uint64 {
	if req.GetOpcode() == codec.OpGet {
		return n.m.ReadNeed(unsafe.Slice(unsafe.StringData(req.GetKey()), len(req.GetKey())))
	}
	return n.m.TableNeed()
}

// heldRead is a client's read that the node could not answer at once:
// its key is dirty here (it waits for the write it sees to commit), the
// node is catching up or leaving (it goes to a member that can answer), or
// the node cannot know for now that it is still in the chain (it is tried
// again until the hold timeout).
type heldRead struct {
	n        *Node
	p        *srv.Pending
	req      *codec.MessageT
	deadline time.Time
	frame    []byte       // the answer as of the write it waits for
	status   codec.Status // frame's outcome, counted once it is given
	expiry   *time.Timer  // ends the wait for that write at the deadline
	ended    atomic.Bool  // an outcome was given (and counted): the read is over
}

// try answers the read, or arranges for it to be answered.
func (r *heldRead) try() {
	n := r.n
	var fwd Member
	var err error
	answered := false
	n.step(func(m *Machine) {
		err = m.CanRead(time.Now())
		switch {
		case err == nil:
			need := n.readNeed(r.req)
			reply := new(codec.MessageT)
			// Counted when given: the wait may end without it.
			r.status = n.store.ExecuteUncounted(r.req, reply)
			if r.frame, err = codec.AppendMessage(nil, reply); err != nil {
				r.frame, r.status, err = srv.ErrorFrame(codec.Status_STATUS_BAD_REQUEST), codec.Status_STATUS_BAD_REQUEST, nil
			}
			if need <= m.Committed() {
				answered = true
				return
			}
			m.Await(need, r)
			r.p.Hold(len(r.frame))
			// The commit may never come (the chain is stuck): the
			// hold timeout bounds the wait as it bounds the others.
			r.expiry = time.AfterFunc(time.Until(r.deadline), func() { r.giveUp(ErrUnavailable) })
		case errors.Is(err, ErrCatchingUp) || errors.Is(err, ErrLeaving):
			// To the head, which holds every committed write (a leaving
			// head: to its successor), in one step: a read passed on from
			// member to member could go round while their views of the
			// chain disagree.
			switch {
			case m.index > 0:
				fwd = m.members[0]
			case errors.Is(err, ErrLeaving):
				fwd = m.succ
			}
		}
	})
	switch {
	case answered:
		r.give(r.status, r.frame)
	case err == nil:
		// Waits for the commit (Done).
	case fwd.Addr != "" && !r.req.GetForwarded():
		// A forwarded read goes no further: the member it came from
		// tries again.
		n.fwd.forward(fwd.Addr, proto.Clone(r.req).(*codec.MessageT), time.Until(r.deadline), r.forwarded)
	default:
		r.later(err)
	}
}

// Done takes the commit of the write the read waits for: the answer taken
// then is now the latest committed one. If the node gave up on that
// write instead (it lost its place), the read starts again.
func (r *heldRead) Done(_ Position, err error) {
	r.expiry.Stop()
	if err == nil {
		r.give(r.status, r.frame)
		return
	}
	r.later(err)
}

// give ends the read with frame, whose outcome is status, and counts it,
// unless it already ended: the commit it waits for and the expiry of
// that wait may both come.
func (r *heldRead) give(status codec.Status, frame []byte) {
	if !r.ended.CompareAndSwap(false, true) {
		return
	}
	r.n.store.Stats.CountRequest(r.req.GetOpcode(), status)
	if frame == nil {
		r.p.Abandon()
		return
	}
	r.p.CompleteFrame(frame)
}

// forwarded takes the answer of the member the read went to.
func (r *heldRead) forwarded(res forwardResult) {
	if res.reply != nil && !res.refused() {
		frame, err := codec.AppendMessage(nil, res.reply)
		if err != nil {
			frame = srv.ErrorFrame(codec.Status_STATUS_BAD_REQUEST)
		}
		r.give(res.status, frame)
		return
	}
	r.later(ErrUnavailable)
}

// later tries the read again soon, or gives up at the deadline, or once
// the node is closed.
func (r *heldRead) later(err error) {
	if r.req.GetForwarded() || time.Now().Add(retryHeld).After(r.deadline) || r.n.closed() {
		r.giveUp(err)
		return
	}
	time.AfterFunc(retryHeld, r.try)
}

// giveUp ends the read without an answer from the table: a forwarded read
// is refused with the reason, so that the node it came from tries
// elsewhere; a client's connection is closed, since a course client takes
// any OP_ERROR for "not found". Only the first answer given counts.
func (r *heldRead) giveUp(err error) {
	if r.req.GetForwarded() {
		r.give(Status(err), srv.ErrorFrame(Status(err)))
		return
	}
	r.n.log.Debug("gave up on a read", "op", r.req.GetOpcode(), "err", err)
	r.give(Status(err), nil)
}

// serveLink serves the replication messages of a predecessor's link.
func (n *Node) serveLink(c *srv.Conn, req, reply *codec.MessageT) bool {
	op := req.GetOpcode()
	if op != codec.MessageT_OP_HELLO {
		if from, ok := n.preds.Load(c.ID()); !ok || from != req.GetFrom() {
			return n.refuse(reply, fmt.Errorf("%w: %v on a connection without a hello from %q", ErrStale, op, req.GetFrom()))
		}
	}
	switch op {
	case codec.MessageT_OP_HELLO:
		n.mu.Lock()
		h, err := n.m.Hello(req.GetFrom(), req.GetTo())
		if err == nil {
			err = sameHost(c.RemoteAddr(), n.m.pred.Addr)
		}
		n.mu.Unlock()
		if err != nil {
			return n.refuse(reply, err)
		}
		n.preds.Store(c.ID(), req.GetFrom())
		n.predConn.Store(c)
		reply.Opcode, reply.CType = op+1, codec.CtNone
		reply.Seq, reply.Committed, reply.Synced, reply.Live, reply.LastEpoch = h.Applied, h.Committed, h.Synced, h.Live, h.LastEpoch
		return true
	case codec.MessageT_OP_SNAPSHOT:
		var err error
		n.step(func(m *Machine) {
			var end *SnapshotEnd
			if req.GetDone() {
				end = &SnapshotEnd{At: Point{Seq: req.GetSeq(), Epoch: req.GetLastEpoch()}, AheadTo: req.GetAheadTo()}
			}
			err = m.Snapshot(req.GetFrom(), req.GetTo(), req.GetReset_(), req.GetWrites(), req.GetDedup(), end)
			if err == nil && n.cfg.Log != nil {
				n.logSnapshot(m, req.GetReset_(), req.GetDone())
			}
			if err == nil && req.GetDone() {
				pos := m.Position()
				reply.Seq, reply.Committed, reply.Done = pos.Applied, pos.Committed, true
			}
		})
		if err != nil {
			return n.refuse(reply, err)
		}
		n.counters.snapshotReceived(req)
		reply.Opcode, reply.CType = op+1, codec.CtNone
		return true
	case codec.MessageT_OP_REPLICATE:
		var err error
		n.step(func(m *Machine) {
			var last, ask uint64
			grant := codec.Grant{ID: req.GetLeaseGrant(), TermUS: req.GetLeaseTermUs()}
			if last, ask, err = m.Replicate(req.GetFrom(), req.GetTo(), req.GetWrites(), req.GetLive(), grant); err == nil {
				w := ackWaiter{p: c.Defer(), last: last, ask: ask, release: m.Released()}
				if w.release {
					n.released.Store(true)
				}
				if !m.Live() {
					w.Done(m.Position(), nil)
					return
				}
				m.Await(last, w)
			}
		})
		if err != nil {
			return n.refuse(reply, err)
		}
		return false
	}
	return n.refuse(reply, fmt.Errorf("%w: opcode %v", ErrProtocol, op))
}

// ServeGet answers a plain get of a clean key without decoding it: Node is
// a srv.GetServer. Any other get takes the path of Serve.
func (n *Node) ServeGet(dst, key []byte) ([]byte, bool) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.m.CanRead(time.Now()) != nil || n.m.ReadNeed(key) != 0 {
		return dst, false
	}
	return n.store.AppendGet(dst, key), true
}

// ConnClosed forgets a closed connection: Node is a srv.ConnCloseHandler.
func (n *Node) ConnClosed(c *srv.Conn) {
	n.preds.Delete(c.ID())
	n.predConn.CompareAndSwap(c, nil)
}

// sameHost refuses a link from an address other than the predecessor's
// advertised host, so that a stray client elsewhere cannot feed the chain.
func sameHost(remote net.Addr, predAddr string) error {
	host, _, err := net.SplitHostPort(predAddr)
	if err != nil {
		return fmt.Errorf("%w: predecessor address %q: %v", ErrStale, predAddr, err)
	}
	tcp, ok := remote.(*net.TCPAddr)
	if !ok {
		return fmt.Errorf("%w: link from %v, not TCP", ErrStale, remote)
	}
	if ip := net.ParseIP(host); ip != nil && ip.Equal(tcp.IP) {
		return nil
	}
	if ips, err := net.LookupIP(host); err == nil {
		for _, ip := range ips {
			if ip.Equal(tcp.IP) {
				return nil
			}
		}
	}
	return fmt.Errorf("%w: link from %v, but the predecessor is at %s", ErrStale, tcp.IP, predAddr)
}

func (n *Node) refuse(reply *codec.MessageT, err error) bool {
	n.log.Debug("refused replication message", "err", err)
	srv.SetError(reply, Status(err))
	return true
}

// ServeWrite takes a plain put or del: Node is a srv.WriteServer.
func (n *Node) ServeWrite(c *srv.Conn, req *codec.WriteRequest) {
	n.clientWrites(c, unsafe.Slice(req, 1), nil, false)
}

// ServeWrites takes plain puts and dels that came one after the other on
// c, in one step: Node is a srv.WriteBatchServer. One lock, one clock
// reading and one wake of the link serve a client's whole batch.
func (n *Node) ServeWrites(c *srv.Conn, reqs []codec.WriteRequest) {
	n.clientWrites(c, reqs, nil, false)
}

// clientWrites takes puts and dels, reqs or else the one write w, and
// answers each, in order, with c now or later: at the head, once it
// commits; elsewhere, once the head answers it. forwarded says another
// member passed w on.
func (n *Node) clientWrites(c *srv.Conn, reqs []codec.WriteRequest, w *codec.WriteT, forwarded bool) {
	count := len(reqs)
	if w != nil {
		count = 1
	} else if count > 1 {
		// The keys only hash and compare, within the call.
		n.store.Prefetch(count, func(i int) string { return unsafe.String(unsafe.SliceData(reqs[i].Key), len(reqs[i].Key)) })
	}
	type routed struct {
		h    *heldWrite
		head Member
		err  error
	}
	var held []routed // writes this node cannot take, in order
	n.step(func(m *Machine) {
		start := sinceEpoch(m.now) // step's clock: no second reading
		if m.BeginWrites() {
			defer m.EndWrites()
		}
		for i := range count {
			var req *codec.WriteRequest
			op, size := w.GetOp(), len(w.GetKey())+len(w.GetValue())
			if w == nil {
				req = &reqs[i]
				op, size = req.Op, len(req.Key)+len(req.Value)
			}
			if size > n.cfg.MaxFrame-linkOverhead {
				// Its replication frame would not fit in the successor's
				// largest frame, and would hold up every write after it.
				n.log.Debug("refused write too large to replicate", "bytes", size, "max", n.cfg.MaxFrame-linkOverhead)
				n.store.Stats.CountRequest(op, codec.Status_STATUS_BAD_REQUEST)
				c.AnswerFrame(srv.ErrorFrame(codec.Status_STATUS_BAD_REQUEST))
				continue
			}
			cw := w
			if req != nil {
				cw = n.blocks.write(req)
			}
			seq, found, head, err := takeWrite(m, cw)
			switch {
			case seq != 0:
				waiter := n.blocks.waiter()
				*waiter = clientWaiter{p: c.Defer(), n: n, op: cw.Op, found: found, forwarded: forwarded, start: start}
				m.Await(seq, waiter)
			case err == nil || forwarded || !notTakenHere(err, cw):
				// Answered, or refused for good; a member that forwarded
				// the write decides for itself what to do next.
				n.answeredWrite(cw.Op, writeStatus(found, err), start)
				c.AnswerFrame(writeReplyFrame(cw.Op, found, err))
			default:
				hw := &heldWrite{n: n, p: c.Defer(), w: cw, deadline: m.now.Add(n.cfg.HoldTimeout)}
				held = append(held, routed{hw, head, err})
			}
		}
	})
	for _, r := range held {
		r.h.route(r.head, r.err)
	}
}

// takeWrite applies w if the node is the head, and returns the write to
// wait for, or 0 when w is answered now (refused, or committed at once);
// refused because the node is not the head, w goes to head. Called in a
// step.
func takeWrite(m *Machine, w *codec.WriteT) (wait uint64, found bool, head Member, err error) {
	seq, found, err := m.ClientWrite(w)
	if err == nil && seq > m.Committed() {
		return seq, found, Member{}, nil
	}
	if errors.Is(err, ErrNotHead) && m.index > 0 {
		head = m.members[0]
	}
	return 0, found, head, err
}

// notTakenHere reports whether the write w was refused only because this
// node cannot take it (not the head, or not now), so that it may go to
// the head or be tried again; any other refusal is the write's answer.
// A failed disk is an answer (STATUS_DISK_FAILED) only to a client that
// knows it (it numbers its writes) and tries elsewhere: a course client
// reads any OP_ERROR to a del as "not found", so its write waits as for a
// node that cannot take it now (until a new head takes it, or its
// connection closes as the node leaves).
func notTakenHere(err error, w *codec.WriteT) bool {
	return errors.Is(err, ErrNotHead) || errors.Is(err, ErrUnavailable) ||
		errors.Is(err, ErrDiskFailed) && w.ClientId == 0
}

// heldWrite is a client's write that reached a node that cannot apply it:
// not the head (it goes to the head), or a head that cannot take writes
// for now (it is tried again until the hold timeout).
type heldWrite struct {
	n        *Node
	p        *srv.Pending
	w        *codec.WriteT
	deadline time.Time
}

// try takes the write as the head, or routes it on.
func (h *heldWrite) try() {
	n := h.n
	var found, waiting bool
	var err error
	var head Member
	n.step(func(m *Machine) {
		var seq uint64
		if seq, found, head, err = takeWrite(m, h.w); seq == 0 {
			return
		}
		waiting = true
		m.Await(seq, &clientWaiter{p: h.p, n: n, op: h.w.Op, found: found, start: sinceEpoch(m.now)})
	})
	switch {
	case waiting:
	case err == nil || !notTakenHere(err, h.w):
		n.store.Stats.CountRequest(h.w.Op, writeStatus(found, err))
		h.p.CompleteFrame(writeReplyFrame(h.w.Op, found, err))
	default:
		h.route(head, err)
	}
}

// route sends the write to head, if known, or tries again later.
func (h *heldWrite) route(head Member, err error) {
	if head.Addr != "" {
		req := &codec.MessageT{Opcode: h.w.Op, CType: codec.CtKey, Key: h.w.Key, ClientId: h.w.ClientId, RequestId: h.w.RequestId, FirstUnacked: h.w.FirstUnacked}
		if h.w.Op == codec.OpPut {
			req.CType, req.Key, req.Entry = codec.CtEntry, "", &codec.EntryT{Key: h.w.Key, Value: h.w.Value}
		}
		h.n.fwd.forward(head.Addr, req, time.Until(h.deadline), h.forwarded)
		return
	}
	h.later(err)
}

// forwarded takes the head's answer.
func (h *heldWrite) forwarded(res forwardResult) {
	switch {
	case res.reply != nil && !res.refused() && res.status != codec.Status_STATUS_OUTCOME_UNKNOWN:
		h.n.store.Stats.CountRequest(h.w.Op, res.status)
		h.p.Complete(res.reply)
	case res.sent && (res.reply == nil || res.status == codec.Status_STATUS_OUTCOME_UNKNOWN) && h.w.ClientId == 0:
		// It may have been applied, and without its client's ids a
		// second try could apply it twice: its fate is the client's
		// to learn, as if the head it wrote to had failed.
		h.n.store.Stats.CountRequest(h.w.Op, codec.Status_STATUS_OUTCOME_UNKNOWN)
		h.p.Abandon()
	default:
		h.later(ErrUnavailable)
	}
}

// later tries the write again soon, or gives up at the deadline, or once
// the node is closed, by closing the client's connection: the write was
// never applied.
func (h *heldWrite) later(err error) {
	if time.Now().Add(retryHeld).After(h.deadline) || h.n.closed() {
		h.n.store.Stats.CountRequest(h.w.Op, Status(err))
		h.n.log.Debug("gave up on a write", "op", h.w.Op, "err", err)
		h.p.Abandon()
		return
	}
	time.AfterFunc(retryHeld, h.try)
}

// blocks hands out what the head keeps of each client write, from
// blocks shared by many writes: one allocation per blockWrites writes
// rather than three per write. A block is garbage once none of its writes
// is referenced, soon after they commit. Guarded by Node.mu.
type blocks struct {
	writes  []codec.WriteT
	waiters []clientWaiter
	bytes   []byte
}

const (
	blockWrites = 256
	blockBytes  = 32 << 10
)

// write returns a copy of req.
func (b *blocks) write(req *codec.WriteRequest) *codec.WriteT {
	size := len(req.Key) + len(req.Value)
	var w *codec.WriteT
	var dst []byte
	switch {
	case size > blockBytes/16:
		// A large entry gets a write and a buffer of its own, so that
		// the buffer is garbage, and recycled, as soon as its write is,
		// not once the last of a block's writes is.
		w, dst = new(codec.WriteT), srv.Buffer(size)
	case size > len(b.bytes):
		b.bytes = make([]byte, blockBytes)
		fallthrough
	default:
		dst, b.bytes = b.bytes[:size:size], b.bytes[size:]
	}
	if w == nil {
		if len(b.writes) == 0 {
			b.writes = make([]codec.WriteT, blockWrites)
		}
		w, b.writes = &b.writes[0], b.writes[1:]
	}
	w.Op, w.ClientId, w.RequestId, w.FirstUnacked = req.Op, req.ClientID, req.RequestID, req.FirstUnacked
	w.Key, w.Value = codec.CopyEntry(dst, req.Key, req.Value) // a del has no value
	return w
}

// waiter returns a zero clientWaiter.
func (b *blocks) waiter() *clientWaiter {
	if len(b.waiters) == 0 {
		b.waiters = make([]clientWaiter, blockWrites)
	}
	w := &b.waiters[0]
	b.waiters = b.waiters[1:]
	return w
}

// clientWaiter answers a client's write once it is committed.
type clientWaiter struct {
	p         *srv.Pending
	n         *Node
	op        codec.MessageT_Opcode
	found     bool
	forwarded bool          // another member passed the write on
	start     time.Duration // when the node took the write (see sinceEpoch)
}

// Done answers the write, or, when the node lost its place before the
// write committed, says that nobody knows whether it will: to the member
// that forwarded it, with a status; to a client, by closing its
// connection, as a failed head would.
func (w *clientWaiter) Done(pos Position, err error) { w.doneIn(nil, pos, err) }

// doneIn is Done within pass: clientWaiter is a passWaiter.
func (w *clientWaiter) doneIn(pass *srv.Pass, _ Position, err error) {
	switch {
	case err == nil:
		w.n.answeredWrite(w.op, writeStatus(w.found, nil), w.start)
		w.p.CompleteFrameIn(pass, writeReplyFrame(w.op, w.found, nil))
	case w.forwarded:
		w.n.answeredWrite(w.op, codec.Status_STATUS_OUTCOME_UNKNOWN, w.start)
		w.p.CompleteFrame(srv.ErrorFrame(codec.Status_STATUS_OUTCOME_UNKNOWN))
	default:
		w.n.answeredWrite(w.op, codec.Status_STATUS_OUTCOME_UNKNOWN, w.start)
		w.p.Abandon()
	}
}

// writeReplyFrame returns the framed answer to a put or del.
func writeReplyFrame(op codec.MessageT_Opcode, found bool, err error) []byte {
	if st := writeStatus(found, err); st != codec.Status_STATUS_OK {
		return srv.ErrorFrame(st)
	}
	return srv.WrittenFrame(op)
}

// writeStatus returns the outcome of a put or del.
func writeStatus(found bool, err error) codec.Status {
	switch {
	case err != nil:
		return Status(err)
	case !found:
		return codec.Status_STATUS_NOT_FOUND
	}
	return codec.Status_STATUS_OK
}

// ackWaiter acknowledges a replication frame to the predecessor, and asks
// for a read lease.
type ackWaiter struct {
	p       *srv.Pending
	last    uint64 // the last write of the frame acknowledged
	ask     uint64
	release bool
}

func (w ackWaiter) Done(pos Position, err error) { w.doneIn(nil, pos, err) }

// doneIn is Done within pass: ackWaiter is a passWaiter.
func (w ackWaiter) doneIn(pass *srv.Pass, pos Position, err error) {
	pos = AckPosition(w.last, pos)
	reply := new(codec.MessageT)
	if err != nil {
		srv.SetError(reply, Status(err))
	} else {
		reply.Opcode, reply.CType = codec.MessageT_OP_REPLICATE+1, codec.CtNone
		reply.Seq, reply.Committed, reply.LeaseAsk, reply.LeaseRelease = pos.Applied, pos.Committed, w.ask, w.release
	}
	w.p.CompleteIn(pass, reply)
}

// runLink keeps a link to the successor for as long as the node runs.
func (n *Node) runLink() {
	defer n.wg.Done()
	backoff := 10 * time.Millisecond
	for {
		n.mu.Lock()
		succ, gen := n.m.Successor()
		self := n.m.Self()
		n.linkMark = n.m.LinkMark()
		n.mu.Unlock()
		if succ.Name == "" {
			select {
			case <-n.kick:
				continue
			case <-n.quit:
				return
			}
		}
		start := time.Now()
		err := n.link(self, succ, gen)
		select {
		case <-n.quit:
			return
		default:
		}
		n.log.Debug("link to successor ended", "succ", succ.Name, "addr", succ.Addr, "err", err)
		n.counters.linkBreaks.Add(1)
		n.step(func(m *Machine) { m.SuccessorLost(gen) })
		if time.Since(start) > time.Second {
			backoff = 10 * time.Millisecond
		}
		select {
		case <-time.After(backoff):
		case <-n.quit:
			return
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

// errStaleLink ends a link whose generation is over.
var errStaleLink = errors.New("chain: link generation over")

// link runs one connection to the successor: handshake, optional
// snapshot, then writes as they come, until something breaks.
func (n *Node) link(self string, succ Member, gen uint64) error {
	conn, err := net.DialTimeout("tcp", succ.Addr, n.cfg.DialTimeout)
	if err != nil {
		return err
	}
	defer closeLink(conn)
	n.mu.Lock()
	if n.m.linkGen != gen {
		n.mu.Unlock()
		return errStaleLink
	}
	n.conn, n.connGen = conn, gen
	n.mu.Unlock()
	stopClose := make(chan struct{})
	defer close(stopClose)
	go func() {
		// A link blocked in a write must still end when the node closes.
		select {
		case <-n.quit:
			closeLink(conn)
		case <-stopClose:
		}
	}()
	r := bufio.NewReaderSize(conn, 64<<10)
	w := bufio.NewWriterSize(conn, 256<<10)
	var buf []byte
	send := func(m *codec.MessageT) error {
		var err error
		if buf, err = codec.AppendMessage(buf[:0], m); err != nil {
			return err
		}
		_, err = w.Write(buf)
		return err
	}

	if err := send(&codec.MessageT{Opcode: codec.MessageT_OP_HELLO, From: self, To: succ.Name}); err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return err
	}
	conn.SetReadDeadline(time.Now().Add(n.cfg.DialTimeout))
	var hello codec.MessageT
	if err := codec.ReadMessage(r, n.cfg.MaxFrame, &hello); err != nil {
		return fmt.Errorf("hello to %s: %w", succ.Addr, err)
	}
	conn.SetReadDeadline(time.Time{})
	if hello.GetOpcode() != codec.MessageT_OP_HELLO+1 {
		return fmt.Errorf("hello refused by %s: %v", succ.Name, hello.GetStatus())
	}
	var act LinkAction
	var dedup []*codec.DedupT
	logged := n.logged(hello.GetSeq())
	n.step(func(m *Machine) {
		act, err = m.SuccessorHello(gen, HelloReply{Applied: hello.GetSeq(), Committed: hello.GetCommitted(), Synced: hello.GetSynced(), Live: hello.GetLive(),
			LastEpoch: hello.GetLastEpoch(), Logged: logged})
		if err == nil && act.Snapshot {
			dedup = m.DedupRecords()
		}
	})
	if err != nil {
		return err
	}
	n.log.Info("linked to successor", "succ", succ.Name, "addr", succ.Addr, "snapshot", act.Snapshot, "delta", act.Delta, "from", act.Next)
	n.counters.linkConnects.Add(1)

	broken := make(chan error, 1)
	// The event loops read the socket itself, so bytes that came with the
	// hello reply and sit in r would be skipped: such a link keeps its
	// goroutine reader.
	if s := n.server.Load(); s != nil && r.Buffered() == 0 {
		ctx, cancel := context.WithTimeout(context.Background(), n.cfg.DialTimeout)
		err := s.Attach(ctx, conn, n.predConn.Load(), &ackReader{n: n, gen: gen, broken: broken})
		cancel()
		if err != nil {
			return err
		}
	} else {
		go func() { broken <- n.readAcks(r, gen) }()
	}

	if act.Snapshot {
		if err := n.sendSnapshot(send, self, succ.Name, dedup, Point{Seq: act.Next - 1, Epoch: act.Epoch}); err != nil {
			return err
		}
	}
	if act.Delta != 0 {
		sendFrame := func(b []byte) error { _, err := w.Write(b); return err }
		if err := n.sendDelta(sendFrame, self, succ.Name, act.Delta, act.Next); err != nil {
			return err
		}
	}
	next := act.Next
	idle := time.NewTimer(n.heartbeat())
	defer idle.Stop()
	heartbeat := false
	liveOwed := false // the live marker came with writes that did not fit in one frame
	for {
		n.mu.Lock()
		ws, live, err := n.m.Writes(gen, next, linkBatch)
		n.linkMark = n.m.LinkMark() // what the link has seen
		if fit := fitFrame(ws); len(fit) < len(ws) {
			// The marker says the successor has every write: it goes with
			// the last of these writes.
			ws, liveOwed, live = fit, liveOwed || live, false
		} else if liveOwed {
			live, liveOwed = true, false
		}
		var grant codec.Grant
		if len(ws) > 0 || live || heartbeat {
			grant = n.m.Grant(gen, time.Now())
		}
		n.mu.Unlock()
		if err != nil {
			return err
		}
		if len(ws) == 0 && !live && !heartbeat {
			// Everything is out: push it, then sleep until there is more,
			// or until the successor's lease needs renewing.
			if err := w.Flush(); err != nil {
				return err
			}
			select {
			case <-n.kick:
			case <-idle.C:
				heartbeat = true
				idle.Reset(n.heartbeat())
			case err := <-broken:
				return err
			case <-n.quit:
				return nil
			}
			continue
		}
		heartbeat = false
		// Each batch goes out at once: under load the next one gathers
		// while this one is written.
		buf = codec.AppendReplicate(buf[:0], self, succ.Name, ws, live, grant)
		if _, err := w.Write(buf); err != nil {
			return err
		}
		if err := w.Flush(); err != nil {
			return err
		}
		if len(ws) > 0 {
			next = ws[len(ws)-1].Seq + 1
			n.counters.batches.Observe(uint64(len(ws)))
		}
	}
}

// fitFrame returns the longest prefix of ws whose keys and values add up
// to at most linkBytes, or the first write alone if it is larger.
func fitFrame(ws []*codec.WriteT) []*codec.WriteT {
	size := 0
	for i, w := range ws {
		if size += len(w.Key) + len(w.Value); size > linkBytes && i > 0 {
			return ws[:i]
		}
	}
	return ws
}

// closeLink ends a link's connection, and the server's duplicate of it
// that reads its acknowledgements (see srv.Server.Attach).
func closeLink(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.CloseRead()
		tc.CloseWrite()
	}
	c.Close()
}

// readAcks takes the successor's replies until the link breaks, when the
// node has no server to read them (see UseServer).
func (n *Node) readAcks(r *bufio.Reader, gen uint64) error {
	for {
		var m codec.MessageT
		if err := codec.ReadMessage(r, n.cfg.MaxFrame, &m); err != nil {
			return err
		}
		if err := n.takeAcks(nil, gen, []*codec.MessageT{&m}); err != nil {
			return err
		}
	}
}

// takeAcks takes replies of the successor in one step, in pass if not nil.
func (n *Node) takeAcks(pass *srv.Pass, gen uint64, ms []*codec.MessageT) error {
	acks := ms[:0]
	for _, m := range ms {
		if m.GetOpcode() == codec.OpError {
			return fmt.Errorf("successor refused: %v", m.GetStatus())
		}
		if m.GetOpcode() == codec.MessageT_OP_SNAPSHOT+1 && !m.GetDone() {
			continue // a snapshot chunk arrived
		}
		acks = append(acks, m)
	}
	if len(acks) == 0 {
		return nil
	}
	var err error
	n.stepIn(pass, func(mc *Machine) {
		for _, m := range acks {
			pos := Position{Applied: m.GetSeq(), Committed: m.GetCommitted()}
			if err = mc.SuccessorAck(gen, pos, m.GetLeaseAsk(), m.GetLeaseRelease()); err != nil {
				return
			}
		}
	})
	return err
}

// ackReader takes the successor's replies on a server's event loop (see
// UseServer), and tells its link when they end.
type ackReader struct {
	n      *Node
	gen    uint64
	broken chan error // the link's: takes the first error
	msgs   []codec.MessageT
	ptrs   []*codec.MessageT
}

// Traffic takes the replies that arrived whole, in one step: the
// srv.AttachedReader of the link.
func (a *ackReader) Traffic(pass *srv.Pass, in []byte) (int, error) {
	used := 0
	a.ptrs = a.ptrs[:0]
	for i := 0; ; i++ {
		payload, k, err := codec.Split(in[used:], a.n.cfg.MaxFrame)
		if err != nil {
			return used, a.end(err)
		}
		if k == 0 {
			break
		}
		used += k
		if i == len(a.msgs) {
			a.msgs = append(a.msgs, codec.MessageT{})
		}
		m := &a.msgs[i]
		m.Reset()
		if err := codec.Unmarshal(payload, m); err != nil {
			return used, a.end(err)
		}
		a.ptrs = append(a.ptrs, m)
	}
	if err := a.n.takeAcks(pass, a.gen, a.ptrs); err != nil {
		return used, a.end(err)
	}
	return used, nil
}

// Closed tells the link that its acknowledgements ended.
func (a *ackReader) Closed(err error) {
	if err == nil {
		err = io.EOF
	}
	a.end(err)
}

// end tells the link err, unless it was told already, and returns err.
func (a *ackReader) end(err error) error {
	select {
	case a.broken <- err:
	default:
	}
	return err
}

// sendSnapshot streams the table and the exactly-once records as of write
// at, one stripe at a time so no lock is held for long. Writes applied
// meanwhile may or may not be in it; they follow the snapshot anyway, and
// applying them again in order ends in the same state.
func (n *Node) sendSnapshot(send func(*codec.MessageT) error, self, to string, dedup []*codec.DedupT, at Point) error {
	frame := &codec.MessageT{Opcode: codec.MessageT_OP_SNAPSHOT, From: self, To: to, Reset_: true, Dedup: dedup}
	size := proto.Size(frame) // the exactly-once records
	var entries []srv.Entry
	t := n.store.Table
	for i := range t.Stripes() {
		entries = t.AppendStripe(entries[:0], i)
		for _, e := range entries {
			// A large entry goes in a frame of its own, so that a frame
			// holds at most one write more than snapshotChunk allows, and
			// never that write and the exactly-once records.
			esize := len(e.Key) + len(e.Value) + 8
			if size > 0 && size+esize > snapshotChunk {
				n.counters.snapshotSent(frame)
				if err := send(frame); err != nil {
					return err
				}
				frame = &codec.MessageT{Opcode: codec.MessageT_OP_SNAPSHOT, From: self, To: to}
				size = 0
			}
			frame.Writes = append(frame.Writes, &codec.WriteT{Op: codec.OpPut, Key: e.Key, Value: e.Value})
			size += esize
		}
	}
	// Every write the scan saw was applied in a step that has ended once
	// the lock is had. So has a reset of this node's own table (a
	// snapshot from its predecessor) that the scan may have seen in part:
	// that step closed the link, and this frame is never delivered.
	n.mu.RLock()
	frame.AheadTo = n.m.Applied()
	n.mu.RUnlock()
	frame.Done, frame.Seq, frame.LastEpoch = true, at.Seq, at.Epoch
	n.counters.snapshotSent(frame)
	return send(frame)
}
