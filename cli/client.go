package cli

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/chaintable/chaintable/codec"
)

// A Resolver says where requests go: writes (put, del) to the Writer's
// address, reads (get, size, getkeys, gettable, stats) to the Reader's.
// In a chain these are its head and its tail; they may change between
// calls, and the Client asks before every request.
type Resolver interface {
	// Writer returns the address (host:port) of the server for writes.
	Writer(ctx context.Context) (addr string, err error)
	// Reader returns the address (host:port) of the server for reads.
	Reader(ctx context.Context) (addr string, err error)
}

// Direct is a Resolver for a single server at the address it holds
// (host:port), which takes both writes and reads.
type Direct string

// Writer returns d.
func (d Direct) Writer(context.Context) (string, error) { return string(d), nil }

// Reader returns d.
func (d Direct) Reader(context.Context) (string, error) { return string(d), nil }

// Entry is a key and its value.
type Entry struct {
	Key   string
	Value []byte
}

// Stats are a server's statistics.
type Stats struct {
	Ops     int           // table operations executed, stats excluded
	Clients int           // connections open now
	Time    time.Duration // total time spent in table operations
}

// Options tune a Client. The zero value sends every request once.
type Options struct {
	// RetryFor, when positive, makes a request that fails for a reason a
	// chain recovers from (a server gone, unreachable, silent, no longer
	// head or tail, or still catching up) go again, to wherever the
	// Resolver then says, until it succeeds or RetryFor has passed. Writes
	// then carry a client id and a request id, so that a retried write is
	// applied once and answered with its first outcome; at most
	// codec.DedupWindow writes are in flight, and more wait their turn.
	// RetryFor must be shorter than the servers' --client-expiry.
	RetryFor time.Duration
	// AttemptTimeout bounds one try when RetryFor is set; zero means 2s.
	AttemptTimeout time.Duration
	// OnWait, when set, is called once per request that has to wait for
	// the chain, with the failure that made it wait.
	OnWait func(err error)
}

// Client is a client of the table service. It keeps one Conn per address
// its Resolver names, dialing again when a Conn has failed, and is safe for
// concurrent use; concurrent requests to one address are pipelined.
type Client struct {
	res  Resolver
	opts Options

	ctx    context.Context // ends at Close, and with it every request
	cancel context.CancelFunc
	calls  sync.WaitGroup // requests in progress, which Close waits for

	mu     sync.Mutex // held while dialing, so one dial serves all waiters
	conns  map[string]*Conn
	closed bool
	ids    *ids // numbers exactly-once writes; replaced if the servers forgot it
}

// Dial returns a Client that sends requests where res says, after
// connecting to the writer and the reader, so that an unreachable server
// shows at once rather than at the first request; with opts.RetryFor set,
// servers that are not there yet are waited for at the first request.
func Dial(ctx context.Context, res Resolver, opts Options) (*Client, error) {
	if opts.AttemptTimeout <= 0 {
		opts.AttemptTimeout = 2 * time.Second
	}
	c := &Client{res: res, opts: opts, conns: make(map[string]*Conn), ids: newIDs()}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	if opts.RetryFor > 0 {
		return c, nil
	}
	for _, where := range []func(context.Context) (string, error){res.Writer, res.Reader} {
		if _, err := c.conn(ctx, where); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// conn returns a working Conn to the address where names.
func (c *Client) conn(ctx context.Context, where func(context.Context) (string, error)) (*Conn, error) {
	addr, err := where(ctx)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	if cn := c.conns[addr]; cn != nil && !cn.Broken() {
		return cn, nil
	}
	cn, err := DialConn(ctx, addr)
	if err != nil {
		return nil, err
	}
	c.conns[addr] = cn
	return cn, nil
}

// do sends req to the writer or the reader, as its opcode requires, and
// retries as Options say. Close ends it at once, with ErrClosed.
func (c *Client) do(ctx context.Context, req *codec.MessageT) (*codec.MessageT, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	c.calls.Add(1)
	c.mu.Unlock()
	defer c.calls.Done()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(c.ctx, cancel)()

	reply, err := c.retry(ctx, req)
	if err != nil && c.ctx.Err() != nil {
		return nil, ErrClosed
	}
	return reply, err
}

// retry is do without the bookkeeping of Close.
func (c *Client) retry(ctx context.Context, req *codec.MessageT) (*codec.MessageT, error) {
	if c.opts.RetryFor <= 0 {
		return c.once(ctx, req, nil)
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.RetryFor)
	defer cancel()
	var w *write
	if codec.IsWrite(req.GetOpcode()) {
		w = &write{c: c}
		defer func() { w.finish() }()
		if err := w.reserve(ctx); err != nil {
			return nil, fmt.Errorf("%s: waiting for a turn among the writes in flight: %w", opName(req.GetOpcode()), err)
		}
	}
	backoff := 20 * time.Millisecond
	waited := false
	for {
		actx, acancel := context.WithTimeout(ctx, c.opts.AttemptTimeout)
		reply, err := c.once(actx, req, w)
		acancel()
		if w != nil && w.renew(err) {
			if err := w.reserve(ctx); err != nil {
				return nil, fmt.Errorf("%s: waiting for a turn among the writes in flight: %w", opName(req.GetOpcode()), err)
			}
			continue // never applied: send again as the new client
		}
		if err == nil || !retryable(err) {
			return reply, err
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("chain unavailable for %v: %w", c.opts.RetryFor, err)
		}
		if !waited && c.opts.OnWait != nil {
			c.opts.OnWait(err)
		}
		waited = true
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return nil, fmt.Errorf("chain unavailable for %v: %w", c.opts.RetryFor, err)
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

// retryable reports whether a request that failed with err may succeed
// if sent again, possibly elsewhere.
func retryable(err error) bool {
	var se *ServerError
	if errors.As(err, &se) {
		return codec.NotTaken(se.Status)
	}
	return !errors.Is(err, ErrProtocol) && !errors.Is(err, context.Canceled)
}

// once sends req one time to the writer or the reader; w, when not nil,
// numbers it.
func (c *Client) once(ctx context.Context, req *codec.MessageT, w *write) (*codec.MessageT, error) {
	where := c.res.Reader
	if codec.IsWrite(req.GetOpcode()) {
		where = c.res.Writer
	}
	cn, err := c.conn(ctx, where)
	if err != nil {
		return nil, err
	}
	if w == nil {
		return cn.Do(ctx, req)
	}
	return cn.do(ctx, req, w.stamp)
}

// write is the numbering of one exactly-once write.
type write struct {
	c       *Client
	ids     *ids   // the numbering it reserved a turn in
	id      uint64 // its request id, once it went out
	attempt int    // attempts so far
	firstAt int    // the attempt that first sent it
}

// reserve waits for a turn in the client's current numbering.
func (w *write) reserve(ctx context.Context) error {
	w.c.mu.Lock()
	w.ids, w.id = w.c.ids, 0
	w.c.mu.Unlock()
	if err := w.ids.reserve(ctx); err != nil {
		w.ids = nil
		return err
	}
	return nil
}

// stamp numbers the request as it goes out: a new id the first time, the
// latest first_unacked on every try.
func (w *write) stamp(req *codec.MessageT) {
	w.attempt++
	if w.id == 0 {
		w.ids.stamp(req)
		w.id, w.firstAt = req.RequestId, w.attempt
		return
	}
	w.ids.restamp(req)
}

// renew reports whether err says the servers forgot the client's
// numbering (it was idle longer than their --client-expiry) for a write
// that went out for the first time, and so was not applied: the client
// then numbers its writes under a new client id, and the write is to be
// sent again with one of them. A write sent before may have been applied
// and its outcome forgotten: that error is the caller's.
func (w *write) renew(err error) bool {
	var se *ServerError
	if !errors.As(err, &se) || se.Status != codec.Status_STATUS_SESSION_EXPIRED || w.firstAt != w.attempt {
		return false
	}
	w.c.mu.Lock()
	if w.c.ids == w.ids {
		w.c.ids = newIDs()
	}
	w.c.mu.Unlock()
	w.finish()
	return true
}

// finish ends the write's turn: the client sends it no more.
func (w *write) finish() {
	if w.ids != nil {
		w.ids.finish(w.id)
		w.ids = nil
	}
}

// Put stores value under key, replacing any value there.
func (c *Client) Put(ctx context.Context, key string, value []byte) error {
	_, err := c.do(ctx, codec.PutRequest(key, value))
	return err
}

// Get returns the value stored under key. A missing key is an error
// wrapping ErrServer: the protocol does not tell it from other failures.
func (c *Client) Get(ctx context.Context, key string) ([]byte, error) {
	reply, err := c.do(ctx, codec.GetRequest(key))
	if err != nil {
		return nil, err
	}
	return reply.GetValue(), nil
}

// Del removes key. A missing key is an error wrapping ErrServer.
func (c *Client) Del(ctx context.Context, key string) error {
	_, err := c.do(ctx, codec.DelRequest(key))
	return err
}

// Size returns the number of entries in the table.
func (c *Client) Size(ctx context.Context) (int, error) {
	reply, err := c.do(ctx, codec.Request(codec.OpSize))
	if err != nil {
		return 0, err
	}
	return int(reply.GetResult()), nil
}

// Keys returns every key in the table, sorted.
func (c *Client) Keys(ctx context.Context) ([]string, error) {
	reply, err := c.do(ctx, codec.Request(codec.OpGetKeys))
	if err != nil {
		return nil, err
	}
	return reply.GetKeys(), nil
}

// Table returns every entry in the table, sorted by key.
func (c *Client) Table(ctx context.Context) ([]Entry, error) {
	reply, err := c.do(ctx, codec.Request(codec.OpGetTable))
	if err != nil {
		return nil, err
	}
	entries := make([]Entry, len(reply.GetEntries()))
	for i, e := range reply.GetEntries() {
		entries[i] = Entry{Key: e.GetKey(), Value: e.GetValue()}
	}
	return entries, nil
}

// Stats returns the statistics of the server that takes reads.
func (c *Client) Stats(ctx context.Context) (Stats, error) {
	reply, err := c.do(ctx, codec.Request(codec.OpStats))
	if err != nil {
		return Stats{}, err
	}
	st := reply.GetStats()
	return Stats{
		Ops:     int(st.GetOps()),
		Clients: int(st.GetClients()),
		Time:    time.Duration(st.GetTime()) * time.Microsecond,
	}, nil
}

// Close closes every connection. Requests in flight fail at once with
// ErrClosed, retrying or not, and so do later ones; Close returns when
// they have, and the Client's goroutines have ended. It must not be
// called from Options.OnWait.
func (c *Client) Close() error {
	c.cancel()
	c.mu.Lock()
	c.closed = true
	for addr, cn := range c.conns {
		cn.Close()
		delete(c.conns, addr)
	}
	c.mu.Unlock()
	c.calls.Wait()
	return nil
}
