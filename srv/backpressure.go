package srv

import (
	"sync"
	"time"

	"github.com/panjf2000/gnet/v2"
)

// Backpressure. A connection whose unsent replies (gnet's outbound buffer,
// and the replies queued or held for it) reach Config.ReplyBudget is
// paused: the server stops decoding its requests, which wait in its
// inbound buffer, and does no work for it until it reads. gnet cannot stop
// reading a socket, and it says nothing when a connection's outbound
// buffer drains, so a paused connection is woken from time to time to look
// again (see resumer), and one whose inbound bytes grow past
// Config.ReplyBudget plus Config.MaxFrame while paused is closed: its
// client sends without reading.
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
	if !c.paused {
		c.paused = true
		c.lastUnsent = unsent
		s.cfg.Stats.pauses.Add(1)
		s.cfg.Stats.pausedNow.Add(1)
		s.resumer.add(c)
	}
	// Look again soon if the client read something since the last look.
	wait := max(min(2*time.Duration(c.pauseWait.Load()), pauseLastLook), pauseFirstLook)
	if unsent < c.lastUnsent {
		wait = pauseFirstLook
	}
	c.pauseWait.Store(int64(wait))
	c.lastUnsent = unsent
	s.setHeld(c, unsent+inbound)
	if inbound > s.cfg.ReplyBudget+s.cfg.MaxFrame {
		s.log.Warn("closing connection: client sends requests and does not read its replies", "conn", c.id, "remote", gc.RemoteAddr(), "unsent", unsent, "inbound", inbound)
		c.closeFor(CloseUnread)
		return admitClose
	}
	return admitWait
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
