package zkwatch

import (
	"sync"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/chaintable/chaintable/internal/zktest"
)

// A follower cut off from its leader goes on answering reads for
// syncLimit × tickTime, long after the quorum expired the session of a
// client connected to it. The lease must not be renewed by those reads: it
// ends before the quorum deletes the member node.
func TestLeaseEndsBeforeExpiryOnCutFollower(t *testing.T) {
	const syncLimit = 25 // ticks: 5s, longer than the session
	e := zktest.StartEnsembleWith(t, 3, zktest.EnsembleOptions{SyncLimit: syncLimit, Links: true})
	leader := e.Leader()
	if leader < 0 {
		t.Fatal("no member of the ensemble leads")
	}
	f := (leader + 1) % len(e.Members)
	const timeout = 1500 * time.Millisecond
	c := dial(t, e.Members[f].Addr(), timeout)
	r := register(t, c, ":9001")
	id := c.Session().ID

	deadline := time.Now().Add(waitTimeout)
	for until, lid := c.Lease(); lid != id || !until.After(time.Now()); until, lid = c.Lease() {
		if time.Now().After(deadline) {
			t.Fatalf("no lease after %s", waitTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}

	observer := dial(t, e.Members[leader].Addr(), 2*time.Second)
	ok, _, deleted, err := observer.conn.ExistsW(ChainPath + "/" + r.Name())
	if err != nil || !ok {
		t.Fatalf("member node %s: %v, %v", r.Name(), ok, err)
	}

	// The furthest lease the session ever had, sampled until the end.
	var mu sync.Mutex
	var furthest time.Time
	stop, sampled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if until, lid := c.Lease(); lid == id {
				mu.Lock()
				if until.After(furthest) {
					furthest = until
				}
				mu.Unlock()
			}
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()

	e.Link(f, leader).Pause()
	cut := time.Now()
	var expired time.Time
	select {
	case ev := <-deleted:
		expired = time.Now()
		if ev.Type != zk.EventNodeDeleted {
			t.Fatalf("watch on the member node: %v", ev)
		}
	case <-time.After(waitTimeout):
		t.Fatalf("the quorum kept the member node %s after the follower was cut", waitTimeout)
	}
	// Until the cut follower gives up on its leader, and a little more.
	time.Sleep(time.Until(cut.Add(syncLimit*zktest.TickTime + time.Second)))
	close(stop)
	<-sampled

	t.Logf("cut at 0, the quorum deleted the member node at %s, the lease ran to %s",
		expired.Sub(cut).Round(time.Millisecond), furthest.Sub(cut).Round(time.Millisecond))
	if furthest.After(expired) {
		t.Errorf("the lease ran to %s after the cut, past the quorum's deletion of the member node at %s",
			furthest.Sub(cut).Round(time.Millisecond), expired.Sub(cut).Round(time.Millisecond))
	}
}
