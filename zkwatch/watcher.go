package zkwatch

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"
)

// retryDelay is how long Watchers and Registrations wait before trying
// again after a ZooKeeper request failed for a reason other than lost
// contact, whose end they are woken for.
const retryDelay = 500 * time.Millisecond

// Watcher keeps a View of the chain current.
//
// ZooKeeper watches fire once, so the Watcher re-arms its watch on
// ChainPath's children each time it reads them. It reads them again
// whenever the Client gets a session back, since a watch can be lost with
// the connection or the session.
type Watcher struct {
	c           *Client
	updates     chan View
	stop        chan struct{}
	stopOnce    sync.Once
	done        chan struct{} // closed when run returns
	unsubscribe func()
	addrs       map[string]string // member name -> address; member data never changes

	mu   sync.Mutex
	view View
}

// Watch reads the chain, creating ChainPath if it is missing, and returns a
// Watcher that follows it from then on.
func (c *Client) Watch() (*Watcher, error) {
	kick, unsubscribe := c.subscribe()
	w := &Watcher{
		c:           c,
		updates:     make(chan View, 1),
		stop:        make(chan struct{}),
		done:        make(chan struct{}),
		unsubscribe: unsubscribe,
		addrs:       make(map[string]string),
	}
	view, changed, err := w.read()
	if err != nil {
		unsubscribe()
		return nil, err
	}
	w.publish(view)
	if err := c.goroutine(func() { w.run(kick, changed) }); err != nil {
		unsubscribe()
		return nil, err
	}
	return w, nil
}

// View returns the latest view of the chain. While the Client is not
// Connected it may be out of date.
func (w *Watcher) View() View {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.view
}

// Updates returns a channel that holds the latest view not yet received
// from it, starting with the first. Views that a slow receiver missed are
// dropped in favour of newer ones, never the newest. The channel is closed
// when the Watcher or its Client is closed.
func (w *Watcher) Updates() <-chan View { return w.updates }

// Close stops following the chain and closes Updates.
func (w *Watcher) Close() {
	w.stopOnce.Do(func() { close(w.stop) })
	<-w.done
}

func (w *Watcher) run(kick <-chan struct{}, changed <-chan zk.Event) {
	defer close(w.done)
	defer close(w.updates)
	defer w.unsubscribe()
	var retry <-chan time.Time
	for {
		select {
		case <-changed:
		case <-kick:
			if w.c.Session().State != Connected {
				continue
			}
		case <-retry:
		case <-w.stop:
			return
		case <-w.c.done:
			return
		}
		// A fired watch channel is closed; a watch still armed is
		// superseded by the one read sets.
		changed, retry = nil, nil
		view, ch, err := w.read()
		if err != nil {
			w.c.log.Debug("zkwatch: reading the chain failed", "err", err)
			if w.c.Session().State == Connected {
				retry = time.After(retryDelay)
			}
			continue
		}
		changed = ch
		w.publish(view)
	}
}

// read reads the members under ChainPath and sets a watch for changes.
func (w *Watcher) read() (View, <-chan zk.Event, error) {
	conn := w.c.conn
	names, _, changed, err := conn.ChildrenW(ChainPath)
	if errors.Is(err, zk.ErrNoNode) {
		if err := w.c.ensureChain(); err != nil {
			return View{}, nil, err
		}
		names, _, changed, err = conn.ChildrenW(ChainPath)
	}
	if err != nil {
		return View{}, nil, fmt.Errorf("zkwatch: list %s: %w", ChainPath, err)
	}
	members := make([]Member, 0, len(names))
	addrs := make(map[string]string, len(names))
	for _, name := range names {
		seq, ok := parseName(name)
		if !ok {
			continue // not a member node
		}
		addr, ok := w.addrs[name]
		if !ok {
			data, _, err := conn.Get(ChainPath + "/" + name)
			if errors.Is(err, zk.ErrNoNode) {
				continue // gone since listed; the watch reports it
			}
			if err != nil {
				return View{}, nil, fmt.Errorf("zkwatch: read %s/%s: %w", ChainPath, name, err)
			}
			addr = parseAddr(data)
		}
		addrs[name] = addr
		members = append(members, Member{Name: name, Seq: seq, Addr: addr})
	}
	w.addrs = addrs
	sortMembers(members)
	return View{Members: members}, changed, nil
}

// publish makes v the latest view unless nothing changed. Only one
// goroutine at a time publishes, so the send below cannot block; doing it
// under w.mu keeps Updates from lagging behind View.
func (w *Watcher) publish(v View) {
	w.mu.Lock()
	defer w.mu.Unlock()
	// read never returns nil Members, so nil means nothing was published.
	if w.view.Members != nil && v.equal(w.view) {
		return
	}
	w.view = v
	select {
	case <-w.updates:
	default:
	}
	w.updates <- v
}
