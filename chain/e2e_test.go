package chain_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chaintable/chaintable/chain"
	"github.com/chaintable/chaintable/cli"
	"github.com/chaintable/chaintable/codec"
	"github.com/chaintable/chaintable/internal/cluster"
	"github.com/chaintable/chaintable/zkwatch"
)

// End-to-end tests: real table_server processes and a real ZooKeeper (see
// internal/cluster), clients under load through the chain while nodes are
// killed, frozen, restarted and terminated. Each test checks the clients'
// history for linearizability, that no acknowledged write was lost, and
// that the clients were not kept waiting long.

// Timing of a scenario.
const (
	// warmup is how long the load runs before the fault.
	warmup = 2 * time.Second
	// afterwards is how long it goes on once the chain has recovered.
	afterwards = 4 * time.Second
	// recoverTimeout bounds each wait for the chain to recover: the
	// session timeout, a ZooKeeper tick and the clients' backoff take
	// about two seconds.
	recoverTimeout = 15 * time.Second
	// maxGap bounds the longest time without a successful operation.
	maxGap = 10 * time.Second
	// minAfter is how many writes, and how many reads, must succeed
	// after the recovery.
	minAfter = 10
)

// A scenario is one fault injected into a chain of three nodes under load.
type scenario struct {
	name string
	// inject injects the fault and returns once the chain serves again,
	// with every node it will have.
	inject func(t *testing.T, c *cluster.Cluster, l *cluster.Load)
	// verify, if set, runs once the load has stopped and the final reads
	// were checked; final holds the keys present at the tail.
	verify func(t *testing.T, c *cluster.Cluster, final map[string]string)
}

// TestE2EFaults runs each scenario in turn, each on a chain of its own:
// nodes killed, restarted, frozen past their session timeout, and cut off
// from ZooKeeper alone, in every position.
func TestE2EFaults(t *testing.T) {
	head := func(c *cluster.Cluster) *cluster.Node { return c.At(0) }
	middle := func(c *cluster.Cluster) *cluster.Node { return c.At(1) }
	tail := func(c *cluster.Cluster) *cluster.Node { return c.At(2) }
	scenarios := []scenario{
		{name: "KillHead", inject: kill(head)},
		{name: "KillMiddle", inject: kill(middle)},
		{name: "KillTail", inject: kill(tail)},
		{name: "AddBack", inject: addBack(middle), verify: sameTables},
		{name: "RestartTailAtOnce", inject: restartAtOnce(tail), verify: sameTables},
		{name: "FreezeTail", inject: freeze(tail)},
		{name: "FreezeHead", inject: freeze(head)},
		{name: "PartitionTail", inject: partition(tail)},
		{name: "PartitionHead", inject: partition(head)},
		// No scenario restarts ZooKeeper: the clients in this process
		// would reconnect with watches set, which trips go-zookeeper's
		// unsynchronised lastZxid (recvLoop against sendSetWatches,
		// go-zookeeper/zk#35) under the race detector.
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) { run(t, sc) })
	}
}

// run starts a chain of three, puts it under load, injects the fault and
// checks the outcome.
func run(t *testing.T, sc scenario) {
	start := time.Now()
	c := cluster.Start(t, cluster.Options{Nodes: 3})
	c.WaitTailServes(recoverTimeout)
	l := cluster.StartLoad(t, c.ZKAddr(), cluster.LoadOptions{})
	h := l.History()
	time.Sleep(warmup)

	fault := h.Now()
	sc.inject(t, c, l)
	recovered := h.Now()
	t.Logf("recovered %v after the fault", time.Duration(recovered-fault).Round(time.Millisecond))
	time.Sleep(afterwards)
	l.Stop()

	report(t, l, fault, recovered)
	c.WaitTailServes(recoverTimeout)
	final := l.ReadFinal()
	cluster.CheckFinal(t, h, final)
	cluster.CheckLinearizable(t, h, c.Dir())
	if sc.verify != nil {
		sc.verify(t, c, final)
	}
	t.Logf("scenario took %v", time.Since(start).Round(time.Millisecond))
}

// report logs what the load did and checks that the clients were served
// promptly throughout and after the recovery.
func report(t *testing.T, l *cluster.Load, fault, recovered int64) {
	t.Helper()
	h := l.History()
	s := l.Stats()
	after := h.Stats(recovered, h.Now())
	t.Logf("%d operations: %d ok (%d writes, %d reads), %d indefinite, %d waited; after recovery %d writes, %d reads",
		s.Ops, s.OK, s.Writes, s.Reads, s.Indefinite, l.Waits(), after.Writes, after.Reads)
	t.Logf("longest time without a successful operation: %v, from %v after the fault",
		s.LongestGap.Round(time.Millisecond), s.GapStart.Sub(h.Time(fault)).Round(time.Millisecond))
	for _, op := range h.Ops() {
		if op.Err != nil && !op.Probe {
			t.Logf("indefinite: client %d %v %q: %v", op.Client, op.Input.Kind, op.Input.Key, op.Err)
		}
	}
	if s.LongestGap >= maxGap {
		t.Errorf("clients went %v without a successful operation, want less than %v", s.LongestGap, maxGap)
	}
	if after.Writes < minAfter || after.Reads < minAfter {
		t.Errorf("after the recovery %d writes and %d reads succeeded, want at least %d of each",
			after.Writes, after.Reads, minAfter)
	}
}

// kill kills the node in role with SIGKILL.
func kill(role func(*cluster.Cluster) *cluster.Node) func(*testing.T, *cluster.Cluster, *cluster.Load) {
	return func(t *testing.T, c *cluster.Cluster, _ *cluster.Load) {
		n := role(c)
		t.Logf("killing %v", n)
		n.Kill()
		c.WaitGone(n, recoverTimeout)
		c.WaitTailServes(recoverTimeout)
	}
}

// addBack kills the node in role, waits until the chain serves without it
// and starts it again: it must join as the tail, catch up and serve.
func addBack(role func(*cluster.Cluster) *cluster.Node) func(*testing.T, *cluster.Cluster, *cluster.Load) {
	return func(t *testing.T, c *cluster.Cluster, _ *cluster.Load) {
		n := role(c)
		t.Logf("killing %v", n)
		n.Kill()
		c.WaitGone(n, recoverTimeout)
		c.WaitTailServes(recoverTimeout)
		t.Logf("restarting %v", n)
		n.Restart()
		waitServingTail(t, c, n, -1)
	}
}

// restartAtOnce kills the node in role and restarts it on the same port
// straight away, while its old registration still stands in the chain.
func restartAtOnce(role func(*cluster.Cluster) *cluster.Node) func(*testing.T, *cluster.Cluster, *cluster.Load) {
	return func(t *testing.T, c *cluster.Cluster, _ *cluster.Load) {
		n := role(c)
		old, _ := n.Member()
		t.Logf("killing and restarting %v", n)
		n.Restart()
		c.WaitView(func(v zkwatch.View) bool { return v.Index(old.Name) < 0 }, recoverTimeout)
		waitServingTail(t, c, n, old.Seq)
	}
}

// freeze freezes the node in role with SIGSTOP for twice its session
// timeout, then resumes it with requests waiting in its socket: it must
// answer them without stale data and without taking writes, since it lost
// its place, and then rejoin as the new tail.
func freeze(role func(*cluster.Cluster) *cluster.Node) func(*testing.T, *cluster.Cluster, *cluster.Load) {
	return func(t *testing.T, c *cluster.Cluster, l *cluster.Load) {
		n := role(c)
		old, _ := n.Member()
		t.Logf("freezing %v (%s)", n, old.Name)
		n.Stop()
		frozen := time.Now()
		c.WaitView(func(v zkwatch.View) bool { return v.Index(old.Name) < 0 }, recoverTimeout)
		c.WaitTailServes(recoverTimeout)
		time.Sleep(time.Until(frozen.Add(2 * c.SessionTimeout())))

		p := l.Probe(n.Addr)
		probe(p, n, l.Keys(), 0)
		time.Sleep(200 * time.Millisecond) // let the probe's requests reach the socket
		t.Logf("resuming %v after %v", n, time.Since(frozen).Round(time.Millisecond))
		n.Cont()
		for _, op := range p.Wait() {
			t.Logf("probe: %s", l.History().Describe(op))
		}
		waitServingTail(t, c, n, old.Seq)
	}
}

// probe sends p a read of every key, where stale data would show, and as
// many writes, each of a key of its own: one the clients do not write, so
// that it must be in the chain at the end if it was acknowledged (and
// porcupine need not order writes whose outcome is unknown).
func probe(p *cluster.Probe, n *cluster.Node, keys []string, round int) {
	for i, key := range keys {
		p.Send(cluster.Input{Kind: cluster.Get, Key: key})
		p.Send(cluster.Input{Kind: cluster.Put, Key: fmt.Sprintf("probe%d-%d-%d", n.ID, round, i), Value: "v"})
	}
}

// partition cuts the node in role off from ZooKeeper, and only from it, for
// twice its session timeout, probing it all along: once the others drop
// it, it must neither serve stale reads nor acknowledge writes the chain
// does not have. Reconnected, it must rejoin as the new tail.
func partition(role func(*cluster.Cluster) *cluster.Node) func(*testing.T, *cluster.Cluster, *cluster.Load) {
	return func(t *testing.T, c *cluster.Cluster, l *cluster.Load) {
		n := role(c)
		old, _ := n.Member()
		t.Logf("cutting %v (%s) off from ZooKeeper", n, old.Name)
		p := l.Probe(n.Addr)
		n.CutZK()
		cut := time.Now()
		for round := 0; time.Since(cut) < 2*c.SessionTimeout(); round++ {
			probe(p, n, l.Keys(), round)
			time.Sleep(100 * time.Millisecond)
		}
		c.WaitView(func(v zkwatch.View) bool { return v.Index(old.Name) < 0 }, recoverTimeout)
		c.WaitTailServes(recoverTimeout)
		t.Logf("reconnecting %v after %v", n, time.Since(cut).Round(time.Millisecond))
		n.HealZK()
		ops := p.Wait()
		outcomes := make(map[string]int)
		for _, op := range ops {
			outcomes[outcome(op)]++
		}
		t.Logf("probe: %d requests: %v", len(ops), outcomes)
		waitServingTail(t, c, n, old.Seq)
	}
}

// outcome names how op ended, for summaries.
func outcome(op cluster.Op) string {
	var se *cli.ServerError
	switch {
	case op.Err == nil && op.Output.NotFound:
		return op.Input.Kind.String() + " not found"
	case op.Err == nil:
		return op.Input.Kind.String() + " ok"
	case errors.As(op.Err, &se):
		return op.Input.Kind.String() + " " + strings.ToLower(strings.TrimPrefix(se.Status.String(), "STATUS_"))
	}
	return op.Input.Kind.String() + " failed"
}

// waitServingTail waits until n, registered anew (with a sequence number
// above after), is the tail and serves reads.
func waitServingTail(t *testing.T, c *cluster.Cluster, n *cluster.Node, after int64) {
	t.Helper()
	c.WaitView(func(v zkwatch.View) bool {
		m, ok := v.Tail()
		return ok && m.Addr == n.Addr && m.Seq > after
	}, recoverTimeout)
	if got := c.WaitTailServes(recoverTimeout); got != n {
		t.Fatalf("the chain's tail is %v, want %v", got, n)
	}
	t.Logf("%v serves as the tail", n)
}

// sameTables checks that the table at the tail holds exactly the final
// reads, then removes the tail, again and again until one node is left,
// checking that each node that becomes the tail has the same table.
func sameTables(t *testing.T, c *cluster.Cluster, final map[string]string) {
	cl := c.Client()
	for {
		tail := c.WaitTailServes(recoverTimeout)
		got := table(t, cl)
		if !maps.Equal(got, final) {
			t.Errorf("table at %v is %v, want %v (the final reads)", tail, got, final)
		} else {
			t.Logf("table at %v: %d entries, as read at the end", tail, len(got))
		}
		if len(c.View().Members) == 1 {
			return
		}
		tail.Kill()
		c.WaitGone(tail, recoverTimeout)
	}
}

// table reads the whole table through cl.
func table(t *testing.T, cl *cli.Client) map[string]string {
	t.Helper()
	entries, err := cl.Table(context.Background())
	if err != nil {
		t.Fatalf("gettable: %v", err)
	}
	m := make(map[string]string)
	for _, e := range entries {
		m[e.Key] = string(e.Value)
	}
	return m
}

// TestE2ELeave terminates the head and then the tail of a chain under load
// with SIGTERM, and adds a node: a node that leaves gracefully, or joins,
// must cost the clients no error at all.
func TestE2ELeave(t *testing.T) {
	start := time.Now()
	c := cluster.Start(t, cluster.Options{Nodes: 3})
	c.WaitTailServes(recoverTimeout)
	l := cluster.StartLoad(t, c.ZKAddr(), cluster.LoadOptions{})
	h := l.History()
	time.Sleep(warmup)

	fault := h.Now()
	for _, role := range []string{"head", "tail"} {
		n := c.At(0)
		if role == "tail" {
			n = c.At(len(c.View().Members) - 1)
		}
		t.Logf("terminating %v, the %s", n, role)
		if code := n.Term(); code != 0 {
			t.Errorf("%v exited with status %d after SIGTERM, want 0", n, code)
		}
		c.WaitGone(n, recoverTimeout)
		c.WaitTailServes(recoverTimeout)
		time.Sleep(time.Second)
	}
	n := c.Add()
	t.Logf("added %v", n)
	waitServingTail(t, c, n, -1)
	recovered := h.Now()
	time.Sleep(afterwards)
	l.Stop()

	report(t, l, fault, recovered)
	if s := l.Stats(); s.Indefinite > 0 {
		t.Errorf("%d operations failed while nodes left and joined gracefully, want none", s.Indefinite)
	}
	c.WaitTailServes(recoverTimeout)
	final := l.ReadFinal()
	cluster.CheckFinal(t, h, final)
	cluster.CheckLinearizable(t, h, c.Dir())
	if v := c.View(); len(v.Members) != 2 {
		t.Errorf("chain has %d members, want 2", len(v.Members))
	}
	if got := table(t, c.Client()); !maps.Equal(got, final) {
		t.Errorf("table at the tail is %v, want %v", got, final)
	}
	t.Logf("test took %v", time.Since(start).Round(time.Millisecond))
}

// TestE2EHoldersGone kills the only node of a chain after a write. The
// holders record in ZooKeeper still lists it, so a new node must not start
// the chain empty, which would lose the write should the killed node's
// table come back; it waits, and says why in its log, until a node started
// with -force-start discards the record.
func TestE2EHoldersGone(t *testing.T) {
	ctx := context.Background()
	c := cluster.Start(t, cluster.Options{Nodes: 1})
	c.WaitTailServes(recoverTimeout)
	if err := c.Client().Put(ctx, "k", []byte("v")); err != nil {
		t.Fatalf("put on a chain of one: %v", err)
	}
	old := c.At(0)
	old.Kill()
	c.WaitGone(old, recoverTimeout)

	fresh := c.Add()
	quick := c.ClientWith(cli.Options{RetryFor: 3 * time.Second, AttemptTimeout: 500 * time.Millisecond})
	if err := quick.Put(ctx, "k2", []byte("v2")); err == nil {
		t.Fatalf("%v, new, started the chain empty while the holders record lists the killed %v", fresh, old)
	}
	if log := fresh.LogTail(100); !strings.Contains(log, "waiting for one of them") {
		t.Errorf("%v does not say what it waits for; its log ends:\n%s", fresh, log)
	}

	forced := c.Add("-force-start")
	waitServingTail(t, c, forced, -1)
	cl := c.Client()
	if err := cl.Put(ctx, "k2", []byte("v2")); err != nil {
		t.Fatalf("put after -force-start: %v", err)
	}
	if v, err := cl.Get(ctx, "k"); err == nil {
		t.Errorf("k = %q after -force-start, want it gone with the killed node", v)
	}
	if head, _ := c.View().Head(); head.Addr != fresh.Addr {
		t.Errorf("head is %s, want %v", head.Addr, fresh)
	}
}

// TestMachineOutOfViewAcksNothing is the smallest reproduction of the lost
// writes that the FreezeHead and PartitionHead scenarios find: a head whose
// ZooKeeper session expired learns, from its new session, a view without
// itself (before it registers again and rejoins), and takes that as having
// no successor, so it commits, and acknowledges to clients, writes that no
// other node has.
func TestMachineOutOfViewAcksNothing(t *testing.T) {
	now := time.Now()
	m := chain.NewMachine("a", mapStore{}, 2*time.Second)
	m.SetSessionLease(now.Add(time.Hour))
	m.Tick(now)
	m.SetView([]chain.Member{{Name: "a", Addr: "127.0.0.1:1"}, {Name: "b", Addr: "127.0.0.1:2"}})
	w := new(waiter)
	seq, _, err := m.ClientWrite(&codec.WriteT{Op: codec.OpPut, Key: "k", Value: []byte("v")})
	if err != nil {
		t.Fatalf("ClientWrite at the head: %v", err)
	}
	m.Await(seq, w)
	if done, _, _ := m.TakeDone(); slices.Contains(done, chain.Waiter(w)) {
		t.Fatal("write committed before the successor acknowledged it")
	}
	// ZooKeeper expired a's session and dropped it: b is the chain now,
	// and never got the write.
	m.SetView([]chain.Member{{Name: "b", Addr: "127.0.0.1:2"}})
	m.Tick(now.Add(10 * time.Second))
	if done, pos, _ := m.TakeDone(); slices.Contains(done, chain.Waiter(w)) {
		t.Errorf("a write only this node applied was committed (up to seq %d) once the node was dropped from the chain: "+
			"its client is told it succeeded, but the chain does not have it (%s)", pos.Committed, m)
	}
}

// TestMachineBackInViewServes reproduces the stall that PartitionHead ran
// into once TestMachineOutOfViewAcksNothing passed: a node that rejoined
// under a new name may first see a view without itself (the watch read the
// chain before its new member node was there), then one with itself at the
// tail. It must then act as the tail once its predecessor has caught it up;
// it kept its successor state "unknown" instead, answering NOT_TAIL to
// every read and never acknowledging a write, so the whole chain stalled.
func TestMachineBackInViewServes(t *testing.T) {
	now := time.Now()
	m := chain.NewMachine("x", mapStore{}, 2*time.Second)
	m.SetSessionLease(now.Add(time.Hour))
	m.Tick(now)
	b, c, x := chain.Member{Name: "b", Addr: "127.0.0.1:2"}, chain.Member{Name: "c", Addr: "127.0.0.1:3"}, chain.Member{Name: "x", Addr: "127.0.0.1:1"}
	m.SetView([]chain.Member{b, c})
	m.SetView([]chain.Member{b, c, x})
	if _, err := m.Hello("c", "x"); err != nil {
		t.Fatalf("Hello from the predecessor: %v", err)
	}
	if err := m.Snapshot("c", "x", true, nil, nil, &chain.SnapshotEnd{}); err != nil {
		t.Fatalf("Snapshot from the predecessor: %v", err)
	}
	if _, _, err := m.Replicate("c", "x", nil, true, codec.Grant{}); err != nil {
		t.Fatalf("Replicate with the live marker: %v", err)
	}
	if err := m.CanRead(now); err != nil {
		t.Errorf("x is the tail, caught up and handed the tail role, yet CanRead = %v (%s)", err, m)
	}
}

// mapStore is a table for a bare Machine.
type mapStore map[string]string

func (s mapStore) Apply(op codec.MessageT_Opcode, key string, value []byte) bool {
	_, found := s[key]
	if op == codec.OpPut {
		s[key] = string(value)
	} else {
		delete(s, key)
	}
	return found
}

func (s mapStore) Reset() { clear(s) }

// waiter is a chain.Waiter that the test finds in TakeDone's lists (it is
// not zero-sized, so that pointers to two of them differ).
type waiter struct{ calls int }

func (w *waiter) Done(chain.Position, error) { w.calls++ }
