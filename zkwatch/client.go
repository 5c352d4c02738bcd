package zkwatch

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-zookeeper/zk"
)

// ChainPath is the persistent node whose children are the chain's members.
const ChainPath = "/chain"

// nodePrefix is the name under ChainPath to which ZooKeeper appends a
// member's sequence number.
const nodePrefix = "node"

// Defaults for the zero Options.
const (
	DefaultSessionTimeout = 4 * time.Second
	DefaultConnectTimeout = 10 * time.Second
)

// Options configure a Client. The zero value is ready to use.
type Options struct {
	// SessionTimeout is the session timeout asked of ZooKeeper, which
	// bounds it to between 2 and 20 of its ticks unless configured
	// otherwise (see Session.Timeout for the one granted). Zero means
	// DefaultSessionTimeout.
	SessionTimeout time.Duration
	// ConnectTimeout bounds how long Dial waits for a first session.
	// Zero means DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// Logger receives session changes; go-zookeeper's own messages go to
	// it at debug level. Nil means slog.Default().
	Logger *slog.Logger
}

// State is the condition of a Client's ZooKeeper session.
type State int

const (
	// Disconnected means contact with ZooKeeper is lost. ZooKeeper keeps
	// the session, and its member node, until Timeout passes without
	// contact; the client keeps trying to reconnect.
	Disconnected State = iota
	// Connected means the session is live and in contact with ZooKeeper.
	Connected
	// Expired means ZooKeeper ended the session and deleted its member
	// node. The client is getting a new session.
	Expired
	// Closed means the Client was closed.
	Closed
)

// String returns the state's name in lower case.
func (s State) String() string {
	switch s {
	case Disconnected:
		return "disconnected"
	case Connected:
		return "connected"
	case Expired:
		return "expired"
	case Closed:
		return "closed"
	}
	return "State(" + strconv.Itoa(int(s)) + ")"
}

// Session describes a Client's ZooKeeper session.
//
// A server must stop serving before ZooKeeper expires its session, since
// the other servers then drop it from the chain. ZooKeeper expires a session
// once it has heard nothing from the client for Timeout (rounded up to its
// tick). The client pings every Timeout/3, but after a silent partition it
// notices the silence only when 2/3 of Timeout passed without an answer, so
// by the time State turns Disconnected ZooKeeper may be about to expire the
// session: a server that must never act on a chain that has dropped it stops
// serving as soon as State is not Connected. A connection closed outright,
// as when ZooKeeper stops, is noticed at once.
type Session struct {
	// State tells whether the session is live and in contact.
	State State
	// ID is the ZooKeeper session id. It changes when an expired session
	// is replaced.
	ID int64
	// Timeout is the session timeout that ZooKeeper granted.
	Timeout time.Duration
	// Since is when State began.
	Since time.Time
}

// Client is a connection to ZooKeeper with one session at a time. Its
// methods are safe for concurrent use.
type Client struct {
	conn   *zk.Conn
	events <-chan zk.Event
	log    *slog.Logger

	mu        sync.Mutex
	session   Session
	handshake Session // ID and Timeout of the last session ZooKeeper granted
	// handshakeSent is when the connection of the latest handshake was
	// made, a moment before the client asked for the session on it.
	handshakeSent time.Time
	granted       uint64 // handshakes ZooKeeper answered with a session
	localIP       net.IP // our side of the latest connection to ZooKeeper
	subs          map[chan struct{}]struct{}

	registered atomic.Bool // a Registration is open

	// Connections to ZooKeeper, which Close closes so that none of
	// go-zookeeper's waits outlives it, and how dialling went.
	netConns   map[*handshakeConn]struct{}
	dialed     bool  // a connection was made
	dialErr    error // the latest failure to connect
	dialCtx    context.Context
	endDials   context.CancelFunc
	reconnects atomic.Uint64 // see Counts
	expiries   atomic.Uint64

	leaseMu sync.Mutex
	lease   time.Time // see Lease
	leaseID int64     // the session the lease is for

	done chan struct{}  // closed by Close
	wg   sync.WaitGroup // goroutines of Watchers and Registrations
}

// Dial connects to ZooKeeper at servers, a connect string of comma-separated
// "host:port" addresses, and waits until it has a session.
func Dial(servers string, opts Options) (*Client, error) {
	if opts.SessionTimeout == 0 {
		opts.SessionTimeout = DefaultSessionTimeout
	}
	if opts.ConnectTimeout == 0 {
		opts.ConnectTimeout = DefaultConnectTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	var addrs []string
	for _, a := range strings.Split(servers, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			return nil, fmt.Errorf("zkwatch: bad ZooKeeper address list %q", servers)
		}
		addrs = append(addrs, a)
	}
	c := &Client{
		log:      opts.Logger,
		subs:     make(map[chan struct{}]struct{}),
		netConns: make(map[*handshakeConn]struct{}),
		done:     make(chan struct{}),
	}
	c.dialCtx, c.endDials = context.WithCancel(context.Background())
	kick, unsubscribe := c.subscribe()
	defer unsubscribe()

	// The event callback, not the event channel, follows the session: the
	// channel has six slots and go-zookeeper drops what does not fit.
	conn, events, err := zk.Connect(addrs, opts.SessionTimeout,
		zk.WithEventCallback(c.onEvent),
		zk.WithDialer(c.dial),
		zk.WithLogger(zkLogger{opts.Logger}))
	if err != nil {
		return nil, fmt.Errorf("zkwatch: connect to ZooKeeper at %s: %w", servers, err)
	}
	c.conn, c.events = conn, events

	timeout := time.After(opts.ConnectTimeout)
	for c.Session().State != Connected {
		select {
		case <-kick:
		case <-timeout:
			c.mu.Lock()
			why := "it accepts connections but grants no session"
			if !c.dialed {
				why = fmt.Sprintf("cannot connect: %v", c.dialErr)
			}
			c.mu.Unlock()
			c.Close()
			return nil, fmt.Errorf("zkwatch: cannot reach ZooKeeper at %s after %s: %s", servers, opts.ConnectTimeout, why)
		}
	}
	if err := c.goroutine(c.renewLease); err != nil {
		return nil, err
	}
	return c, nil
}

// Lease returns a time before which ZooKeeper cannot have expired the
// session with the given id, or a time in the past. It is measured on the
// monotonic clock, so it also runs out while the process is stopped or
// paused, when the state seen through Session may be stale. A caller must
// check that id is the session it acts for: after an expiry, a new
// session's lease says nothing of the old one's.
//
// The proof comes from the leader of ZooKeeper's ensemble, which alone
// expires sessions: a follower cut off from its leader answers reads for
// syncLimit × tickTime, long after the leader expired the session, but it
// answers a handshake or a sync only after the leader did. The leader
// touches the session when it grants or revalidates it in a handshake. A
// sync answered on a connection proves that the follower passed the leader
// the session's earlier contact on it: followers report their clients'
// contact in their answers to the leader's pings, every half tick, and
// before the sync on the same link. So the lease runs from when the
// client sent the previous sync answered on the same connection (or made
// the connection), plus the session timeout less a tenth for clock rates.
// That assumes ZooKeeper's tickTime is at most a sixth of the session
// timeout, the interval between syncs.
func (c *Client) Lease() (until time.Time, id int64) {
	c.leaseMu.Lock()
	defer c.leaseMu.Unlock()
	return c.lease, c.leaseID
}

// renewLease sends ZooKeeper a sync every sixth of the session timeout,
// so that Lease stays ahead while the session is healthy.
func (c *Client) renewLease() {
	// The latest proof of the leader's touch: when it was sent, in which
	// session, on which connection.
	var prevSent time.Time
	var prevID int64
	var prevConn uint64
	for {
		timeout := c.Session().Timeout
		if timeout <= 0 {
			timeout = DefaultSessionTimeout
		}
		id, sent := c.Session().ID, time.Now()
		conn, handshake := c.connection()
		if conn != prevConn || id != prevID {
			prevSent, prevID, prevConn = handshake, id, conn
		}
		_, err := c.conn.Sync("/")
		if now, _ := c.connection(); err == nil && c.Session().ID == id && now == conn {
			c.extendLease(id, prevSent.Add(timeout*9/10))
			prevSent = sent
		}
		select {
		case <-time.After(timeout / 6):
		case <-c.done:
			return
		}
	}
}

// extendLease moves the lease of session id to until, if that is later.
func (c *Client) extendLease(id int64, until time.Time) {
	c.leaseMu.Lock()
	defer c.leaseMu.Unlock()
	if id != c.leaseID {
		c.lease, c.leaseID = time.Time{}, id
	}
	if until.After(c.lease) {
		c.lease = until
	}
}

// connection returns how many sessions, or resumptions of a session on a
// new connection, ZooKeeper has granted the client, and when the latest
// one's connection was made.
func (c *Client) connection() (uint64, time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.granted, c.handshakeSent
}

// Counts returns how many times the client got a session back after
// losing contact with ZooKeeper (in the same session, or in a new one
// after an expiry), and how many sessions expired.
func (c *Client) Counts() (reconnects, expiries uint64) {
	return c.reconnects.Load(), c.expiries.Load()
}

// Session returns the current state of the session.
func (c *Client) Session() Session {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.session
}

// Close ends the session, which makes ZooKeeper delete the Client's member
// node at once, stops its Watchers and Registration, and waits until all of
// its goroutines, and go-zookeeper's, have returned. It waits at most a
// second for ZooKeeper to confirm the end of the session, and not at all
// when there is no session; a session it could not end expires.
func (c *Client) Close() {
	c.mu.Lock()
	if c.session.State == Closed {
		c.mu.Unlock()
		return
	}
	c.setSession(Session{State: Closed, ID: c.session.ID, Timeout: c.session.Timeout})
	c.mu.Unlock()

	close(c.done)
	c.endDials()
	c.conn.Close()
	// A connection still in its handshake, or whose close request went
	// unanswered, would keep go-zookeeper waiting for its deadline.
	c.mu.Lock()
	for h := range c.netConns {
		h.Conn.Close()
	}
	c.mu.Unlock()
	c.wg.Wait()
	// go-zookeeper closes its event channel as its last act.
	for range c.events {
	}
}

// onEvent follows the session. go-zookeeper calls it from its own
// goroutines, so it must not block.
func (c *Client) onEvent(ev zk.Event) {
	if ev.Type != zk.EventSession {
		return
	}
	c.mu.Lock()
	s := c.session
	switch {
	case s.State == Closed:
		c.mu.Unlock()
		return
	case ev.State == zk.StateHasSession:
		s = c.handshake
		s.State = Connected
		c.granted++
		// The leader touched the session to grant or revalidate it.
		c.extendLease(s.ID, c.handshakeSent.Add(s.Timeout*9/10))
	case ev.State == zk.StateExpired:
		s.State = Expired
	case ev.State == zk.StateDisconnected && s.State == Connected:
		// go-zookeeper also reports Disconnected right after Expired, and
		// after each failed attempt to reconnect; neither is news.
		s.State = Disconnected
	default:
		c.mu.Unlock()
		return
	}
	first := c.session.ID == 0
	c.setSession(s)
	c.mu.Unlock()
	switch {
	case s.State == Connected && !first:
		c.reconnects.Add(1)
	case s.State == Expired:
		c.expiries.Add(1)
	}

	switch {
	case first:
		c.log.Debug("zkwatch: session established", "zookeeper", ev.Server, "session", sessionID(s.ID), "timeout", s.Timeout)
	case s.State == Connected:
		c.log.Info("zkwatch: session connected", "zookeeper", ev.Server, "session", sessionID(s.ID), "timeout", s.Timeout)
	default:
		c.log.Warn("zkwatch: session "+s.State.String(), "zookeeper", ev.Server, "session", sessionID(s.ID))
	}
}

// setSession records a new session state and wakes the subscribers. The
// caller holds c.mu.
func (c *Client) setSession(s Session) {
	s.Since = time.Now()
	c.session = s
	for ch := range c.subs {
		select {
		case ch <- struct{}{}:
		default: // a wake-up is already pending
		}
	}
}

// subscribe returns a channel that receives a value after session changes.
// Wake-ups coalesce, so the receiver must read Session for the state.
func (c *Client) subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	c.mu.Lock()
	c.subs[ch] = struct{}{}
	c.mu.Unlock()
	return ch, func() {
		c.mu.Lock()
		delete(c.subs, ch)
		c.mu.Unlock()
	}
}

// goroutine runs f in a goroutine that Close waits for. It fails once the
// Client is closed.
func (c *Client) goroutine(f func()) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.session.State == Closed {
		return errClosed
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		f()
	}()
	return nil
}

var errClosed = errors.New("zkwatch: client closed")

// ensureChain creates ChainPath if it is missing. It asks first: a create
// that fails because the node exists is still a write that goes through
// the quorum, and its failure is logged like any other transaction.
func (c *Client) ensureChain() error {
	ok, _, err := c.conn.Exists(ChainPath)
	if err != nil {
		return fmt.Errorf("zkwatch: look for %s: %w", ChainPath, err)
	}
	if ok {
		return nil
	}
	_, err = c.conn.Create(ChainPath, nil, 0, zk.WorldACL(zk.PermAll))
	if err != nil && !errors.Is(err, zk.ErrNodeExists) {
		return fmt.Errorf("zkwatch: create %s: %w", ChainPath, err)
	}
	return nil
}

// dial connects to one ZooKeeper server for go-zookeeper. It notes the
// local IP of the connection, the default advertised address, and watches
// the handshake for what go-zookeeper does not tell: the session id and the
// timeout ZooKeeper granted.
func (c *Client) dial(network, address string, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	conn, err := d.DialContext(c.dialCtx, network, address)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err == nil && c.session.State == Closed {
		conn.Close()
		err = errClosed
	}
	if err != nil {
		c.dialErr = err
		return nil, err
	}
	c.dialed = true
	if a, ok := conn.LocalAddr().(*net.TCPAddr); ok {
		c.localIP = a.IP
	}
	h := &handshakeConn{Conn: conn, c: c, made: time.Now()}
	c.netConns[h] = struct{}{}
	return h, nil
}

// handshakeConn reads the session id and timeout from the server's
// response to the connect request, the first bytes it receives:
// length (int32), protocol version (int32), timeout in ms (int32),
// session id (int64), then the session password.
type handshakeConn struct {
	net.Conn
	c    *Client
	made time.Time // when the connection was made
	head []byte
	done bool
}

const handshakeHead = 4 + 4 + 4 + 8

// Close closes the connection and forgets it.
func (h *handshakeConn) Close() error {
	h.c.mu.Lock()
	delete(h.c.netConns, h)
	h.c.mu.Unlock()
	return h.Conn.Close()
}

func (h *handshakeConn) Read(p []byte) (int, error) {
	n, err := h.Conn.Read(p)
	// go-zookeeper reads the handshake before it starts its receive
	// goroutine, so done needs no lock.
	if !h.done {
		h.head = append(h.head, p[:min(n, handshakeHead-len(h.head))]...)
		if len(h.head) == handshakeHead {
			h.done = true
			timeout := time.Duration(binary.BigEndian.Uint32(h.head[8:12])) * time.Millisecond
			id := int64(binary.BigEndian.Uint64(h.head[12:20]))
			h.c.mu.Lock()
			h.c.handshake, h.c.handshakeSent = Session{ID: id, Timeout: timeout}, h.made
			h.c.mu.Unlock()
		}
	}
	return n, err
}

// advertise completes a member address: a missing or unspecified host
// becomes the local IP of the connection to ZooKeeper, the address on
// which the other servers, reaching the same ZooKeeper, can most likely
// reach this one.
func (c *Client) advertise(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("zkwatch: advertised address %q: %w", addr, err)
	}
	if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
		return "", fmt.Errorf("zkwatch: advertised address %q: bad port", addr)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		c.mu.Lock()
		local := c.localIP
		c.mu.Unlock()
		host = local.String()
	}
	return net.JoinHostPort(host, port), nil
}

// sessionID formats a session id the way ZooKeeper's logs do.
type sessionID int64

func (id sessionID) String() string { return fmt.Sprintf("0x%x", int64(id)) }

// zkLogger routes go-zookeeper's messages to slog at debug level, since it
// reports every reconnection attempt.
type zkLogger struct{ l *slog.Logger }

func (z zkLogger) Printf(format string, args ...any) {
	if z.l.Enabled(context.Background(), slog.LevelDebug) {
		z.l.Debug("zookeeper: " + fmt.Sprintf(format, args...))
	}
}
