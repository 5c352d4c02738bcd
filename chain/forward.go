package chain

import (
	"context"
	"errors"
	"math"
	"sync"
	"time"

	"github.com/chaintable/chaintable/cli"
	"github.com/chaintable/chaintable/codec"
)

// forwarder passes client requests on to other members of the chain: a
// write that reached a node other than the head goes to the head, a read
// that reached a node still catching up (or leaving) goes to a member
// that can answer it. It keeps one pipelined connection per member
// address, made on first use and again after it fails, and closed once
// it has been idle for idleTimeout (the member it reaches may no longer be
// one this node passes anything to).
type forwarder struct {
	dialTimeout time.Duration
	idleTimeout time.Duration

	ctx    context.Context // ends when the forwarder closes
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	conns  map[string]*forwardConn
	sweep  *time.Timer // runs while conns is not empty
	closed bool        // by close: no request starts, so that wg.Add never races wg.Wait
}

// forwardConn is a connection, the requests in flight on it and when one
// last began or ended; the forwarder's mu guards both.
type forwardConn struct {
	*cli.Conn
	inFlight int
	lastUse  time.Time
}

// defaultForwardIdle is how long a forwarder keeps a connection nothing
// was passed on.
const defaultForwardIdle = time.Minute

func newForwarder(dialTimeout time.Duration) *forwarder {
	ctx, cancel := context.WithCancel(context.Background())
	return &forwarder{dialTimeout: dialTimeout, idleTimeout: defaultForwardIdle, ctx: ctx, cancel: cancel, conns: make(map[string]*forwardConn)}
}

// maxForwardedReply bounds the replies a member sends to requests passed
// on to it. Members are trusted, and a reply has no bound of its own (a
// gettable of a large table): a bound below one that comes would fail the
// connection and every request in flight on it.
const maxForwardedReply = math.MaxInt32

// forwardResult is how a forwarded request ended.
type forwardResult struct {
	reply  *codec.MessageT // the target's answer; nil if none came
	status codec.Status    // when reply is an OP_ERROR: the target's reason
	// sent says the request may have reached the target: a write whose
	// answer did not come may have been applied.
	sent bool
}

// refused reports whether the target declined the request without
// executing it, so it may go elsewhere or be tried again.
func (r forwardResult) refused() bool {
	if r.reply == nil {
		return !r.sent
	}
	return codec.NotTaken(r.status)
}

// forward sends req, which it takes over, to the member at addr and calls
// done with the outcome, on a goroutine of its own, within timeout. Once
// the forwarder is closed, it calls done at once with a request not sent.
func (f *forwarder) forward(addr string, req *codec.MessageT, timeout time.Duration, done func(forwardResult)) {
	req.Forwarded = true
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		done(forwardResult{})
		return
	}
	f.wg.Add(1)
	f.mu.Unlock()
	go func() {
		defer f.wg.Done()
		ctx, cancel := context.WithTimeout(f.ctx, timeout)
		defer cancel()
		done(f.do(ctx, addr, req))
	}()
}

func (f *forwarder) do(ctx context.Context, addr string, req *codec.MessageT) forwardResult {
	fc, err := f.conn(ctx, addr)
	if err != nil {
		return forwardResult{}
	}
	defer f.release(fc)
	conn := fc.Conn
	reply, err := conn.Do(ctx, req)
	var se *cli.ServerError
	switch {
	case err == nil:
		return forwardResult{reply: reply, sent: true}
	case errors.As(err, &se):
		return forwardResult{reply: &codec.MessageT{Opcode: codec.OpError, CType: codec.CtNone, Status: se.Status}, status: se.Status, sent: true}
	}
	f.drop(addr, conn)
	// A connection that failed after conn found it whole has taken none
	// of the request: it may go elsewhere or again.
	return forwardResult{sent: !errors.Is(err, cli.ErrNotSent)}
}

// conn returns the connection to addr, dialling it if there is none or it
// failed, with one more request in flight on it: release it when done.
func (f *forwarder) conn(ctx context.Context, addr string) (*forwardConn, error) {
	f.mu.Lock()
	if fc := f.conns[addr]; fc != nil && !fc.Broken() {
		fc.use()
		f.mu.Unlock()
		return fc, nil
	}
	f.mu.Unlock()
	dctx, cancel := context.WithTimeout(ctx, f.dialTimeout)
	defer cancel()
	c, err := cli.DialConnLimit(dctx, addr, maxForwardedReply)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if old := f.conns[addr]; old != nil && !old.Broken() {
		c.Close() // another request dialled first
		old.use()
		return old, nil
	}
	fc := &forwardConn{Conn: c}
	fc.use()
	f.conns[addr] = fc
	if f.sweep == nil && !f.closed {
		f.sweep = time.AfterFunc(f.idleTimeout, f.closeIdle)
	}
	return fc, nil
}

func (fc *forwardConn) use() {
	fc.inFlight++
	fc.lastUse = time.Now()
}

func (f *forwarder) release(fc *forwardConn) {
	f.mu.Lock()
	fc.inFlight--
	fc.lastUse = time.Now()
	f.mu.Unlock()
}

// closeIdle closes the connections with nothing in flight for
// idleTimeout, and runs again while any remain.
func (f *forwarder) closeIdle() {
	var idle []*forwardConn
	f.mu.Lock()
	f.sweep = nil
	if !f.closed {
		next := f.idleTimeout
		for addr, fc := range f.conns {
			if since := time.Since(fc.lastUse); fc.inFlight == 0 && since >= f.idleTimeout {
				idle = append(idle, fc)
				delete(f.conns, addr)
			} else if left := f.idleTimeout - since; left > 0 && left < next {
				next = left
			}
		}
		if len(f.conns) > 0 {
			f.sweep = time.AfterFunc(next, f.closeIdle)
		}
	}
	f.mu.Unlock()
	for _, fc := range idle {
		fc.Close() // waits for its reader: not under f.mu
	}
}

func (f *forwarder) drop(addr string, c *cli.Conn) {
	c.Close()
	f.mu.Lock()
	if fc := f.conns[addr]; fc != nil && fc.Conn == c {
		delete(f.conns, addr)
	}
	f.mu.Unlock()
}

// close ends every forwarded request and connection and waits for them.
func (f *forwarder) close() {
	f.mu.Lock()
	f.closed = true
	if f.sweep != nil {
		f.sweep.Stop()
		f.sweep = nil
	}
	f.mu.Unlock()
	f.cancel()
	f.wg.Wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	for addr, fc := range f.conns {
		fc.Close()
		delete(f.conns, addr)
	}
}
