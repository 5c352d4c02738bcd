package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/chaintable/chaintable/codec"
)

var (
	// ErrServer reports that the server answered a request with OP_ERROR.
	// The course protocol does not say why; for get and del the usual
	// reason is a missing key.
	ErrServer = errors.New("server answered OP_ERROR")

	// ErrProtocol reports a reply that does not fit its request: wrong
	// opcode or content type, or a reply to no request. The connection
	// it arrived on is closed, since its stream can no longer be trusted.
	ErrProtocol = errors.New("protocol error")

	// ErrClosed reports use of a Conn or Client after Close.
	ErrClosed = errors.New("connection closed")

	// ErrNotSent reports a request that failed before any of it was
	// written: the server cannot have seen it, so a write may go
	// elsewhere or be tried again without risking a second execution.
	ErrNotSent = errors.New("request not sent")
)

// Conn is a connection to one table server. It is safe for concurrent use:
// requests from several goroutines are pipelined on the one connection and
// each caller gets the reply to its own request, since the server answers
// in request order. A Conn that fails stays failed; dial a new one.
type Conn struct {
	addr     string
	nc       net.Conn
	maxReply int // the largest reply payload read

	// wmu makes queueing a request and writing it one step, so the queue
	// order is the wire order the replies will follow.
	wmu sync.Mutex

	mu      sync.Mutex
	pending []*call // written, not yet answered, oldest first
	err     error   // why the Conn is unusable; nil while it works

	exited chan struct{} // closed when readLoop returns
}

// A call is one request waiting for its reply.
type call struct {
	req   *codec.MessageT
	reply *codec.MessageT
	err   error
	done  chan struct{} // closed once reply or err is set
}

// DialConn connects to the table server at addr (host:port).
func DialConn(ctx context.Context, addr string) (*Conn, error) {
	return DialConnLimit(ctx, addr, codec.DefaultMaxFrame)
}

// DialConnLimit is DialConn taking replies of up to maxReply payload
// bytes: a larger one fails the Conn.
func DialConnLimit(ctx context.Context, addr string, maxReply int) (*Conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &Conn{addr: addr, nc: nc, maxReply: maxReply, exited: make(chan struct{})}
	go c.readLoop()
	slog.Debug("connected", "addr", addr)
	return c, nil
}

// Do sends req and returns the server's reply, which has the opcode and
// content type the protocol fixes for req. An OP_ERROR reply is returned
// as an error that wraps ErrServer. When ctx ends first, Do returns an
// error wrapping ctx.Err(): the request may still have been executed, and
// its late reply is dropped. Do must not modify req while it runs.
func (c *Conn) Do(ctx context.Context, req *codec.MessageT) (*codec.MessageT, error) {
	op := opName(req.GetOpcode())
	if _, _, ok := codec.ReplyOf(req.GetOpcode()); !ok {
		return nil, fmt.Errorf("%s %s: opcode %v is not a request", op, c.addr, req.GetOpcode())
	}
	return c.do(ctx, req, nil)
}

// do is Do, with stamp, when not nil, called on req just before it is
// encoded, in the order requests go on the wire.
func (c *Conn) do(ctx context.Context, req *codec.MessageT, stamp func(*codec.MessageT)) (*codec.MessageT, error) {
	op := opName(req.GetOpcode())
	cl := &call{req: req, done: make(chan struct{})}
	if err := c.send(ctx, cl, stamp); err != nil {
		return nil, fmt.Errorf("%s %s: %w", op, c.addr, err)
	}
	select {
	case <-cl.done:
		if cl.err != nil {
			return nil, fmt.Errorf("%s %s: %w", op, c.addr, cl.err)
		}
		return cl.reply, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("%s %s: %w", op, c.addr, ctx.Err())
	}
}

// send queues cl and writes its request. Once cl is queued, every failure
// reaches the caller through cl, so send reports only those before that.
func (c *Conn) send(ctx context.Context, cl *call, stamp func(*codec.MessageT)) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrNotSent, err)
	}
	var frame []byte
	var err error
	if stamp == nil {
		if frame, err = codec.AppendMessage(nil, cl.req); err != nil {
			return fmt.Errorf("%w: %w", ErrNotSent, err)
		}
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if stamp != nil {
		stamp(cl.req)
		if frame, err = codec.AppendMessage(nil, cl.req); err != nil {
			return fmt.Errorf("%w: %w", ErrNotSent, err)
		}
	}
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return fmt.Errorf("%w: %w", ErrNotSent, c.err)
	}
	c.pending = append(c.pending, cl)
	c.mu.Unlock()
	if err := c.write(ctx, frame); err != nil {
		// Part of the frame may be on the wire: the stream is unusable.
		c.fail(fmt.Errorf("write: %w", err))
	}
	return nil
}

// write writes frame, giving up when ctx ends. Only one write runs at a
// time (wmu), so the write deadline is this write's alone. It is set only
// once ctx has ended, so a deadline error always means ctx.Err().
func (c *Conn) write(ctx context.Context, frame []byte) error {
	if err := c.nc.SetWriteDeadline(time.Time{}); err != nil {
		return err
	}
	interrupted := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(interrupted)
		c.nc.SetWriteDeadline(time.Unix(1, 0))
	})
	_, err := c.nc.Write(frame)
	if !stop() {
		// The interruption runs or ran: let it finish before the next
		// write clears the deadline.
		<-interrupted
		if err != nil {
			err = ctx.Err()
		}
	}
	return err
}

// readLoop reads replies and hands each to the oldest pending call until
// the connection fails.
func (c *Conn) readLoop() {
	defer close(c.exited)
	r := bufio.NewReader(c.nc)
	for {
		reply := new(codec.MessageT)
		if err := codec.ReadMessage(r, c.maxReply, reply); err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("server closed the connection")
			}
			c.fail(err)
			return
		}
		c.mu.Lock()
		if len(c.pending) == 0 {
			c.mu.Unlock()
			c.fail(fmt.Errorf("%w: reply %v/%v to no request", ErrProtocol, reply.GetOpcode(), reply.GetCType()))
			return
		}
		cl := c.pending[0]
		c.pending[0] = nil
		c.pending = c.pending[1:]
		c.mu.Unlock()

		err := check(cl.req, reply)
		cl.reply, cl.err = reply, err
		close(cl.done)
		if err != nil && !errors.Is(err, ErrServer) {
			c.fail(err)
			return
		}
	}
}

// ServerError is an OP_ERROR reply. It matches ErrServer with errors.Is.
type ServerError struct {
	// Status says why, when the server says it (course servers do not).
	Status codec.Status
}

func (e *ServerError) Error() string {
	if e.Status == codec.Status_STATUS_OK {
		return ErrServer.Error()
	}
	return fmt.Sprintf("%v (%s)", ErrServer, strings.ToLower(strings.TrimPrefix(e.Status.String(), "STATUS_")))
}

// Is makes errors.Is(err, ErrServer) hold.
func (e *ServerError) Is(target error) bool { return target == ErrServer }

// check reports whether reply is the protocol's answer to req.
func check(req, reply *codec.MessageT) error {
	op, ct := reply.GetOpcode(), reply.GetCType()
	if op == codec.OpError && ct == codec.CtNone {
		return &ServerError{Status: reply.GetStatus()}
	}
	wantOp, wantCt, _ := codec.ReplyOf(req.GetOpcode())
	if op != wantOp || ct != wantCt {
		return fmt.Errorf("%w: reply %v/%v, want %v/%v", ErrProtocol, op, ct, wantOp, wantCt)
	}
	return nil
}

// fail makes err the reason the Conn is unusable, unless it already has
// one, closes the connection and fails every pending call.
func (c *Conn) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
		c.nc.Close()
		if err != ErrClosed {
			slog.Debug("connection lost", "addr", c.addr, "err", err)
		}
	}
	err, pending := c.err, c.pending
	c.pending = nil
	c.mu.Unlock()
	for _, cl := range pending {
		cl.err = err
		close(cl.done)
	}
}

// Broken reports whether the Conn has failed or been closed.
func (c *Conn) Broken() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err != nil
}

// Close closes the connection and waits for its reader to end. Requests
// still waiting for replies fail with ErrClosed.
func (c *Conn) Close() error {
	c.fail(ErrClosed)
	<-c.exited
	return nil
}

// opName is the name of op in errors: "get" for OP_GET.
func opName(op codec.MessageT_Opcode) string {
	return strings.ToLower(strings.TrimPrefix(op.String(), "OP_"))
}
