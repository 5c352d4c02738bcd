package srv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/chaintable/chaintable/codec"
)

// A Handler answers the requests that arrive on a server's connections.
type Handler interface {
	// Serve answers req, which is valid only during the call and has not
	// been validated (see Check). It either fills reply, an empty message
	// owned by the server, and returns true, or returns false after
	// answering with c.AnswerFrame or taking c.Defer() to answer later.
	// Serve runs on an event loop: it must not block.
	Serve(c *Conn, req, reply *codec.MessageT) bool
}

// A GetServer is a Handler that answers plain get requests from their
// bytes, without decoding them into a MessageT: the allocation-free path
// for the most frequent request. The server uses it when the Handler
// implements it and the request is a plain get (see codec.ScanGet).
type GetServer interface {
	Handler
	// ServeGet appends the framed reply to a get of key to dst and
	// returns true, or returns dst as it was and false to have the
	// request decoded and given to Serve instead (to answer it later, say).
	// key is valid only during the call. It runs on an event loop: it must
	// not block.
	ServeGet(dst, key []byte) ([]byte, bool)
}

// A WriteServer is a Handler that takes plain puts and dels from their
// bytes (see codec.ScanWrite), the allocation-light path for writes.
type WriteServer interface {
	Handler
	// ServeWrite answers w with c.AnswerFrame or takes c.Defer() to
	// answer later. w's slices are valid only during the call. It runs on
	// an event loop: it must not block.
	ServeWrite(c *Conn, w *codec.WriteRequest)
}

// A WriteBatchServer is a WriteServer that takes the plain puts and dels
// that follow each other on a connection, within one pass over its
// requests, in one call: what it does once per call rather than per write
// (a lock, a clock reading, waking a replication link) is then done once
// per client batch. The server gives it no batch past a request of
// another kind, so that a read that follows a write is served after it.
type WriteBatchServer interface {
	WriteServer
	// ServeWrites answers each of ws, in order, as ServeWrite answers one:
	// with c.AnswerFrame, or by taking c.Defer() to answer later. ws and
	// its slices are valid only during the call. It runs on an event
	// loop: it must not block.
	ServeWrites(c *Conn, ws []codec.WriteRequest)
}

// A ConnCloseHandler is a Handler that wants to know when a connection
// closes, for example to forget state kept for it.
type ConnCloseHandler interface {
	Handler
	ConnClosed(c *Conn)
}

// Config configures a Server.
type Config struct {
	// Addr is the TCP address to listen on, host:port; port 0 picks one.
	Addr string
	// Handler answers requests.
	Handler Handler
	// Stats, when set, counts the connections open now, opened and
	// closed (by reason), and unparsable requests.
	Stats *Stats
	// MaxFrame is the largest request payload accepted; a larger one
	// closes its connection. Zero means codec.DefaultMaxFrame.
	MaxFrame int
	// EventLoops is the number of event loops; zero means one per CPU.
	EventLoops int
	// MaxConns caps the connections open at once; a connection beyond it
	// is closed as soon as it opens. Zero means DefaultMaxConns.
	MaxConns int
	// MaxOutbound caps the replies a connection may leave unread: a
	// client that keeps sending requests without reading the replies is
	// disconnected once this many bytes wait for it, written or still
	// queued behind a reply that is not ready. Zero means
	// DefaultMaxOutbound.
	MaxOutbound int
	// ReplyBudget is how many bytes of replies a connection may have
	// unsent before the server stops decoding its requests until its
	// client reads (see backpressure.go). Zero means DefaultReplyBudget.
	ReplyBudget int
	// SendBuffer, when positive, fixes each connection's kernel send
	// buffer (SO_SNDBUF) at this many bytes; otherwise the kernel sizes
	// it, up to a few MiB. Replies the kernel holds are not counted by
	// ReplyBudget: a client is paused only once they fill it.
	SendBuffer int
	// IdleTimeout, when positive, closes connections that sent nothing
	// for that long.
	IdleTimeout time.Duration
	// Logger receives the server's logs; nil means slog.Default().
	Logger *slog.Logger
}

// Defaults for the zero Config.
const (
	DefaultMaxConns    = 10000
	DefaultMaxOutbound = 64 << 20
)

// HalfClosedWait bounds how long the server goes on writing the replies it
// owes a client that shut down its side of the connection (a script
// piping requests through nc -N, say) once it has read them all.
const HalfClosedWait = 30 * time.Second

// Server is a running gnet server.
type Server struct {
	gnet.BuiltinEventEngine
	cfg  Config
	log  *slog.Logger
	addr string
	eng  gnet.Engine
	// loopsUp is closed at the first OnTick, which gnet runs once it
	// has set up its event loops.
	loopsUp    chan struct{}
	loopsUpOne sync.Once
	done       chan error
	nextID     atomic.Uint64

	getServer   GetServer   // cfg.Handler, when it is one
	writeServer WriteServer // cfg.Handler, when it is one
	batchServer WriteBatchServer

	conns  sync.Map     // id -> *Conn, for the idle sweep
	bodies atomic.Int64 // bytes of bodyBudget taken

	quit chan struct{} // closed by Stop

	attachMu  sync.Mutex
	stopping  bool           // Stop has begun: Attach refuses
	attaching sync.WaitGroup // Attach calls under way, which Stop waits for
	resumer   *resumer       // wakes paused connections
	draining  sync.WaitGroup // writers of half-closed connections' replies
}

// Start listens on cfg.Addr and serves in the background until Stop.
func Start(cfg Config) (*Server, error) {
	if cfg.Handler == nil {
		return nil, errors.New("srv: Config.Handler is nil")
	}
	if cfg.MaxFrame <= 0 {
		cfg.MaxFrame = codec.DefaultMaxFrame
	}
	if cfg.EventLoops <= 0 {
		cfg.EventLoops = runtime.NumCPU()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Stats == nil {
		cfg.Stats = new(Stats)
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.MaxOutbound <= 0 {
		cfg.MaxOutbound = DefaultMaxOutbound
	}
	if cfg.ReplyBudget <= 0 {
		cfg.ReplyBudget = DefaultReplyBudget
	}
	if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
		return nil, fmt.Errorf("srv: listen address %q: %w", cfg.Addr, err)
	}
	s := &Server{cfg: cfg, log: cfg.Logger, loopsUp: make(chan struct{}), done: make(chan error, 1), quit: make(chan struct{})}
	s.getServer, _ = cfg.Handler.(GetServer)
	s.writeServer, _ = cfg.Handler.(WriteServer)
	s.batchServer, _ = cfg.Handler.(WriteBatchServer)
	opts := []gnet.Option{
		gnet.WithMulticore(true),
		gnet.WithNumEventLoop(cfg.EventLoops),
		gnet.WithTCPNoDelay(gnet.TCPNoDelay),
		gnet.WithReuseAddr(true),
		gnet.WithLogger(gnetLogger{cfg.Logger}),
		// The ticker also tells Attach that the event loops are up.
		gnet.WithTicker(true),
		// Attach registers connections while the engine accepts others,
		// which gnet allows only with this balancing.
		gnet.WithLoadBalancing(gnet.LeastConnections),
	}
	if cfg.SendBuffer > 0 {
		opts = append(opts, gnet.WithSocketSendBuffer(cfg.SendBuffer))
	}
	// The loops accept connections before Start returns: one may pause
	// at once, and needs the resumer.
	s.resumer = newResumer(s.quit)
	go func() { s.done <- gnet.Run(s, "tcp://"+cfg.Addr, opts...) }()
	// gnet calls OnBoot before it opens its event loops' pollers, and
	// ticks once they are all open: wait for that first tick, so that
	// the server Start returns is whole (every descriptor it will hold
	// while idle is open, and Register may look at its loops).
	select {
	case <-s.loopsUp:
		return s, nil
	case err := <-s.done:
		close(s.quit)
		<-s.resumer.done
		if err == nil {
			err = errors.New("stopped before it started")
		}
		return nil, fmt.Errorf("srv: listen on %s: %w", cfg.Addr, err)
	}
}

// Addr returns the address the server listens on, with the port it got.
func (s *Server) Addr() string { return s.addr }

// Stop closes the listener and every connection and waits for the event
// loops to end.
func (s *Server) Stop(ctx context.Context) error {
	// An enrolment the loops never take leaves gnet's goroutine waiting
	// for good and its duplicate of the socket open: let those under way
	// finish first, and refuse new ones.
	s.attachMu.Lock()
	s.stopping = true
	s.attachMu.Unlock()
	s.attaching.Wait()
	if err := s.eng.Stop(ctx); err != nil {
		return fmt.Errorf("srv: stop: %w", err)
	}
	select {
	case <-s.done:
	case <-ctx.Done():
		return fmt.Errorf("srv: stop: %w", ctx.Err())
	}
	close(s.quit)
	<-s.resumer.done
	s.draining.Wait()
	return nil
}

// OnBoot learns the bound address (the port may have been 0).
func (s *Server) OnBoot(eng gnet.Engine) gnet.Action {
	s.eng = eng
	s.addr = s.cfg.Addr
	if fd, err := eng.Dup(); err == nil {
		if sa, err := unix.Getsockname(fd); err == nil {
			host, _, _ := net.SplitHostPort(s.cfg.Addr)
			switch a := sa.(type) {
			case *unix.SockaddrInet4:
				s.addr = net.JoinHostPort(host, strconv.Itoa(a.Port))
			case *unix.SockaddrInet6:
				s.addr = net.JoinHostPort(host, strconv.Itoa(a.Port))
			}
		}
		unix.Close(fd)
	}
	return gnet.None
}

// OnOpen attaches the per-connection state, or refuses a connection over
// the cap.
func (s *Server) OnOpen(gc gnet.Conn) ([]byte, gnet.Action) {
	if a, ok := gc.Context().(*attached); ok {
		a.pass.el = gc.EventLoop() // its loop for good, before any traffic
		a.opened.Store(true)
		return nil, gnet.None
	}
	c := &Conn{id: s.nextID.Add(1), gc: gc, remote: gc.RemoteAddr()}
	gc.SetContext(c)
	s.cfg.Stats.opened.Add(1)
	if s.cfg.Stats.clients.Add(1) > int64(s.cfg.MaxConns) {
		c.closeFor(CloseOverLimit)
		s.log.Warn("refusing connection: too many open", "remote", gc.RemoteAddr(), "max", s.cfg.MaxConns)
		return nil, gnet.Close
	}
	if s.cfg.IdleTimeout > 0 {
		c.touch()
		s.conns.Store(c.id, c)
	}
	s.log.Debug("connection opened", "conn", c.id, "remote", gc.RemoteAddr())
	return nil, gnet.None
}

// OnClose forgets the connection. gnet closes a connection as soon as it
// reads its end: a client that shut down only its sending side still
// gets the replies it is owed, written from a descriptor of its own.
func (s *Server) OnClose(gc gnet.Conn, err error) gnet.Action {
	if a, ok := gc.Context().(*attached); ok {
		a.reader.Closed(err)
		return gnet.None
	}
	c := gc.Context().(*Conn)
	c.gone = true
	if errors.Is(err, io.EOF) && s.serveRest(c, gc) {
		s.keepHalfClosed(c, gc)
	}
	s.cfg.Stats.clients.Add(-1)
	s.cfg.Stats.closed[c.closeReason.Load()].Add(1)
	s.conns.Delete(c.id)
	if c.paused {
		s.unpause(c)
	}
	if c.reserved > 0 {
		putBody(c.body)
		c.body = nil
	}
	s.release(c)
	if h, ok := s.cfg.Handler.(ConnCloseHandler); ok {
		h.ConnClosed(c)
	}
	s.log.Debug("connection closed", "conn", c.id, "err", err)
	return gnet.None
}

// OnTraffic decodes every complete frame, serves it, and writes all the
// replies that are ready, in request order, with one write.
func (s *Server) OnTraffic(gc gnet.Conn) gnet.Action {
	if a, ok := gc.Context().(*attached); ok {
		return s.attachedTraffic(a, gc)
	}
	c := gc.Context().(*Conn)
	c.wakeQueued.Store(false)
	if c.closing {
		return gnet.Close
	}
	if s.cfg.IdleTimeout > 0 && gc.InboundBuffered() > c.inboundLeft {
		c.touch() // new bytes, not just those a pass left
	}
	switch s.admit(c, gc) {
	case admitDecode:
		if act := s.decode(c, gc); act != gnet.None {
			return act
		}
	case admitClose:
		return gnet.Close
	}
	c.inboundLeft = gc.InboundBuffered()
	c.flushReady()
	if unread := c.unread(gc); unread > s.cfg.MaxOutbound {
		// Replies that were waiting behind a deferred one count too.
		s.log.Warn("closing connection: client does not read its replies", "conn", c.id, "remote", gc.RemoteAddr(), "unread", unread)
		c.closeFor(CloseUnread)
		return gnet.Close
	}
	sent := len(c.out)
	if sent > 0 {
		gc.Write(c.out)
		c.handed += sent
		c.out = c.out[:0]
	}
	if c.closing {
		// gnet writes what is queued before it closes.
		s.log.Debug("closing connection: a reply was abandoned", "conn", c.id)
		return gnet.Close
	}
	// A large output buffer stays while the connection's passes fill a
	// good part of it (a client reading large values one by one: new
	// memory for each would cost a page fault per 4 KiB), not for good.
	if cap(c.out) > keptBuffer && sent < cap(c.out)/4 {
		c.out = nil
	}
	if cap(c.scratch) > keptBuffer {
		c.scratch = nil
	}
	return gnet.None
}

// Frames of at least largeFrame payload bytes that do not arrive in one
// piece are read into a buffer of their own; smaller ones wait in gnet's.
// Buffers above keptBuffer bytes are dropped once used.
const (
	largeFrame = 64 << 10
	keptBuffer = 1 << 20
)

// bodyBudget bounds the bytes that the server allocates, all connections
// together, for large frames on the word of their headers, before the
// bytes arrive. Beyond it, a body grows with the bytes that did arrive, so
// that clients that declare large frames and send nothing cannot make the
// server hold more than this.
const bodyBudget = 256 << 20

// decode serves the complete frames of gc's inbound bytes.
//
// A frame that has not arrived whole is not looked at again until it has:
// Peek hands out a contiguous copy of everything buffered, so peeking at a
// 10 MB frame on each of the hundreds of reads it arrives in would copy it
// hundreds of times. A large frame's payload goes instead into c.body, read
// there as it arrives; a small one's waits in gnet's buffer until c.need
// bytes are there.
func (s *Server) decode(c *Conn, gc gnet.Conn) gnet.Action {
	if c.bodySize > 0 {
		done, err := c.fillBody(gc)
		if err != nil {
			s.log.Debug("closing connection", "conn", c.id, "remote", gc.RemoteAddr(), "reason", err)
			c.closeFor(CloseBadFrame)
			return gnet.Close
		}
		if !done {
			return gnet.None
		}
		body, pooled := c.body, c.reserved > 0
		c.body, c.bodySize = nil, 0
		s.release(c)
		closing := s.serveFrame(c, gc, body)
		s.serveWrites(c) // before the body goes back to its pool
		if pooled {
			putBody(body) // the Handler keeps nothing of a request
		}
		if closing {
			return gnet.Close
		}
	}
	if gc.InboundBuffered() < c.need {
		return gnet.None
	}
	buf, _ := gc.Peek(-1)
	used := 0
	for frames := 0; ; frames++ {
		if s.passOver(c, gc, frames) {
			// The rest waits whole in gnet's buffer for the next pass.
			s.serveWrites(c)
			c.need = 0
			if used > 0 {
				gc.Discard(used)
			}
			return gnet.None
		}
		payload, n, err := codec.Split(buf[used:], s.cfg.MaxFrame)
		if err != nil {
			s.serveWrites(c) // as the requests before it were served
			s.log.Warn("closing connection", "conn", c.id, "remote", gc.RemoteAddr(), "reason", err)
			c.closeFor(CloseBadFrame)
			return gnet.Close
		}
		if n == 0 {
			break
		}
		used += n
		if s.serveFrame(c, gc, payload) {
			s.serveWrites(c)
			return gnet.Close
		}
	}
	// The writes gathered point into buf: served before it is discarded.
	s.serveWrites(c)
	rest := buf[used:]
	// Split checked this header already: no error.
	size, hdr, _ := codec.ParseHeader(rest, s.cfg.MaxFrame)
	switch {
	case hdr > 0 && size >= largeFrame:
		c.bodySize = size
		if s.bodies.Add(int64(size)) <= bodyBudget {
			// Within the budget the body comes whole at once: growing
			// it costs copies and clearing.
			c.reserved, c.body = size, getBody(size)
		} else {
			s.bodies.Add(-int64(size))
		}
		c.body = append(c.grow(len(rest)-hdr), rest[hdr:]...)
		used, c.need = len(buf), 0
	case hdr > 0:
		c.need = hdr + size
	case len(rest) >= 2:
		c.need = 6 // the long form of the header
	default:
		c.need = len(rest) + 1
	}
	if used > 0 {
		// Discard(0) would drop the whole inbound buffer, partial frame included.
		gc.Discard(used)
	}
	return gnet.None
}

// release gives back the part of bodyBudget that c's body took.
func (s *Server) release(c *Conn) {
	s.bodies.Add(-int64(c.reserved))
	c.reserved = 0
}

// serveFrame serves one request and reports whether its connection must
// close because its client does not read its replies.
func (s *Server) serveFrame(c *Conn, gc gnet.Conn, payload []byte) bool {
	s.serve(c, payload)
	// Checked per request: one read can carry enough requests to make far
	// more output than the cap.
	unread := c.unread(gc)
	if unread <= s.cfg.MaxOutbound {
		return false
	}
	s.log.Warn("closing connection: client does not read its replies", "conn", c.id, "remote", gc.RemoteAddr(), "unread", unread)
	c.closeFor(CloseUnread)
	return true
}

// serveRest serves the requests a half-closed connection sent that a
// pass left for the next (see passOver), and reports whether replies are
// owed to it. It gives up on them, as keepHalfClosed would, if gnet still
// holds bytes for the connection.
func (s *Server) serveRest(c *Conn, gc gnet.Conn) bool {
	if gc.OutboundBuffered() > 0 || c.closing {
		return len(c.queue) > 0
	}
	c.final = true
	s.decode(c, gc)
	return len(c.queue) > 0 || len(c.out) > 0
}

// keepHalfClosed goes on writing the replies queued on a connection that
// gnet is closing, on a duplicate of its descriptor, since gnet has no way
// to keep a half-closed connection. It gives up if gnet still holds bytes
// for the connection, which it writes (as far as the socket takes them)
// after OnClose: the stream would no longer be in order.
func (s *Server) keepHalfClosed(c *Conn, gc gnet.Conn) {
	if gc.OutboundBuffered() > 0 {
		s.log.Debug("half-closed connection with unwritten replies: closing", "conn", c.id)
		return
	}
	fd, err := unix.Dup(gc.Fd())
	if err != nil {
		s.log.Warn("cannot keep a half-closed connection", "conn", c.id, "err", err)
		return
	}
	f := os.NewFile(uintptr(fd), "half-closed")
	nc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		s.log.Warn("cannot keep a half-closed connection", "conn", c.id, "err", err)
		return
	}
	kick := make(chan struct{}, 1)
	// From here on, Pendings kick this writer instead of waking gnet; the
	// event loop never touches c again.
	c.halfClosed.Store(&kick)
	s.draining.Add(1)
	go s.writeOwed(c, nc, kick)
}

// writeOwed writes c's queued replies to nc as they become ready, for at
// most HalfClosedWait, then closes nc.
func (s *Server) writeOwed(c *Conn, nc net.Conn, kick chan struct{}) {
	defer s.draining.Done()
	defer nc.Close()
	deadline := time.NewTimer(HalfClosedWait)
	defer deadline.Stop()
	nc.SetWriteDeadline(time.Now().Add(HalfClosedWait))
	for {
		c.flushReady()
		if len(c.out) > 0 {
			if _, err := nc.Write(c.out); err != nil {
				s.log.Debug("half-closed connection", "conn", c.id, "err", err)
				return
			}
			c.out = c.out[:0]
		}
		if len(c.queue) == 0 || c.closing {
			return // all written, or a reply abandoned
		}
		select {
		case <-kick:
		case <-deadline.C:
			s.log.Debug("half-closed connection: replies still owed after the wait", "conn", c.id, "owed", len(c.queue))
			return
		case <-s.quit:
			return
		}
	}
}

// OnTick closes idle connections, if IdleTimeout is set.
func (s *Server) OnTick() (time.Duration, gnet.Action) {
	s.loopsUpOne.Do(func() { close(s.loopsUp) })
	if s.cfg.IdleTimeout <= 0 {
		return time.Hour, gnet.None
	}
	now := time.Now().UnixNano()
	s.conns.Range(func(_, v any) bool {
		c := v.(*Conn)
		if idle := time.Duration(now - c.lastActive.Load()); idle > s.cfg.IdleTimeout {
			s.log.Debug("closing idle connection", "conn", c.id, "idle", idle)
			c.closeFor(CloseIdle)
			c.gc.Close()
		}
		return true
	})
	return min(s.cfg.IdleTimeout/2, time.Second), gnet.None
}

var errorFrame = ErrorFrame(codec.Status_STATUS_BAD_REQUEST)

func (s *Server) serve(c *Conn, payload []byte) {
	if s.batchServer != nil {
		if codec.ScanWrite(payload, &c.write) {
			c.writes = append(c.writes, c.write)
			return
		}
		s.serveWrites(c) // they come before this request
	}
	if s.getServer != nil {
		if key, ok := codec.ScanGet(payload); ok {
			if len(c.queue) == 0 {
				if c.out, ok = s.getServer.ServeGet(c.out, key); ok {
					return
				}
			} else if c.scratch, ok = s.getServer.ServeGet(c.scratch[:0], key); ok {
				c.answer(c.scratch)
				return
			}
		}
	}
	if s.writeServer != nil && codec.ScanWrite(payload, &c.write) {
		s.writeServer.ServeWrite(c, &c.write)
		s.finish(c, 1)
		return
	}
	if err := codec.Unmarshal(payload, &c.req); err != nil {
		s.log.Debug("unparsable request", "conn", c.id, "err", err)
		s.cfg.Stats.CountRequest(codec.MessageT_OP_BAD, codec.Status_STATUS_BAD_REQUEST)
		c.answer(errorFrame)
		return
	}
	c.reply.Reset()
	if !s.cfg.Handler.Serve(c, &c.req, &c.reply) {
		s.finish(c, 1)
		return
	}
	frame, err := codec.AppendMessage(c.scratch[:0], &c.reply)
	if err != nil {
		s.log.Error("cannot encode reply", "conn", c.id, "err", err)
		frame = errorFrame
	}
	c.scratch = frame[:0]
	c.answer(frame)
}

// serveWrites gives the Handler the writes gathered on c, if any.
func (s *Server) serveWrites(c *Conn) {
	if len(c.writes) == 0 {
		return
	}
	s.batchServer.ServeWrites(c, c.writes)
	s.finish(c, len(c.writes))
	clear(c.writes) // they point into the connection's inbound bytes
	c.writes = c.writes[:0]
}

// finish checks that a Handler answered the n requests it was given
// through c without filling a reply: each with a frame, or a promise to
// answer later.
func (s *Server) finish(c *Conn, n int) {
	if c.answers != n {
		panic(fmt.Sprintf("srv: Handler answered %d of %d requests with AnswerFrame or Defer", c.answers, n))
	}
	c.answers = 0
}

func mustFrame(m *codec.MessageT) []byte {
	b, err := codec.AppendMessage(nil, m)
	if err != nil {
		panic(err)
	}
	return b
}

// Conn is the server's state for one connection.
type Conn struct {
	id     uint64
	gc     gnet.Conn
	remote net.Addr

	// Event-loop only.
	req, reply codec.MessageT
	write      codec.WriteRequest
	writes     []codec.WriteRequest // plain writes gathered for a WriteBatchServer
	scratch    []byte               // encoding space for one reply
	out        []byte               // replies to write at the end of this pass
	queue      []*Pending           // replies not yet written, oldest first, once any was deferred
	queued     int                  // bytes of the ready replies in queue that answer copied
	pendings   []Pending            // the rest of the block newPending hands out from
	inPass     bool                 // on a Pass's list of connections to write
	gone       bool                 // gnet closed the connection (OnClose ran)
	answers    int                  // AnswerFrame and Defer calls since the Handler was called
	closing    bool                 // a reply was abandoned: close once what precedes it is written
	body       []byte               // the payload so far of a large frame arriving
	bodySize   int                  // the size body will have once complete; 0 with none arriving
	reserved   int                  // the bytes of Server.bodies that body holds
	need       int                  // inbound bytes needed before decoding again

	// Event-loop only, for backpressure and passes (see backpressure.go).
	paused bool // over ReplyBudget: requests wait undecoded (see admit)
	// readWhilePaused: the client read replies since the pause began (see admit).
	readWhilePaused bool
	handed          int       // reply bytes handed to gnet, ever
	lastDrained     int       // of them, those gone to the kernel at the last look while paused
	pausedAt        time.Time // when the pause began
	lastUnsent      int       // unsent reply bytes at the last look while paused
	held            int       // bytes Stats.heldBytes counts for this paused connection
	final           bool      // the client shut down its side: serve the rest in one pass (see serveRest)
	inboundLeft     int       // inbound bytes the last pass left undecoded

	owed        atomic.Int64 // bytes of the replies that Pendings in queue hold (see Pending.Hold)
	wakeQueued  atomic.Bool
	pauseWait   atomic.Int64                  // nanoseconds between looks while paused, set by the event loop for the resumer
	halfClosed  atomic.Pointer[chan struct{}] // set once gnet closed the connection with replies owed (see keepHalfClosed)
	lastActive  atomic.Int64                  // unix nanoseconds of the last request, with IdleTimeout
	closeReason atomic.Int32                  // a CloseReason, set when the server closes the connection
}

func (c *Conn) touch() { c.lastActive.Store(time.Now().UnixNano()) }

// unread returns the bytes of replies the client has not read: written,
// ready, or held for replies to come.
func (c *Conn) unread(gc gnet.Conn) int {
	return len(c.out) + c.queued + int(c.owed.Load()) + gc.OutboundBuffered()
}

// closeFor records why the server closes c; the first reason given stands.
func (c *Conn) closeFor(r CloseReason) { c.closeReason.CompareAndSwap(int32(CloseByPeer), int32(r)) }

// ID returns a number that identifies the connection within its server.
func (c *Conn) ID() uint64 { return c.id }

// RemoteAddr returns the address of the connection's other end.
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

// Defer lets the Handler answer the current request later: the reply
// takes its place behind those of the requests before it. Call it at most
// once per request, from Serve (or ServeWrite, ServeWrites).
func (c *Conn) Defer() *Pending {
	p := c.newPending()
	c.queue = append(c.queue, p)
	c.answers++
	return p
}

// pendingBlock is how many Pendings a connection allocates at once.
const pendingBlock = 64

// newPending hands out a Pending from the connection's current block: one
// allocation per pendingBlock deferred replies rather than one each. A
// block is garbage once all its replies are written.
func (c *Conn) newPending() *Pending {
	if len(c.pendings) == 0 {
		c.pendings = make([]Pending, pendingBlock)
	}
	p := &c.pendings[0]
	c.pendings = c.pendings[1:]
	p.c = c
	return p
}

// AnswerFrame answers the current request with a framed reply, which the
// server only reads. Call it at most once per request, from Serve, and
// return false.
func (c *Conn) AnswerFrame(frame []byte) {
	c.answer(frame)
	c.answers++
}

// answer queues a ready reply frame behind any earlier deferred reply.
func (c *Conn) answer(frame []byte) {
	if len(c.queue) == 0 {
		c.out = append(c.out, frame...)
		return
	}
	p := c.newPending()
	p.frame = append([]byte(nil), frame...)
	p.ready.Store(true)
	p.copied = len(frame)
	c.queue = append(c.queue, p)
	c.queued += len(frame)
}

// grow makes room in c.body for n more bytes. Beyond bodyBudget, the body
// grows fourfold at a time up to its declared size, so that what a
// connection holds follows the bytes that did arrive, not what its header
// claims, while growing costs little: the copies add up to half the frame
// at most.
func (c *Conn) grow(n int) []byte {
	if len(c.body)+n > cap(c.body) {
		grown := make([]byte, len(c.body), min(c.bodySize, max(4*cap(c.body), len(c.body)+n, largeFrame)))
		copy(grown, c.body)
		c.body = grown
	}
	return c.body
}

// fillBody moves the bytes of the large frame arriving into c.body: first
// those gnet has read, then straight from the socket until it has no more,
// which saves copying them through gnet's buffer. It reports whether the
// frame is complete; an error means the connection is over.
func (c *Conn) fillBody(gc gnet.Conn) (bool, error) {
	if n := min(gc.InboundBuffered(), c.bodySize-len(c.body)); n > 0 {
		b := c.grow(n)
		got, _ := gc.Read(b[len(b) : len(b)+n])
		c.body = b[:len(b)+got]
	}
	for len(c.body) < c.bodySize {
		b := c.grow(1)
		n, err := unix.Read(gc.Fd(), b[len(b):min(cap(b), c.bodySize)])
		switch {
		case n > 0:
			c.body = b[:len(b)+n]
		case err == unix.EINTR:
		case err == unix.EAGAIN:
			return false, nil
		case err == nil:
			return false, fmt.Errorf("connection closed %d bytes into a %d-byte frame", len(b), c.bodySize)
		default:
			return false, fmt.Errorf("read: %w", err)
		}
	}
	return true, nil
}

// flushReady moves the ready replies at the front of the queue to out.
func (c *Conn) flushReady() {
	i := 0
	for ; i < len(c.queue) && c.queue[i].ready.Load(); i++ {
		if c.queue[i].abandoned {
			c.closing = true
			break
		}
		c.out = append(c.out, c.queue[i].frame...)
		c.queued -= c.queue[i].copied
		c.owed.Add(-c.queue[i].held)
		// The Pending's block outlives it; its frame, maybe a large
		// reply, must not.
		c.queue[i].frame = nil
		c.queue[i] = nil
	}
	if i > 0 {
		c.queue = c.queue[:copy(c.queue, c.queue[i:])]
	}
}

// Pending is a reply that a Handler owes and gives later.
type Pending struct {
	c         *Conn
	given     atomic.Bool
	frame     []byte
	abandoned bool // set before ready: close the connection in its place
	ready     atomic.Bool
	copied    int   // bytes of frame that answer copied and Conn.queued counts
	held      int64 // bytes of the reply that Conn.owed counts for it (see Hold)
}

// Hold says that the Handler keeps n bytes for this reply until it gives
// it (a read's answer, taken before the reply may go): they count toward
// Config.MaxOutbound, as the reply will once given, so that a client
// cannot make the server keep more for it than that by sending requests
// whose replies wait. Call it before Complete or CompleteFrame; a later
// call replaces the earlier amount.
func (p *Pending) Hold(n int) {
	p.c.owed.Add(int64(n) - p.held)
	p.held = int64(n)
}

// Abandon gives no reply: the connection is closed once the replies
// before this one are written, so that the client learns nothing of this
// request or of any after it, rather than a wrong answer. Like Complete,
// it is safe from any goroutine, and only the first of these calls counts.
func (p *Pending) Abandon() {
	if !p.given.CompareAndSwap(false, true) {
		return
	}
	p.abandoned = true
	p.publish()
}

// Complete gives the reply. It is safe to call from any goroutine; calls
// after the first are ignored.
func (p *Pending) Complete(reply *codec.MessageT) {
	frame, err := codec.AppendMessage(nil, reply)
	if err != nil {
		frame = errorFrame
	}
	p.CompleteFrame(frame)
}

// CompleteFrame gives the reply as a framed message, which the server
// only reads: one constant frame may answer many requests. Like Complete,
// it is safe from any goroutine, and calls after the first are ignored.
func (p *Pending) CompleteFrame(frame []byte) {
	if !p.given.CompareAndSwap(false, true) {
		return
	}
	p.frame = frame
	p.Hold(len(frame)) // until it is written
	p.publish()
}

// CompleteIn is Complete from within pass: a reply to a connection of
// the pass's event loop is written at the end of the pass, without a
// wake-up of the loop. A nil pass is Complete.
func (p *Pending) CompleteIn(pass *Pass, reply *codec.MessageT) {
	frame, err := codec.AppendMessage(nil, reply)
	if err != nil {
		frame = errorFrame
	}
	p.CompleteFrameIn(pass, frame)
}

// CompleteFrameIn is CompleteFrame from within pass (see CompleteIn).
func (p *Pending) CompleteFrameIn(pass *Pass, frame []byte) {
	if !p.given.CompareAndSwap(false, true) {
		return
	}
	p.frame = frame
	p.Hold(len(frame))
	if pass.take(p.c) {
		p.ready.Store(true)
		return
	}
	p.publish()
}

// publish makes a given Pending ready and wakes its event loop.
func (p *Pending) publish() {
	// Publish the reply before asking for a wake-up; the event loop
	// clears wakeQueued before it looks at ready, so no wake is lost.
	p.ready.Store(true)
	if kick := p.c.halfClosed.Load(); kick != nil {
		select {
		case *kick <- struct{}{}:
		default:
		}
		return
	}
	p.c.wake()
}

// An AttachedReader takes the bytes that arrive on a connection that the
// server did not accept (see Server.Attach). Its methods run on an event
// loop: they must not block.
type AttachedReader interface {
	// Traffic takes the bytes that arrived and returns how many it used;
	// the rest is given again with more. An error closes the connection.
	// in is valid only during the call. Replies completed through pass
	// (Pending.CompleteIn) are written once Traffic returns.
	Traffic(pass *Pass, in []byte) (int, error)
	// Closed says the connection is over: the socket was shut down, it
	// broke, Traffic failed, or the server stopped.
	Closed(err error)
}

// attached is the gnet context of a connection given to Attach.
type attached struct {
	reader AttachedReader
	pass   Pass
	opened atomic.Bool // OnOpen ran: the loop polls the connection
}

// Attach has the server's event loops read nc, a TCP connection it did not
// accept, for r: on the event loop of near, if near is not nil, so that
// the replies r completes to near are written without waking a loop.
// The loop reads a duplicate of nc's descriptor: nc stays the caller's,
// to write on, and the loop's copy ends only when the socket is shut down
// (shutdown(2), net.TCPConn.CloseRead) or the server stops.
func (s *Server) Attach(ctx context.Context, nc net.Conn, near *Conn, r AttachedReader) error {
	s.attachMu.Lock()
	if s.stopping {
		s.attachMu.Unlock()
		return errors.New("srv: attach: the server is stopping")
	}
	s.attaching.Add(1)
	s.attachMu.Unlock()
	defer s.attaching.Done()
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return fmt.Errorf("srv: attach %T: no descriptor", nc)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	fd := -1
	if cerr := rc.Control(func(d uintptr) { fd, err = unix.Dup(int(d)) }); cerr != nil {
		return cerr
	}
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), "attached")
	dup, err := net.FileConn(f) // gnet closes it once it took a copy
	f.Close()
	if err != nil {
		return err
	}
	a := &attached{reader: r, pass: Pass{s: s}}
	gctx := gnet.NewNetConnContext(gnet.NewContext(ctx, a), dup)
	var res <-chan gnet.RegisteredResult
	if near != nil {
		res, err = near.gc.EventLoop().Enroll(gctx, dup)
	} else {
		res, err = s.eng.Register(gctx)
	}
	if err != nil {
		dup.Close()
		return fmt.Errorf("srv: attach: %w", err)
	}
	select {
	case rr, ok := <-res:
		if !ok {
			return errors.New("srv: attach: no result")
		}
		if rr.Err != nil {
			return fmt.Errorf("srv: attach: %w", rr.Err)
		}
		if !a.opened.Load() {
			// gnet reports success even when the loop could not poll the
			// descriptor (epoll_ctl failed): nothing would read it. OnOpen
			// runs before the result is sent, and only on success.
			return errors.New("srv: attach: the event loop did not take the connection")
		}
		return nil
	case <-ctx.Done():
		// The loop may still take it: it then reads until the caller
		// shuts the socket down, as it does for a failed attach.
		return fmt.Errorf("srv: attach: %w", ctx.Err())
	}
}

// attachedTraffic gives an attached connection's bytes to its reader,
// then writes the replies completed in the pass.
func (s *Server) attachedTraffic(a *attached, gc gnet.Conn) gnet.Action {
	in, _ := gc.Peek(-1)
	used, err := a.reader.Traffic(&a.pass, in)
	if used > 0 {
		gc.Discard(used)
	}
	a.pass.flush()
	if err != nil {
		s.log.Debug("closing attached connection", "remote", gc.RemoteAddr(), "err", err)
		return gnet.Close
	}
	return gnet.None
}

// A Pass is an event loop's pass over an attached connection's bytes
// (see AttachedReader). Replies completed through it to connections of
// the same loop are written at its end, in that loop's own pass over
// each connection, rather than by waking the loop: a wake-up costs a
// system call and another turn of the loop.
type Pass struct {
	s     *Server
	el    gnet.EventLoop
	conns []*Conn
}

// take reports whether the pass writes c's replies, and lists c for
// that: a nil pass, or a connection of another loop, or one no longer
// gnet's, is woken instead.
func (pass *Pass) take(c *Conn) bool {
	if pass == nil || c.gc.EventLoop() != pass.el || c.halfClosed.Load() != nil {
		return false
	}
	// On c's own loop from here on: its loop-only fields are ours.
	if c.gone {
		return false
	}
	if !c.inPass {
		c.inPass = true
		pass.conns = append(pass.conns, c)
	}
	return true
}

// flush runs, for each connection that replies were completed to, the
// pass a wake-up would have run.
func (pass *Pass) flush() {
	for i, c := range pass.conns {
		pass.conns[i] = nil
		c.inPass = false
		if c.gone {
			continue
		}
		if pass.s.OnTraffic(c.gc) == gnet.Close {
			c.gc.Close()
		}
	}
	pass.conns = pass.conns[:0]
}

type gnetLogger struct{ l *slog.Logger }

func (g gnetLogger) Debugf(f string, a ...any) { g.l.Debug(fmt.Sprintf(f, a...), "component", "gnet") }
func (g gnetLogger) Infof(f string, a ...any)  { g.l.Debug(fmt.Sprintf(f, a...), "component", "gnet") }
func (g gnetLogger) Warnf(f string, a ...any)  { g.l.Warn(fmt.Sprintf(f, a...), "component", "gnet") }
func (g gnetLogger) Errorf(f string, a ...any) { g.l.Error(fmt.Sprintf(f, a...), "component", "gnet") }
func (g gnetLogger) Fatalf(f string, a ...any) { g.l.Error(fmt.Sprintf(f, a...), "component", "gnet") }
