package cli

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
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
	// applied once and answered with its first outcome.
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
	id   uint64        // client id for exactly-once writes
	seq  atomic.Uint64 // last request id given to a write

	mu     sync.Mutex // held while dialing, so one dial serves all waiters
	conns  map[string]*Conn
	closed bool
}

// Dial returns a Client that sends requests where res says, after
// connecting to the writer and the reader, so that an unreachable server
// shows at once rather than at the first request; with opts.RetryFor set,
// servers that are not there yet are waited for at the first request.
func Dial(ctx context.Context, res Resolver, opts Options) (*Client, error) {
	if opts.AttemptTimeout <= 0 {
		opts.AttemptTimeout = 2 * time.Second
	}
	c := &Client{res: res, opts: opts, id: rand.Uint64() | 1, conns: make(map[string]*Conn)}
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
// retries as Options say.
func (c *Client) do(ctx context.Context, req *codec.MessageT) (*codec.MessageT, error) {
	if c.opts.RetryFor <= 0 {
		return c.once(ctx, req)
	}
	if codec.IsWrite(req.GetOpcode()) {
		req.ClientId, req.RequestId = c.id, c.seq.Add(1)
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.RetryFor)
	defer cancel()
	backoff := 20 * time.Millisecond
	waited := false
	for {
		actx, acancel := context.WithTimeout(ctx, c.opts.AttemptTimeout)
		reply, err := c.once(actx, req)
		acancel()
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
		switch se.Status {
		case codec.Status_STATUS_NOT_HEAD, codec.Status_STATUS_NOT_TAIL,
			codec.Status_STATUS_UNAVAILABLE, codec.Status_STATUS_STALE_CONFIG:
			return true
		}
		return false
	}
	return !errors.Is(err, ErrProtocol) && !errors.Is(err, context.Canceled)
}

// once sends req one time to the writer or the reader.
func (c *Client) once(ctx context.Context, req *codec.MessageT) (*codec.MessageT, error) {
	where := c.res.Reader
	if codec.IsWrite(req.GetOpcode()) {
		where = c.res.Writer
	}
	cn, err := c.conn(ctx, where)
	if err != nil {
		return nil, err
	}
	return cn.Do(ctx, req)
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

// Close closes every connection. Requests in flight fail with ErrClosed,
// and so do later ones.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for addr, cn := range c.conns {
		cn.Close()
		delete(c.conns, addr)
	}
	return nil
}
