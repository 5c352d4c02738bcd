package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/chaintable/chaintable/chain"
	"github.com/chaintable/chaintable/diskfs"
	"github.com/chaintable/chaintable/durable"
	"github.com/chaintable/chaintable/metrics"
	"github.com/chaintable/chaintable/srv"
	"github.com/chaintable/chaintable/zkwatch"
)

// runChain serves as a member of the chain registered in ZooKeeper until
// SIGINT or SIGTERM, then leaves the chain without losing work in flight.
// A node whose data dir's disk failed leaves too, at once, so that the
// chain goes on without it, and runChain returns the error.
func runChain(o options, store *srv.Store, log *slog.Logger) error {
	zc, err := zkwatch.Dial(o.zkAddr, zkwatch.Options{Logger: log, SessionTimeout: o.sessionTimeout})
	if err != nil {
		return err
	}
	defer zc.Close()
	// From the first session on, a signal is the node's to handle: one
	// that comes while it joins the chain ends the session at once, which
	// fails what waits for ZooKeeper and deletes any member node made.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	joining := context.AfterFunc(ctx, zc.Close)

	// The session the node's current member name belongs to: a lease on
	// any other session says nothing about that name.
	var memberSession atomic.Int64
	sessionLease := func() time.Time {
		until, id := zc.Lease()
		if id != memberSession.Load() {
			return time.Time{}
		}
		return until
	}
	cfg := chain.NodeConfig{Store: store, MaxFrame: o.maxFrame, LeaseTerm: o.leaseTerm, HoldTimeout: o.holdTimeout, ClientExpiry: o.clientExpiry, SessionLease: sessionLease, Logger: log}
	node, id, closeLog, err := openNode(cfg, o, log)
	if err != nil {
		return err
	}
	defer closeLog()
	defer node.Close()
	s, err := srv.Start(o.serverConfig(node, store, log))
	if err != nil {
		return err
	}
	node.UseServer(s)
	stopServer := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Stop(ctx)
	}
	defer stopServer()
	stopMetrics, err := o.serveMetrics(metrics.Sources{Stats: store.Stats, Table: store.Table, Node: node, ZK: zc}, log)
	if err != nil {
		return err
	}
	defer stopMetrics()

	// joinFailed tells why joining failed: the signal that cut it short,
	// if one did.
	joinFailed := func(err error) error {
		if ctx.Err() != nil {
			return errors.New("stopped by a signal while joining the chain")
		}
		return err
	}
	watcher, err := zc.Watch()
	if err != nil {
		return joinFailed(err)
	}
	defer watcher.Close()
	reg, err := zc.Register(net.JoinHostPort(o.advertise, strconv.Itoa(o.port)))
	if err != nil {
		return joinFailed(err)
	}
	defer reg.Close()
	if !joining() {
		return joinFailed(nil)
	}
	log.Info("serving as a chain member", "member", reg.Name(), "addr", reg.Addr(), "zookeeper", o.zkAddr)

	f := &follower{node: node, id: id, zc: zc, reg: reg, watcher: watcher, memberSession: &memberSession, log: log, force: o.forceStart}
	following, stopFollowing := context.WithCancel(ctx)
	defer stopFollowing()
	var diskFailed atomic.Bool
	go func() {
		select {
		case <-node.DiskFailed():
			diskFailed.Store(true)
			stopFollowing()
		case <-following.Done():
		}
	}()
	f.run(following)

	if diskFailed.Load() {
		// Nothing commits through the node any more, so there is
		// nothing to drain: it leaves as a crashed node would, only
		// sooner than its session's expiry would take it off. Its entry
		// in the holders record stays for the live members to drop as
		// they go on without it: the only member of a chain must stay
		// listed, since its data dir holds every acknowledged write.
		log.Error("leaving the chain: the data dir's disk failed, and a member that cannot make writes durable holds up every write", "dir", o.dataDir)
	} else {
		log.Info("leaving the chain")
		// A node gives its read lease back only once the leases it
		// granted ran out (chain.Machine.Released): it waits at least
		// that long, so that it never leaves a successor answering
		// reads behind it.
		drain := max(5*time.Second, o.leaseTerm+time.Second)
		if !node.Drain(drain) {
			log.Warn("writes still in flight, or a lease granted still running, after the drain; leaving anyway", "wait", drain, "state", node.State())
		}
	}
	f.leave(leaveTimeout)
	if diskFailed.Load() {
		return errors.New("the data dir's disk failed (see the log above); the data dir holds every write this node acknowledged: restart the node on it once the disk is fixed")
	}
	return nil
}

// leaveTimeout bounds how long a node that stops waits for ZooKeeper to
// take it off the holders record and the chain. After SIGTERM a node
// drains for at most 5s, leaves within this, and closes its session
// within 1s more: 9s, before scripts/run.sh sends SIGKILL at 10s.
const leaveTimeout = 3 * time.Second

// leave takes the node off the holders record, since a node that leaves
// takes its table with it, and then deletes its member node, trying again
// until within elapses. A ZooKeeper that does not answer in time is left
// to drop the node when its session expires.
func (f *follower) leave(within time.Duration) {
	deadline := time.Now().Add(within)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if f.syncing != nil {
			<-f.syncing
		}
		left := f.sync()
		for !left && time.Until(deadline) > retryDelay {
			time.Sleep(retryDelay)
			left = f.sync()
		}
		if !left {
			f.log.Warn("could not take this node off the holders record")
		}
		if err := f.reg.Close(); err != nil {
			f.log.Warn("could not delete the member node; ZooKeeper drops it when the session ends", "err", err)
		}
	}()
	select {
	case <-done:
	case <-time.After(within):
		f.log.Warn("ZooKeeper did not answer in time; leaving without it: the chain drops this node when its session expires", "waited", within)
		// Closing the client fails the requests in flight at once.
		f.zc.Close()
		<-done
	}
}

// follower feeds a node its member name, with the session it belongs to,
// the chain's views and the holders record (see chain.Holders), which it
// keeps in line before every view it installs.
type follower struct {
	node          *chain.Node
	id            string // the node's identity in the holders record
	zc            *zkwatch.Client
	reg           *zkwatch.Registration
	watcher       *zkwatch.Watcher
	memberSession *atomic.Int64
	log           *slog.Logger
	force         bool // -force-start, until the node first leads or follows

	name       string
	waitingFor string    // the holders last reported waited for
	syncing    chan bool // a sync that run left in flight, for leave to wait for
}

// recheck is how often the follower brings the holders record in line
// without a change of view: a node that became live lists itself.
const recheck = time.Second

// run follows until ctx ends.
func (f *follower) run(ctx context.Context) {
	f.node.TrackHolders(f.id)
	f.rejoin(f.reg.Status())
	tick := time.NewTicker(recheck)
	defer tick.Stop()
	for {
		// A sync waits for ZooKeeper, which may not answer for seconds:
		// a signal meanwhile starts the leave at once, and the leave
		// waits for the sync within its own bound.
		synced := make(chan bool, 1)
		go func() { synced <- f.sync() }()
		var ok bool
		select {
		case ok = <-synced:
		case <-ctx.Done():
			f.syncing = synced
			return
		}
		retry := tick.C
		if !ok {
			retry = time.After(retryDelay)
		}
		select {
		case st, open := <-f.reg.Updates():
			if !open {
				return
			}
			f.rejoin(st)
		case _, open := <-f.watcher.Updates():
			if !open {
				return
			}
		case <-retry:
		case <-ctx.Done():
			return
		}
	}
}

// retryDelay is how soon a failed sync is tried again.
const retryDelay = 200 * time.Millisecond

// rejoin gives the node its new member name, if it has one.
func (f *follower) rejoin(st zkwatch.Status) {
	if st.Name != f.name && st.Name != "" {
		f.name = st.Name
		f.memberSession.Store(st.ID)
		f.node.Rejoin(f.name)
	}
}

// sync reads the holders record, writes it as the node needs before it
// installs the latest view, installs the view, and moves the node to the
// end of the chain if it may not lead. It reports whether the view was
// installed.
func (f *follower) sync() bool {
	view := members(f.watcher.View())
	data, version, err := f.zc.Record()
	if err != nil {
		f.log.Debug("reading the holders record", "err", err)
		return false
	}
	hs, err := chain.ParseHolders(data)
	if err != nil {
		f.log.Error("the chain record in ZooKeeper is not a holders record; this node will not lead the chain", "path", zkwatch.ChainPath, "err", err)
		return false
	}
	if f.force {
		hs, version = f.forceStart(hs, version, view)
	}
	next, changed := f.node.PlanHolders(hs, view)
	if changed {
		switch err := f.reg.SetRecord(f.name, next.Encode(), version); {
		case errors.Is(err, zkwatch.ErrRecordChanged), errors.Is(err, zkwatch.ErrNotRegistered):
			return false
		case err != nil:
			f.log.Debug("writing the holders record", "err", err)
			return false
		}
	}
	f.node.SetHolders(next)
	if err := f.node.SetView(view); err != nil {
		f.log.Debug("view not installed", "err", err)
		return false
	}
	if holders, waiting := f.node.Waiting(); waiting {
		f.reportWaiting(holders)
		if f.node.ShouldYield() {
			f.log.Info("a node that holds the latest writes registered after this one: moving to the end of the chain")
			if err := f.reg.Requeue(); err != nil {
				f.log.Warn("moving to the end of the chain", "err", err)
			}
		}
	} else {
		f.waitingFor, f.force = "", false
	}
	return true
}

// forceStart empties the holders record if none of its nodes is
// registered, so that the first node of the chain may lead with what it
// has.
func (f *follower) forceStart(hs chain.Holders, version int32, view []chain.Member) (chain.Holders, int32) {
	if len(hs) == 0 {
		return hs, version
	}
	for _, h := range hs {
		if slices.ContainsFunc(view, func(m chain.Member) bool { return m.Name == h.Name }) {
			return hs, version
		}
	}
	if err := f.reg.SetRecord(f.name, nil, version); err != nil {
		return hs, version
	}
	f.log.Warn("-force-start: starting the chain without the nodes that held the latest writes; their writes are lost", "holders", string(hs.Encode()))
	return nil, version + 1
}

// reportWaiting logs, once per record, that the node waits for a holder.
func (f *follower) reportWaiting(hs chain.Holders) {
	text := strings.TrimSpace(string(hs.Encode()))
	if text == f.waitingFor {
		return
	}
	f.waitingFor = text
	f.log.Warn("first in the chain, but ZooKeeper lists other nodes as holding the latest writes: waiting for one of them to register; "+
		"if they are gone for good, restart this node with -force-start (their writes are lost)", "holders", text)
}

// openNode returns the node, its identity in the holders record, and what
// closes its data dir: with -data-dir, the node starts from what the dir
// holds and is the node of the dir's identity; without, it starts empty as
// a process of its own.
func openNode(cfg chain.NodeConfig, o options, log *slog.Logger) (node *chain.Node, id string, closeLog func(), err error) {
	if o.dataDir == "" {
		return chain.NewNode(cfg), holderID(), func() {}, nil
	}
	l, err := durable.Open(diskfs.OS{}, o.dataDir, cfg.Store.Table, durable.Options{Mode: o.fsync, Logger: log})
	if err != nil {
		return nil, "", nil, err
	}
	cfg.Log = l
	if node, err = chain.OpenNode(cfg); err != nil {
		return nil, "", nil, err
	}
	l.Start(node)
	log.Info("data dir open", "dir", o.dataDir, "fsync", o.fsync, "id", l.ID())
	return node, l.ID(), func() {
		if err := l.Close(); err != nil {
			log.Warn("closing the data dir", "dir", o.dataDir, "err", err)
		}
	}, nil
}

// holderID returns an identity for this process, unique among all the
// processes that ever serve the chain.
func holderID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func members(v zkwatch.View) []chain.Member {
	ms := make([]chain.Member, len(v.Members))
	for i, m := range v.Members {
		ms[i] = chain.Member{Name: m.Name, Addr: m.Addr}
	}
	return ms
}
