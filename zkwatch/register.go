package zkwatch

import (
	"errors"
	"fmt"
	"path"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"
)

// Status is a registered member's standing in ZooKeeper.
type Status struct {
	// Session is the state of the Client's session.
	Session
	// Name is the member's node name under ChainPath, as in View, or ""
	// while it has none: after its session expired and until it is
	// registered again under a new name.
	Name string
}

// Registration keeps a member node for this server under ChainPath. It
// does not notice another client deleting the node while the session
// lives; the member is then missing from every View.
type Registration struct {
	c           *Client
	addr        string
	updates     chan Status
	stop        chan struct{}
	closeOnce   sync.Once
	done        chan struct{} // closed when run returns
	requeue     chan chan error
	unsubscribe func()

	mu     sync.Mutex
	status Status
	path   string // full path of the member node, "" if none
	owner  int64  // session that owns path
}

// Register adds this server to the chain as a member serving at addr, an
// "ip:port" or ":port" address. A missing or unspecified ("0.0.0.0") IP is
// replaced by the local IP of the connection to ZooKeeper; Addr tells the
// result. The member node holds the address followed by a NUL byte. A
// Client holds at most one Registration at a time.
//
// Register returns once the member node exists. If the session expires the
// Registration creates a new node, under a new name, as soon as the Client
// has a new session.
func (c *Client) Register(addr string) (*Registration, error) {
	addr, err := c.advertise(addr)
	if err != nil {
		return nil, err
	}
	if !c.registered.CompareAndSwap(false, true) {
		return nil, errors.New("zkwatch: register: the client already has a registration")
	}
	kick, unsubscribe := c.subscribe()
	r := &Registration{
		c:           c,
		addr:        addr,
		updates:     make(chan Status, 1),
		stop:        make(chan struct{}),
		done:        make(chan struct{}),
		requeue:     make(chan chan error),
		unsubscribe: unsubscribe,
	}
	if err := r.register(); err != nil {
		unsubscribe()
		c.registered.Store(false)
		return nil, err
	}
	r.publish()
	if err := c.goroutine(func() { r.run(kick) }); err != nil {
		unsubscribe()
		return nil, err
	}
	return r, nil
}

// Addr returns the address that the member node holds.
func (r *Registration) Addr() string { return r.addr }

// Name returns the member's node name under ChainPath, or "" while it has
// none. It changes when the member registers again after its session
// expired.
func (r *Registration) Name() string { return r.Status().Name }

// Status returns the member's current standing.
func (r *Registration) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status
}

// Updates returns a channel that holds the latest Status not yet received
// from it, starting with the first. Older ones that a slow receiver missed
// are dropped. The channel is closed when the Registration or its Client is
// closed.
func (r *Registration) Updates() <-chan Status { return r.updates }

// Close deletes the member node, so the chain learns at once that this
// server left, and stops the Registration. A server shutting down closes
// its Registration, or its Client, before it stops serving.
func (r *Registration) Close() error {
	var err error
	r.closeOnce.Do(func() {
		close(r.stop)
		<-r.done
		err = r.leave()
		r.c.registered.Store(false)
	})
	return err
}

// Requeue moves the member to the end of the chain: it deletes the member
// node and creates a new one, under a new name. A member that must not
// lead the chain, but registered first, gives its place to those after
// it. If creating the new node fails, the Registration tries again as
// after an expiry, and Requeue returns the error.
func (r *Registration) Requeue() error {
	reply := make(chan error, 1)
	select {
	case r.requeue <- reply:
		return <-reply
	case <-r.done:
		return ErrNotRegistered
	}
}

// leave deletes the member node.
func (r *Registration) leave() error {
	r.mu.Lock()
	p := r.path
	r.path = ""
	r.status.Name = ""
	r.mu.Unlock()
	if p == "" {
		return nil
	}
	err := r.c.conn.Delete(p, -1)
	if err == nil || errors.Is(err, zk.ErrNoNode) || r.c.Session().State == Closed {
		// A closed Client's session is gone, and its nodes with it.
		return nil
	}
	return fmt.Errorf("zkwatch: delete member node %s: %w", p, err)
}

func (r *Registration) run(kick <-chan struct{}) {
	defer close(r.done)
	defer close(r.updates)
	defer r.unsubscribe()
	var retry <-chan time.Time
	for {
		select {
		case <-kick:
		case <-retry:
		case reply := <-r.requeue:
			err := r.leave()
			if err == nil {
				err = r.register()
			}
			reply <- err
		case <-r.stop:
			return
		case <-r.c.done:
			return
		}
		retry = nil
		s := r.c.Session()
		r.mu.Lock()
		if s.State == Expired || s.State == Connected && r.owner != s.ID {
			// ZooKeeper deleted the node with the session that owned it.
			r.path = ""
		}
		stale := r.path == "" && s.State == Connected
		r.mu.Unlock()
		if stale {
			if err := r.register(); err != nil {
				r.c.log.Warn("zkwatch: registering again failed", "addr", r.addr, "err", err)
				retry = time.After(retryDelay)
			}
		}
		r.publish()
	}
}

// registerTries bounds how often register tries again after losing
// contact with ZooKeeper; run tries again later.
const registerTries = 3

// register creates the member node, under the plain sequential name that
// course servers use ("node0000000007"), so that clients ordering the
// children of ChainPath by name, as course clients do, agree with the
// order by sequence. A create whose connection drops before ZooKeeper's
// answer may still have created the node, in the same session: so before
// each create register adopts a member node that its session already
// owns, and it deletes any other, since a Client holds one Registration
// and no node of its session can be anyone else's.
func (r *Registration) register() error {
	if err := r.c.ensureChain(); err != nil {
		return err
	}
	for try := 1; ; try++ {
		p, owner, err := r.createOrAdopt()
		if err == nil {
			r.mu.Lock()
			r.path, r.owner = p, owner
			r.mu.Unlock()
			r.c.log.Info("zkwatch: registered", "node", path.Base(p), "addr", r.addr, "session", sessionID(owner))
			return nil
		}
		if try == registerTries || !lostContact(err) {
			return fmt.Errorf("zkwatch: register %s: %w", r.addr, err)
		}
	}
}

// createOrAdopt adopts the member node of the current session, or creates
// one. It returns the node's path and the session that owns it.
func (r *Registration) createOrAdopt() (string, int64, error) {
	c := r.c
	if p, owner, err := r.adopt(c.conn.SessionID()); err != nil || p != "" {
		return p, owner, err
	}
	data := append([]byte(r.addr), 0)
	p, err := c.conn.Create(ChainPath+"/"+nodePrefix, data, zk.FlagEphemeral|zk.FlagSequence, zk.WorldACL(zk.PermAll))
	if err != nil {
		return "", 0, fmt.Errorf("create %s/%s: %w", ChainPath, nodePrefix, err)
	}
	// The node belongs to the session the connection had when ZooKeeper
	// created it, which may be newer than the one this call began in.
	ok, stat, err := c.conn.Exists(p)
	if err == nil && !ok {
		err = zk.ErrNoNode
	}
	if err != nil {
		return "", 0, fmt.Errorf("read %s: %w", p, err)
	}
	if p, owner, err := r.adopt(stat.EphemeralOwner); err != nil || p != "" {
		return p, owner, err
	}
	return "", 0, fmt.Errorf("member node %s vanished", p)
}

// lostContact reports whether a ZooKeeper request failed because the
// connection or the session was lost, so that it may or may not have
// taken effect.
func lostContact(err error) bool {
	return errors.Is(err, zk.ErrConnectionClosed) || errors.Is(err, zk.ErrSessionExpired) || errors.Is(err, zk.ErrNoServer)
}

// adopt returns the newest member node that session owns if it holds the
// member's address, and deletes every other member node the session owns. It
// returns "" if there is none. It fails if it cannot tell or cannot
// delete, so that a session never keeps two member nodes.
func (r *Registration) adopt(session int64) (string, int64, error) {
	c := r.c
	if session == 0 {
		return "", 0, nil
	}
	names, _, err := c.conn.Children(ChainPath)
	if err != nil {
		return "", 0, fmt.Errorf("list %s: %w", ChainPath, err)
	}
	var mine []Member
	for _, name := range names {
		seq, ok := parseName(name)
		if !ok {
			continue
		}
		data, stat, err := c.conn.Get(ChainPath + "/" + name)
		switch {
		case errors.Is(err, zk.ErrNoNode):
			continue
		case err != nil:
			return "", 0, fmt.Errorf("read %s/%s: %w", ChainPath, name, err)
		case stat.EphemeralOwner == session:
			mine = append(mine, Member{Name: name, Seq: seq, Addr: parseAddr(data)})
		}
	}
	sortMembers(mine)
	keep := len(mine) - 1
	if keep >= 0 && mine[keep].Addr != r.addr {
		keep = -1
	}
	for i, m := range mine {
		if i == keep {
			continue
		}
		if err := c.conn.Delete(ChainPath+"/"+m.Name, -1); err != nil && !errors.Is(err, zk.ErrNoNode) {
			return "", 0, fmt.Errorf("delete %s/%s, a second member node of session %v: %w", ChainPath, m.Name, sessionID(session), err)
		}
		c.log.Info("zkwatch: deleted a member node left by a failed registration", "node", m.Name, "session", sessionID(session))
	}
	if keep < 0 {
		return "", 0, nil
	}
	return ChainPath + "/" + mine[keep].Name, session, nil
}

// publish makes the current standing the latest Status. Only one goroutine
// at a time publishes, so the send below cannot block; doing it under r.mu
// keeps Updates from lagging behind Status.
func (r *Registration) publish() {
	s := Status{Session: r.c.Session()}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.path != "" {
		s.Name = path.Base(r.path)
	}
	r.status = s
	select {
	case <-r.updates:
	default:
	}
	r.updates <- s
}
