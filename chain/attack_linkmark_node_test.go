package chain

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/chaintable/chaintable/codec"
	"github.com/chaintable/chaintable/srv"
)

// Attacks, with real sockets, on the link's wake-up rule (Node.step kicks
// the link only when Machine.LinkMark changed): each scenario gives the
// link something to send after it went to sleep.

// These tests run with a long lease term, so that the link's
// heartbeat (a quarter of it) is 2s: a link left asleep with something
// to send shows as a wait of seconds, where a write takes milliseconds.
const (
	markLease = 8 * time.Second
	markStall = time.Second // far beyond a write's time, half a heartbeat
)

// startMarkNode starts a node with lease term lease and a session that
// never expires (a lease as long as the term would lapse between ticks).
func startMarkNode(t *testing.T, name string, lease time.Duration) *testNode {
	t.Helper()
	store, _ := srv.NewStore(8)
	tn := &testNode{name: name, store: store}
	n := NewNode(NodeConfig{Store: store, Logger: logger().With("node", name), LeaseTerm: lease, HoldTimeout: 5 * time.Second})
	s, err := srv.Start(srv.Config{Addr: "127.0.0.1:0", Handler: n, Stats: store.Stats, Logger: logger(), EventLoops: 2})
	if err != nil {
		t.Fatal(err)
	}
	tn.node, tn.server = n, s
	n.Rejoin(name)
	t.Cleanup(tn.stop)
	return tn
}

// timedPut writes key=value at head and fails if the write takes longer
// than markStall to be acknowledged.
func timedPut(t *testing.T, head *testNode, key, value string, nodes ...*testNode) {
	t.Helper()
	start := time.Now()
	put(t, head, key, value)
	if d := time.Since(start); d > markStall {
		var states []string
		for _, n := range nodes {
			states = append(states, n.node.State())
		}
		t.Fatalf("put %s took %v (heartbeat %v): %v", key, d, markLease/4, states)
	}
}

// untilLive fails if n is not live within markStall.
func untilLive(t *testing.T, n *testNode) {
	t.Helper()
	deadline := time.Now().Add(markStall)
	for !n.node.Live() {
		if time.Now().After(deadline) {
			t.Fatalf("%s not live after %v: %s", n.name, markStall, n.node.State())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestAttackLinkMarkIdleWrites: writes after idle spells of every length
// below the heartbeat, each from a new connection, with reads between.
func TestAttackLinkMarkIdleWrites(t *testing.T) {
	a, b, c := startMarkNode(t, "node0000000001", markLease), startMarkNode(t, "node0000000002", markLease), startMarkNode(t, "node0000000003", markLease)
	setViews(a, b, c)
	for i := range 40 {
		time.Sleep(time.Duration(i%8) * 7 * time.Millisecond)
		timedPut(t, a, fmt.Sprintf("k%d", i%5), fmt.Sprint(i), a, b, c)
		if v, err := get(t, c, fmt.Sprintf("k%d", i%5)); err != nil || v != fmt.Sprint(i) {
			t.Fatalf("tail after put %d: %q %v", i, v, err)
		}
	}
}

// TestAttackLinkMarkSetViewAtStart: views installed the moment the nodes
// start, racing the link goroutine's first look at the successor.
func TestAttackLinkMarkSetViewAtStart(t *testing.T) {
	for round := range 4 {
		var ns []*testNode
		for i := range 3 {
			ns = append(ns, startMarkNode(t, fmt.Sprintf("node%010d", 10*round+i+1), markLease))
		}
		setViews(ns...)
		timedPut(t, ns[0], "k", fmt.Sprint(round), ns...)
		for _, n := range ns {
			n.stop()
		}
	}
}

// TestAttackLinkMarkJoins: nodes join an idle chain one after another, and
// a chain with writes going on; each must become live (the snapshot, then
// the live marker) and the next write commit, without waiting for a
// heartbeat.
func TestAttackLinkMarkJoins(t *testing.T) {
	a := startMarkNode(t, "node0000000001", markLease)
	setViews(a)
	timedPut(t, a, "k", "0", a)
	chain := []*testNode{a}
	for i := 2; i <= 4; i++ {
		time.Sleep(20 * time.Millisecond)
		n := startMarkNode(t, fmt.Sprintf("node%010d", i), markLease)
		chain = append(chain, n)
		setViews(chain...)
		untilLive(t, n)
		timedPut(t, a, "k", fmt.Sprint(i), chain...)
		if v, err := get(t, n, "k"); err != nil || v != fmt.Sprint(i) {
			t.Fatalf("new tail: %q %v", v, err)
		}
	}
	// Joins under writes: the hand-off comes with an acknowledgement.
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		w := dialWire(t, a.server.Addr())
		for i := 0; ; i++ {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			start := time.Now()
			r, err := w.try(codec.PutRequest(fmt.Sprintf("load%d", i%50), []byte(fmt.Sprint(i))))
			if err != nil || r.Opcode != codec.OpPut+1 {
				done <- fmt.Errorf("put under load: %v %v", r, err)
				return
			}
			if d := time.Since(start); d > markStall {
				done <- fmt.Errorf("put %d under load took %v", i, d)
				return
			}
			time.Sleep(time.Duration(i%4) * time.Millisecond)
		}
	}()
	for i := 5; i <= 7; i++ {
		n := startMarkNode(t, fmt.Sprintf("node%010d", i), markLease)
		chain = append(chain, n)
		setViews(chain...)
		untilLive(t, n)
	}
	close(stop)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	timedPut(t, a, "k", "end", chain...)
}

// TestAttackLinkMarkRejoin: the tail and then the middle lose their place
// and rejoin at the end under new names; each catches up and the chain
// commits again, without waiting for a heartbeat.
func TestAttackLinkMarkRejoin(t *testing.T) {
	a, b, c := startMarkNode(t, "node0000000001", markLease), startMarkNode(t, "node0000000002", markLease), startMarkNode(t, "node0000000003", markLease)
	setViews(a, b, c)
	timedPut(t, a, "k", "0", a, b, c)
	// The tail rejoins: B's successor changes name, a new link.
	c.name = "node0000000004"
	c.node.Rejoin(c.name)
	setViews(a, b, c)
	eventually(t, "rejoined tail live", func() error {
		if !c.node.Live() {
			return fmt.Errorf("not live: %s", c.node.State())
		}
		return nil
	})
	timedPut(t, a, "k", "1", a, b, c)
	if v, err := get(t, c, "k"); err != nil || v != "1" {
		t.Fatalf("rejoined tail: %q %v", v, err)
	}
}

// TestAttackLinkMarkPipelinedBurst: more writes in flight than one frame
// takes (linkBatch) and more bytes than one frame takes (linkBytes),
// while a node joins, so that the live marker may be owed past a frame.
func TestAttackLinkMarkPipelinedBurst(t *testing.T) {
	a, b := startMarkNode(t, "node0000000001", markLease), startMarkNode(t, "node0000000002", markLease)
	setViews(a, b)
	w := dialWire(t, a.server.Addr())
	var frames []byte
	for i := range 3000 {
		frames = append(frames, mustFrame(t, codec.PutRequest(fmt.Sprintf("p%d", i), []byte(fmt.Sprint(i))))...)
	}
	big := make([]byte, 900<<10)
	for i := range 12 {
		frames = append(frames, mustFrame(t, codec.PutRequest(fmt.Sprintf("big%d", i), big))...)
	}
	c := startMarkNode(t, "node0000000003", markLease)
	start := time.Now()
	go w.conn.Write(frames)
	setViews(a, b, c)
	w.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	for i := range 3012 {
		reply := new(codec.MessageT)
		if err := codec.ReadMessage(w.r, codec.DefaultMaxFrame, reply); err != nil || reply.Opcode != codec.OpPut+1 {
			t.Fatalf("reply %d: %v %v", i, reply, err)
		}
	}
	t.Logf("3012 pipelined writes acknowledged in %v", time.Since(start))
	eventually(t, "joined node live", func() error {
		if !c.node.Live() {
			return fmt.Errorf("not live: %s", c.node.State())
		}
		return nil
	})
	timedPut(t, a, "k", "after", a, b, c)
	if v, err := get(t, c, "k"); err != nil || v != "after" {
		t.Fatalf("tail: %q %v", v, err)
	}
}

// TestAttackLinkMarkBypassEnds: the tail, which holds a read lease from
// the middle, rejoins under a new name; the middle holds writes back from
// the new tail until that lease ran out, and then the link must send them
// at once: the end of the bypass comes with a tick, not a write.
func TestAttackLinkMarkBypassEnds(t *testing.T) {
	const lease = time.Second // heartbeat 250ms
	a, b, c := startMarkNode(t, "node0000000001", lease), startMarkNode(t, "node0000000002", lease), startMarkNode(t, "node0000000003", lease)
	setViews(a, b, c)
	put(t, a, "k", "0")
	time.Sleep(lease / 2) // heartbeats: B granted C a lease
	c.name = "node0000000004"
	c.node.Rejoin(c.name)
	setViews(a, b, c)
	start := time.Now()
	put(t, a, "k", "1")
	// Held for at most the lease and its margin from B's last grant,
	// then sent within a tick (lease/4); a second is a stall.
	if d := time.Since(start); d > lease+leaseMargin+lease/4+time.Second {
		t.Fatalf("put after the bypass took %v: %s; %s", d, b.node.State(), c.node.State())
	}
	t.Logf("put during the bypass took %v", time.Since(start))
	eventually(t, "rejoined tail live", func() error {
		if !c.node.Live() {
			return fmt.Errorf("not live: %s", c.node.State())
		}
		return nil
	})
	timedPut(t, a, "k", "2", a, b, c)
}

// TestAttackLinkMarkDrainTail: the tail drains; the middle's next frame
// (a heartbeat) takes its release, and the middle becomes the tail.
func TestAttackLinkMarkDrainTail(t *testing.T) {
	const lease = time.Second
	a, b, c := startMarkNode(t, "node0000000001", lease), startMarkNode(t, "node0000000002", lease), startMarkNode(t, "node0000000003", lease)
	setViews(a, b, c)
	put(t, a, "k", "0")
	start := time.Now()
	if !c.node.Drain(5 * time.Second) {
		t.Fatalf("drain: %s", c.node.State())
	}
	// The release goes with the acknowledgement of a frame from B, which
	// sends one at least every heartbeat.
	if d := time.Since(start); d > lease/4+time.Second {
		t.Fatalf("drain took %v", d)
	}
	c.stop()
	setViews(a, b)
	start = time.Now()
	put(t, a, "k", "1")
	if d := time.Since(start); d > time.Second {
		t.Fatalf("put after the tail left took %v: %s", d, b.node.State())
	}
}

// TestAttackLinkMarkStress: clients write with short idle spells and read
// at every member (reads of dirty keys wait in steps of their own) while
// nodes join at the tail; no write may wait for a heartbeat.
func TestAttackLinkMarkStress(t *testing.T) {
	chain := []*testNode{startMarkNode(t, "node0000000001", markLease), startMarkNode(t, "node0000000002", markLease)}
	setViews(chain...)
	a := chain[0]
	var mu sync.Mutex
	members := chain
	stop := make(chan struct{})
	errs := make(chan error, 8)
	var wg sync.WaitGroup
	for c := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := dialWire(t, a.server.Addr())
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprintf("k%d", (c+i)%7)
				start := time.Now()
				r, err := w.try(codec.PutRequest(key, []byte(fmt.Sprint(i))))
				if err != nil || r.Opcode != codec.OpPut+1 {
					errs <- fmt.Errorf("client %d put %d: %v %v", c, i, r, err)
					return
				}
				if d := time.Since(start); d > markStall {
					errs <- fmt.Errorf("client %d put %d took %v", c, i, d)
					return
				}
				mu.Lock()
				n := members[i%len(members)]
				mu.Unlock()
				if n.node.Live() {
					rw := dialWire(t, n.server.Addr())
					if _, err := rw.try(codec.GetRequest(key)); err != nil {
						errs <- fmt.Errorf("get at %s: %v", n.name, err)
						return
					}
					rw.conn.Close()
				}
				time.Sleep(time.Duration((c*i)%11) * time.Millisecond)
			}
		}()
	}
	for i := 3; i <= 5; i++ {
		time.Sleep(300 * time.Millisecond)
		n := startMarkNode(t, fmt.Sprintf("node%010d", i), markLease)
		chain = append(chain, n)
		setViews(chain...)
		mu.Lock()
		members = chain
		mu.Unlock()
	}
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
