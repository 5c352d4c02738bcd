// Package course is a client of the table service that knows only what
// the course's own clients know, for tests that check that they work
// unchanged: it lists the children of /chain in ZooKeeper, orders them by
// comparing their whole names as strings, takes the first as the head and
// the last as the tail, reads each member's address up to the first NUL
// of its data, and sends course messages only (message_t fields 1 to 9:
// no client or request ids, no status, no chain fields) with the course's
// u16 framing. As a course client does, it takes any OP_ERROR answer to a
// get for "key not found", and to any other request for a failure, and it
// never sends a write again once it may have reached a server.
//
// Package course's C twin, in the c directory beside this file, is built
// by BuildC.
package course

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/chaintable/chaintable/codec"
)

// ChainPath is the ZooKeeper node whose children are the chain's members,
// as the course fixes it.
const ChainPath = "/chain"

// ReadFrom says which member a Client sends reads (get, size, gettable)
// to.
type ReadFrom int

const (
	// Tail sends reads to the tail, as course clients do.
	Tail ReadFrom = iota
	// Any sends each read to a member chosen at random, to spread reads
	// over the whole chain.
	Any
)

// String returns "tail" or "any".
func (r ReadFrom) String() string {
	if r == Any {
		return "any"
	}
	return "tail"
}

// Options configure a Client. The zero value reads at the tail.
type Options struct {
	// ReadFrom is where reads go.
	ReadFrom ReadFrom
	// Timeout bounds each request, from its connection to its answer;
	// zero means 10s. Course clients wait for ever: a bound keeps a test
	// that freezes a node bounded.
	Timeout time.Duration
	// SessionTimeout is the client's ZooKeeper session timeout; zero
	// means 10s.
	SessionTimeout time.Duration
}

// Errors of a Client.
var (
	// ErrRefused is an OP_ERROR answer to a put, a del, a size or a
	// gettable. A course client cannot tell why: for a del it is also
	// what the table answers when the key is missing.
	ErrRefused = errors.New("course: the server answered OP_ERROR")
	// ErrNotSent says that a request failed before any of it was sent:
	// a write that failed so took no effect.
	ErrNotSent = errors.New("course: request not sent")
	// ErrNoMembers is the failure of a request while /chain has no
	// member; it wraps ErrNotSent.
	ErrNoMembers = fmt.Errorf("%w: no member under %s", ErrNotSent, ChainPath)
)

// Member is one child of /chain as a course client sees it.
type Member struct {
	Name string // the child's whole name
	Addr string // its data up to the first NUL: "ip:port"
}

// Client is a course client of one chain. It is not safe for concurrent
// use: like a course client process, it sends one request at a time.
type Client struct {
	opts    Options
	zc      *zk.Conn
	members []Member         // ordered by name; nil until resolved
	watch   <-chan zk.Event  // fires when /chain's children change
	conns   map[string]*wire // by member address
}

// wire is a connection to one member.
type wire struct {
	c   net.Conn
	r   *bufio.Reader
	buf []byte
}

// Dial connects to ZooKeeper at zkAddr (a comma-separated list of
// host:port) and waits, for at most the session timeout, until it has a
// session. Members are listed at the first request.
func Dial(zkAddr string, opts Options) (*Client, error) {
	if opts.Timeout == 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.SessionTimeout == 0 {
		opts.SessionTimeout = 10 * time.Second
	}
	zc, events, err := zk.Connect(strings.Split(zkAddr, ","), opts.SessionTimeout, zk.WithLogger(quiet{}))
	if err != nil {
		return nil, fmt.Errorf("course: ZooKeeper at %s: %w", zkAddr, err)
	}
	timeout := time.After(opts.SessionTimeout)
	for {
		select {
		case ev := <-events:
			if ev.State != zk.StateHasSession {
				continue
			}
			// Later events are dropped once the buffer is full; the
			// client watches /chain with watches of its own.
			return &Client{opts: opts, zc: zc, conns: make(map[string]*wire)}, nil
		case <-timeout:
			zc.Close()
			return nil, fmt.Errorf("course: no ZooKeeper session at %s within %v", zkAddr, opts.SessionTimeout)
		}
	}
}

// Close closes the client's connections and its ZooKeeper session.
func (c *Client) Close() {
	for addr := range c.conns {
		c.drop(addr)
	}
	c.zc.Close()
}

// Members returns the chain as the client resolved it last, head first,
// resolving it if a watch fired or a connection failed since.
func (c *Client) Members() ([]Member, error) {
	if err := c.resolve(); err != nil {
		return nil, err
	}
	return slices.Clone(c.members), nil
}

// resolve lists /chain again if it changed, or if a failure asked for it.
func (c *Client) resolve() error {
	if c.watch != nil {
		select {
		case <-c.watch:
		default:
			return nil
		}
	}
	c.watch = nil
	names, _, watch, err := c.zc.ChildrenW(ChainPath)
	if err != nil {
		return fmt.Errorf("%w: list %s: %w", ErrNotSent, ChainPath, err)
	}
	var members []Member
	for _, name := range Order(names) {
		data, _, err := c.zc.Get(path.Join(ChainPath, name))
		if errors.Is(err, zk.ErrNoNode) {
			continue // gone since the listing; the watch has fired
		}
		if err != nil {
			return fmt.Errorf("%w: read %s/%s: %w", ErrNotSent, ChainPath, name, err)
		}
		members = append(members, Member{Name: name, Addr: AddrOf(data)})
	}
	c.members, c.watch = members, watch
	return nil
}

// Order returns names sorted as a course client sorts the children of
// /chain: by comparing whole names as strings, first the head.
func Order(names []string) []string {
	names = slices.Clone(names)
	slices.Sort(names)
	return names
}

// AddrOf returns a member's address from its node's data: the bytes up
// to the first NUL, as a C client reads a NUL-terminated string.
func AddrOf(data []byte) string {
	if i := slices.Index(data, 0); i >= 0 {
		data = data[:i]
	}
	return string(data)
}

// head returns the address of the member that takes writes.
func (c *Client) head() (string, error) {
	if err := c.resolve(); err != nil {
		return "", err
	}
	if len(c.members) == 0 {
		return "", ErrNoMembers
	}
	return c.members[0].Addr, nil
}

// reader returns the address of the member to read at.
func (c *Client) reader() (string, error) {
	if err := c.resolve(); err != nil {
		return "", err
	}
	if len(c.members) == 0 {
		return "", ErrNoMembers
	}
	if c.opts.ReadFrom == Any {
		return c.members[rand.IntN(len(c.members))].Addr, nil
	}
	return c.members[len(c.members)-1].Addr, nil
}

// Put stores value under key at the head. An error wrapping ErrNotSent
// means the put took no effect, ErrRefused that the head refused it; any
// other leaves its outcome unknown.
func (c *Client) Put(key string, value []byte) error {
	addr, err := c.head()
	if err != nil {
		return err
	}
	reply, err := c.do(addr, codec.PutRequest(key, value))
	if err != nil {
		return err
	}
	return written(reply, codec.OpPut, addr)
}

// Del removes key at the head. It returns ErrRefused for an OP_ERROR
// answer: the key was missing, or the head refused; errors as for Put.
func (c *Client) Del(key string) error {
	addr, err := c.head()
	if err != nil {
		return err
	}
	reply, err := c.do(addr, codec.DelRequest(key))
	if err != nil {
		return err
	}
	return written(reply, codec.OpDel, addr)
}

// written checks the answer to a put or del (op) from addr.
func written(reply *codec.MessageT, op codec.MessageT_Opcode, addr string) error {
	switch reply.GetOpcode() {
	case op + 1:
		return nil
	case codec.OpError:
		return fmt.Errorf("%w: %v at %s", ErrRefused, op, addr)
	}
	return fmt.Errorf("course: %v at %s answered %v", op, addr, reply.GetOpcode())
}

// Get reads key. Any OP_ERROR answer is "not found": found is false and
// err nil.
func (c *Client) Get(key string) (value []byte, found bool, err error) {
	addr, err := c.reader()
	if err != nil {
		return nil, false, err
	}
	reply, err := c.do(addr, codec.GetRequest(key))
	if err != nil {
		return nil, false, err
	}
	switch reply.GetOpcode() {
	case codec.OpGet + 1:
		return reply.GetValue(), true, nil
	case codec.OpError:
		return nil, false, nil
	}
	return nil, false, fmt.Errorf("course: get at %s answered %v", addr, reply.GetOpcode())
}

// Size returns the number of keys in the table.
func (c *Client) Size() (int, error) {
	reply, err := c.read(codec.OpSize)
	if err != nil {
		return 0, err
	}
	return int(reply.GetResult()), nil
}

// Table returns every entry of the table (gettable).
func (c *Client) Table() ([]*codec.EntryT, error) {
	reply, err := c.read(codec.OpGetTable)
	if err != nil {
		return nil, err
	}
	return reply.GetEntries(), nil
}

// read sends a request without arguments (op) to the member to read at and
// checks that it succeeded.
func (c *Client) read(op codec.MessageT_Opcode) (*codec.MessageT, error) {
	addr, err := c.reader()
	if err != nil {
		return nil, err
	}
	reply, err := c.do(addr, codec.Request(op))
	if err != nil {
		return nil, err
	}
	switch reply.GetOpcode() {
	case op + 1:
		return reply, nil
	case codec.OpError:
		return nil, fmt.Errorf("%w: %v at %s", ErrRefused, op, addr)
	}
	return nil, fmt.Errorf("course: %v at %s answered %v", op, addr, reply.GetOpcode())
}

// do sends req to addr and returns the answer. A failure closes the
// connection and makes the next request list /chain again.
func (c *Client) do(addr string, req *codec.MessageT) (*codec.MessageT, error) {
	w, err := c.wire(addr)
	if err != nil {
		c.watch = nil
		return nil, fmt.Errorf("%w: connect to %s: %w", ErrNotSent, addr, err)
	}
	w.c.SetDeadline(time.Now().Add(c.opts.Timeout))
	if w.buf, err = codec.AppendMessage(w.buf[:0], req); err != nil {
		return nil, fmt.Errorf("%w: encode %v: %w", ErrNotSent, req.GetOpcode(), err)
	}
	reply := new(codec.MessageT)
	if _, err = w.c.Write(w.buf); err == nil {
		err = codec.ReadMessage(w.r, codec.DefaultMaxFrame, reply)
	}
	if err != nil {
		c.drop(addr)
		c.watch = nil
		return nil, fmt.Errorf("course: %v at %s: %w", req.GetOpcode(), addr, err)
	}
	return reply, nil
}

// wire returns the connection to addr, connecting if there is none.
func (c *Client) wire(addr string) (*wire, error) {
	if w := c.conns[addr]; w != nil {
		return w, nil
	}
	nc, err := net.DialTimeout("tcp", addr, c.opts.Timeout)
	if err != nil {
		return nil, err
	}
	w := &wire{c: nc, r: bufio.NewReader(nc)}
	c.conns[addr] = w
	return w, nil
}

// drop closes the connection to addr.
func (c *Client) drop(addr string) {
	if w := c.conns[addr]; w != nil {
		w.c.Close()
		delete(c.conns, addr)
	}
}

// quiet is a zk.Logger that drops go-zookeeper's messages.
type quiet struct{}

func (quiet) Printf(string, ...any) {}
