package chain_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/chaintable/chaintable/internal/cluster"
	"github.com/chaintable/chaintable/zkwatch"
)

// TestFaultDurable runs a chain of three with data dirs (--data-dir,
// --fsync batch) under load through the faults that only a write-ahead
// log survives: every node SIGKILLed at once and started again with its
// data dir, which must bring back every acknowledged write without
// --force-start; and a node whose data dir was deleted, which must catch
// up with a full snapshot under a new identity.
func TestFaultDurable(t *testing.T) {
	s := faultSeedOf(t)
	nm := startNemesis(t, cluster.Options{DataDirs: true}, s)
	nm.run(faultBaseline())
	nm.run(faultKillAll())
	nm.run(faultWipeAndAddBack(1))
	nm.run(faultKillAll())
	nm.finish("every node with --data-dir, --fsync batch", fmt.Sprintf("seed %d", s))
}

// faultKillAll SIGKILLs every node of the chain at once and starts them
// again, in chain order, with their data dirs: once the old sessions have
// expired the first back leads with its log, which holds every write
// acknowledged, and the others catch up behind it.
func faultKillAll() nemesisFault {
	return nemesisFault{name: "SIGKILL every node, restart all with their data", inject: func(nm *nemesis, p *cluster.Phase) {
		c := nm.c
		var nodes []*cluster.Node
		var floor int64
		for _, m := range c.View().Members {
			nodes = append(nodes, c.NodeAt(m.Addr))
			floor = max(floor, m.Seq)
		}
		start := time.Now()
		for _, n := range nodes {
			n.Kill()
		}
		for _, n := range nodes {
			n.Restart()
		}
		restarted := time.Since(start)
		// Whole again once the old members' sessions expired.
		c.WaitView(func(v zkwatch.View) bool {
			head, ok := v.Head()
			return ok && head.Seq > floor && len(v.Members) == len(nodes)
		}, faultRecover)
		c.WaitTailServes(faultRecover)
		p.Recovered()
		p.Notef("%v killed at once and started again within %v; the chain served again after %v",
			nodes, restarted.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	}}
}

// faultWipeAndAddBack kills the node at pos, deletes its data dir and
// starts it again: a new node to the chain, it must catch up with a full
// snapshot.
func faultWipeAndAddBack(pos int) nemesisFault {
	return nemesisFault{name: "SIGKILL " + faultRole(pos) + ", delete its data dir, add it back", inject: func(nm *nemesis, p *cluster.Phase) {
		c := nm.c
		n := c.At(pos)
		start := time.Now()
		n.WipeData()
		c.WaitGone(n, faultRecover)
		c.WaitTailServes(faultRecover)
		n.Restart()
		nemesisWaitTail(nm.t, c, n, -1)
		p.Recovered()
		p.Notef("%v killed and its data dir deleted; back as the new tail after %v", n, time.Since(start).Round(time.Millisecond))
	}}
}
