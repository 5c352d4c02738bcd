package main

import (
	"testing"
	"time"

	"github.com/chaintable/chaintable/internal/cluster"
)

// A node told to stop while ZooKeeper is frozen leaves within its bound,
// well before scripts/run.sh's SIGKILL at 10s, instead of trying each
// ZooKeeper request for as long as go-zookeeper would.
func TestLeaveWithZooKeeperFrozen(t *testing.T) {
	c := cluster.Start(t, cluster.Options{Nodes: 2, SessionTimeout: 4 * time.Second})
	n := c.WaitTailServes(30 * time.Second)
	n.FreezeZK()
	start := time.Now()
	code := n.Term()
	took := time.Since(start)
	t.Logf("left %s after SIGTERM, exit code %d", took.Round(time.Millisecond), code)
	// Nothing to drain; the leave, then at most a second to close the
	// session, with a little room for a busy machine.
	if bound := leaveTimeout + time.Second + 1500*time.Millisecond; took > bound {
		t.Errorf("left %s after SIGTERM, bound %s", took, bound)
	}
	if code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
}
