package chain_test

import (
	"fmt"
	"os"
	"strings"
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
// up with a full snapshot under a new identity; and the middle's, the
// head's and the tail's disks failing in turn: each node must leave the
// chain at once (no acknowledged write lost) and exit with an error.
func TestFaultDurable(t *testing.T) {
	s := faultSeedOf(t)
	nm := startNemesis(t, cluster.Options{DataDirs: true}, s)
	nm.run(faultBaseline())
	nm.run(faultRestartWithData(2))
	nm.run(faultDiskFails(1))
	nm.run(faultDiskFails(0))
	nm.run(faultDiskFails(2))
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

// faultDiskFails makes the disk of the node at pos fail under load: the
// node must acknowledge nothing it could not make durable, leave the chain
// at once rather than hold up every write until its session expires, and
// exit with an error. Started again on a working disk, it catches up.
func faultDiskFails(pos int) nemesisFault {
	return nemesisFault{name: "the disk of " + faultRole(pos) + " fails", inject: func(nm *nemesis, p *cluster.Phase) {
		n := nm.c.At(pos)
		start := time.Now()
		n.FailDisk()
		how, ok := n.WaitExit(faultRecover)
		if !ok {
			nm.t.Fatalf("%v still runs %v after its disk failed; last lines of its log:\n%s", n, faultRecover, n.LogTail(20))
		}
		exited := time.Since(start)
		if how != "exit status 1" {
			nm.t.Errorf("%v ended with %q after its disk failed, want exit status 1", n, how)
		}
		failover := faultAddBack(nm, n)
		p.Recovered()
		p.Notef("%v's disk failed: it left and exited (%s) after %v, the chain served without it after %v (its session timeout is %v), and with it back as the new tail after %v",
			n, how, exited.Round(time.Millisecond), failover.Sub(start).Round(time.Millisecond), nm.c.SessionTimeout(), time.Since(start).Round(time.Millisecond))
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
		pred := c.Tail()
		n.Restart()
		nemesisWaitTail(nm.t, c, n, -1)
		p.Recovered()
		m, _ := n.Member()
		links := faultWaitLinksTo(nm.t, pred, m.Name)
		if len(links) == 0 || !strings.Contains(links[len(links)-1], "snapshot=true") {
			nm.t.Errorf("%v linked to the wiped %v with %q, want a full snapshot", pred, n, links)
		}
		p.Notef("%v killed and its data dir deleted; back as the new tail after %v (%s)", n, time.Since(start).Round(time.Millisecond), faultJoin(links))
	}}
}

// faultRestartWithData kills the node at pos and starts it again with its
// data dir once the chain serves without it: it must catch up with only
// the writes it missed, from its predecessor's log, and no snapshot.
func faultRestartWithData(pos int) nemesisFault {
	return nemesisFault{name: "SIGKILL " + faultRole(pos) + ", restart it with its data (catches up from the log)", inject: func(nm *nemesis, p *cluster.Phase) {
		faultKillAndAddBack(pos).inject(nm, p) // with its data dir, as every restart
		c := nm.c
		n := c.At(pos)
		m, _ := n.Member()
		pred := c.At(pos - 1)
		links := faultWaitLinksTo(nm.t, pred, m.Name)
		if len(links) == 0 {
			nm.t.Errorf("%v never logged its link to %s", pred, m.Name)
		}
		for _, line := range links {
			if !strings.Contains(line, "snapshot=false") || strings.Contains(line, "delta=0") {
				nm.t.Errorf("%v linked to the restarted %v with a snapshot, want only the writes it missed from the log: %s", pred, n, line)
			}
		}
		p.Notef("%v caught up from %v's log (%s)", n, pred, faultJoin(links))
	}}
}

// faultWaitLinksTo returns the lines of n's log that say it linked to
// member, once there is one, or none after faultRecover. A node that
// rejoins serves before it is linked (it passes reads to the head while it
// catches up), so the line may come after the node answered.
func faultWaitLinksTo(t *testing.T, n *cluster.Node, member string) []string {
	t.Helper()
	deadline := time.Now().Add(faultRecover)
	for {
		links := faultLinksTo(t, n, member)
		if len(links) > 0 || time.Now().After(deadline) {
			return links
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// faultLinksTo returns the lines of n's log that say it linked to member.
func faultLinksTo(t *testing.T, n *cluster.Node, member string) []string {
	t.Helper()
	b, err := os.ReadFile(n.LogPath())
	if err != nil {
		t.Fatal(err)
	}
	var links []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, "linked to successor") && strings.Contains(line, "succ="+member+" ") {
			i := strings.Index(line, "snapshot=")
			links = append(links, line[i:])
		}
	}
	return links
}
