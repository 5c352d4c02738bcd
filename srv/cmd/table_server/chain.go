package main

import (
	"context"
	"log/slog"
	"net"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/chaintable/chaintable/chain"
	"github.com/chaintable/chaintable/srv"
	"github.com/chaintable/chaintable/zkwatch"
)

// runChain serves as a member of the chain registered in ZooKeeper until
// SIGINT or SIGTERM, then leaves the chain without losing work in flight.
func runChain(o options, store *srv.Store, log *slog.Logger) error {
	zc, err := zkwatch.Dial(o.zkAddr, zkwatch.Options{Logger: log, SessionTimeout: o.sessionTimeout})
	if err != nil {
		return err
	}
	defer zc.Close()

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
	node := chain.NewNode(chain.NodeConfig{Store: store, MaxFrame: o.maxFrame, LeaseTerm: o.leaseTerm, SessionLease: sessionLease, Logger: log})
	defer node.Close()
	s, err := srv.Start(o.serverConfig(node, store, log))
	if err != nil {
		return err
	}
	stopServer := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Stop(ctx)
	}
	defer stopServer()

	watcher, err := zc.Watch()
	if err != nil {
		return err
	}
	defer watcher.Close()
	reg, err := zc.Register(net.JoinHostPort(o.advertise, strconv.Itoa(o.port)))
	if err != nil {
		return err
	}
	defer reg.Close()
	log.Info("serving as a chain member", "member", reg.Name(), "addr", reg.Addr(), "zookeeper", o.zkAddr)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	follow(ctx, node, reg, watcher, &memberSession)

	log.Info("leaving the chain")
	if !node.Drain(5 * time.Second) {
		log.Warn("writes still in flight after 5s; leaving anyway", "state", node.State())
	}
	if err := reg.Close(); err != nil {
		log.Warn("could not delete the member node; ZooKeeper drops it when the session ends", "err", err)
	}
	return nil
}

// follow feeds the node its member name, with the session it belongs to,
// and the chain's views, until ctx ends.
func follow(ctx context.Context, node *chain.Node, reg *zkwatch.Registration, watcher *zkwatch.Watcher, memberSession *atomic.Int64) {
	name := ""
	apply := func(st zkwatch.Status) {
		if st.Name != name && st.Name != "" {
			name = st.Name
			memberSession.Store(st.ID)
			node.Rejoin(name)
			node.SetView(members(watcher.View()))
		}
	}
	apply(reg.Status())
	for {
		select {
		case st, ok := <-reg.Updates():
			if !ok {
				return
			}
			apply(st)
		case v, ok := <-watcher.Updates():
			if !ok {
				return
			}
			node.SetView(members(v))
		case <-ctx.Done():
			return
		}
	}
}

func members(v zkwatch.View) []chain.Member {
	ms := make([]chain.Member, len(v.Members))
	for i, m := range v.Members {
		ms[i] = chain.Member{Name: m.Name, Addr: m.Addr}
	}
	return ms
}
