package srv

import (
	"sync"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/chaintable/chaintable/codec"
)

// Backpressure. A connection whose unsent replies (gnet's outbound buffer,
// and the replies queued or held for it) reach Config.ReplyBudget is
// paused: the server stops decoding its requests, which wait in its
// inbound buffer, and does no work for it until it reads. gnet cannot stop
// reading a socket, and it says nothing when a connection's outbound
// buffer drains, so a paused connection is woken from time to time to look
// again (see resumer). A paused connection may hold requests up to
// Config.ReplyBudget, plus the whole of a large request that has begun to
// arrive. Past that, one whose client read since the pause began is
// served anyway, so that a client that pipelines far ahead but reads every
// reply is slowed, never closed (its unread replies stay bounded by
// Config.MaxOutbound, as without backpressure), and one whose client read
// nothing since the pause began pauseGrace ago is closed: it sends and
// does not read; sooner if it holds more than ReplyBudget plus
// Config.MaxFrame.
//
// A pass over one connection is bounded too: after passFrames requests or
// passReply bytes of reply, the loop moves on to its other connections and
// comes back to this one through a wake.

// DefaultReplyBudget is the zero Config's ReplyBudget.
const DefaultReplyBudget = 1 << 20

// The most requests, and bytes of replies, one pass over a connection
// serves before the loop gives its other connections a turn.
const (
	passFrames = 512
	passReply  = 256 << 10
)

// How often a paused connection is looked at: soon after it pauses, or
// after its client read something, then less and less often while its
// client reads nothing.
const (
	pauseFirstLook = time.Millisecond
	pauseLastLook  = 64 * time.Millisecond
)

// pauseGrace is how long a paused connection past its inbound limit has
// to show that its client reads before it is closed as one that does not.
const pauseGrace = 500 * time.Millisecond

// admission is what a pass may do with a connection's requests.
type admission int

const (
	admitDecode admission = iota // decode and serve them
	admitWait                    // leave them: its replies are over budget
	admitClose                   // close it: it sends and does not read
)

// admit decides whether this pass decodes c's requests, pausing c while
// its unsent replies are over budget and resuming it once they are not.
func (s *Server) admit(c *Conn, gc gnet.Conn) admission {
	unsent := c.unread(gc)
	if unsent < s.cfg.ReplyBudget {
		if c.paused {
			s.unpause(c)
		}
		return admitDecode
	}
	inbound := gc.InboundBuffered()
	// The reply bytes the client's side took (its TCP acknowledged them):
	// it grows as the client reads, even while the socket's send buffer,
	// a few MiB the kernel wakes gnet for only once a third is free,
	// stays nearly full.
	drained := c.handed - gc.OutboundBuffered() - kernelUnsent(gc)
	if !c.paused {
		c.paused = true
		c.lastUnsent = unsent
		c.lastDrained = drained
		c.readWhilePaused = false
		c.pausedAt = time.Now()
		s.cfg.Stats.pauses.Add(1)
		s.cfg.Stats.pausedNow.Add(1)
		s.resumer.add(c)
	}
	// Look again soon if the client read something since the last look.
	wait := max(min(2*time.Duration(c.pauseWait.Load()), pauseLastLook), pauseFirstLook)
	if unsent < c.lastUnsent || drained > c.lastDrained {
		wait = pauseFirstLook
		c.readWhilePaused = true
	}
	c.pauseWait.Store(int64(wait))
	c.lastUnsent, c.lastDrained = unsent, drained
	s.setHeld(c, unsent+inbound)
	switch {
	case inbound <= s.pausedInboundLimit(c, gc, inbound):
		return admitWait
	case c.readWhilePaused:
		// A client that reads is served past its budget: its unread
		// replies then grow, up to Config.MaxOutbound, if it stops.
		return admitDecode
	case inbound <= s.cfg.ReplyBudget+s.cfg.MaxFrame && time.Since(c.pausedAt) < pauseGrace:
		// Its reading may not have shown yet: the kernel's send buffer
		// drains only as fast as the loop gets to it.
		return admitWait
	}
	s.log.Warn("closing connection: client sends requests and does not read its replies", "conn", c.id, "remote", gc.RemoteAddr(), "unsent", unsent, "inbound", inbound)
	c.closeFor(CloseUnread)
	return admitClose
}

// kernelUnsent is how many bytes written to gc's socket its peer has not
// acknowledged yet (SIOCOUTQ), 0 if the kernel does not say.
func kernelUnsent(gc gnet.Conn) int {
	n, err := unix.IoctlGetInt(gc.Fd(), unix.SIOCOUTQ)
	if err != nil {
		return 0
	}
	return n
}

// pausedInboundLimit is how many request bytes paused connection c, which
// holds inbound of them, may hold: ReplyBudget, and room for the first
// request whole when it is a large one still arriving.
func (s *Server) pausedInboundLimit(c *Conn, gc gnet.Conn, inbound int) int {
	limit := s.cfg.ReplyBudget
	if c.bodySize > 0 { // the pause came as its body was arriving
		return limit + c.bodySize - len(c.body)
	}
	hdr, err := gc.Peek(min(inbound, 6))
	if err != nil {
		return limit
	}
	if size, n, err := codec.ParseHeader(hdr, s.cfg.MaxFrame); err == nil && n > 0 {
		limit += n + size
	}
	return limit
}

// passOver reports whether a pass that has served frames requests, and
// made the replies in c.out, should stop decoding c's requests: then it
// arranges for the pass to be continued, by a wake, or once c resumes.
func (s *Server) passOver(c *Conn, gc gnet.Conn, frames int) bool {
	if c.final || frames < passFrames && len(c.out) < passReply && c.unread(gc) < s.cfg.ReplyBudget {
		return false
	}
	// The next pass looks at the budget first, and pauses c if it must.
	c.wake()
	return true
}

// unpause ends c's pause.
func (s *Server) unpause(c *Conn) {
	c.paused = false
	s.cfg.Stats.pausedNow.Add(-1)
	s.setHeld(c, 0)
	s.resumer.remove(c)
}

// setHeld records that paused connection c holds n bytes now.
func (s *Server) setHeld(c *Conn, n int) {
	s.cfg.Stats.heldBytes.Add(int64(n - c.held))
	c.held = n
}

// wake has c's event loop run a pass over it, unless one is due already.
func (c *Conn) wake() {
	if c.wakeQueued.CompareAndSwap(false, true) {
		_ = c.gc.Wake(nil)
	}
}

// A resumer wakes paused connections, each at its own pace (see
// Conn.pauseWait), so that their passes see when their clients read and
// resume them. It runs only while connections are paused.
type resumer struct {
	mu    sync.Mutex
	conns map[*Conn]time.Time // paused connections, and when to wake each
	kick  chan struct{}
	quit  chan struct{}
	done  chan struct{}
}

// newResumer starts a resumer that ends when quit is closed.
func newResumer(quit chan struct{}) *resumer {
	r := &resumer{conns: make(map[*Conn]time.Time), kick: make(chan struct{}, 1), quit: quit, done: make(chan struct{})}
	go r.run()
	return r
}

// add has r wake paused connection c.
func (r *resumer) add(c *Conn) {
	r.mu.Lock()
	r.conns[c] = time.Now().Add(pauseFirstLook)
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// remove forgets c, resumed or closed.
func (r *resumer) remove(c *Conn) {
	r.mu.Lock()
	delete(r.conns, c)
	r.mu.Unlock()
}

// run wakes connections as they fall due, and sleeps while none is paused.
func (r *resumer) run() {
	defer close(r.done)
	timer := time.NewTimer(pauseLastLook)
	defer timer.Stop()
	for {
		next := r.wakeDue()
		var tick <-chan time.Time
		if !next.IsZero() {
			timer.Reset(time.Until(next))
			tick = timer.C
		}
		select {
		case <-tick:
		case <-r.kick:
			timer.Stop()
		case <-r.quit:
			return
		}
	}
}

// wakeDue wakes the paused connections whose time has come and returns
// when the next one is due, or zero with none paused.
func (r *resumer) wakeDue() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	var next time.Time
	now := time.Now()
	for c, at := range r.conns {
		if !at.After(now) {
			c.wake()
			at = now.Add(max(time.Duration(c.pauseWait.Load()), pauseFirstLook))
			r.conns[c] = at
		}
		if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	return next
}
