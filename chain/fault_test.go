package chain_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/chaintable/chaintable/cli"
	"github.com/chaintable/chaintable/internal/cluster"
	"github.com/chaintable/chaintable/internal/zktest"
	"github.com/chaintable/chaintable/zkwatch"
)

// The fault suite ("nemesis"). TestFaultSchedule runs one chain of three
// real table_server processes under a continuous mixed load through a
// schedule of faults injected one after the other: SIGKILL of the head, a
// middle node and the tail, each added back under load; SIGSTOP of the
// tail past its session timeout; partitions between two chain nodes,
// reset and silent, shorter and longer than the session timeout; the head,
// then the whole chain, cut off from ZooKeeper past the session timeout; a
// full ZooKeeper restart; a rolling restart by SIGTERM.
// TestFaultZKEnsemble runs the chain on a ZooKeeper ensemble of three,
// whose members are killed and restarted one at a time, and
// TestFaultStaleNodeBackFirst combines a stale node with the whole chain
// losing its place; TestFaultDurable (durable_fault_test.go) kills nodes
// that keep data dirs, and the whole chain at once.
// Every run checks the clients' history with porcupine, fault by fault,
// checks that no acknowledged write was lost and that every replica ends
// with the same table, and prints a report (see cluster.Report);
// CHAINTABLE_FAULT_REPORT=path writes it to a file as well.
//
// By default the schedule runs once (about a minute):
//
//	go test -race -run TestFault -v ./chain/
//
// The soak runs the schedule round after round, in a random order with
// random targets and timings, for -soak.duration (15 minutes unless set),
// and the ensemble's faults five times; go test's -timeout must leave it
// 10 minutes more:
//
//	go test -timeout 45m -run TestFault -v ./chain/ -soak
//	CHAINTABLE_SOAK=1 CHAINTABLE_SOAK_DURATION=5m go test -timeout 30m -run TestFault -v ./chain/
//	make fault SOAK=1 SOAK_DURATION=20m
//
// -fault.seed replays a soak's choices (and the load's), which the test
// logs.

var (
	faultSoakFlag     = flag.Bool("soak", false, "run the fault tests' long soak (also CHAINTABLE_SOAK=1)")
	faultSoakDuration = flag.Duration("soak.duration", 15*time.Minute, "how long the soak injects faults (also CHAINTABLE_SOAK_DURATION)")
	faultSeed         = flag.Uint64("fault.seed", 0, "seed of the soak's choices and of the load (0: from the clock)")
)

// Environment variables that do what the flags do, for make and CI.
const (
	faultSoakEnv         = "CHAINTABLE_SOAK"
	faultSoakDurationEnv = "CHAINTABLE_SOAK_DURATION"
)

// Timing and bounds of the fault suite.
const (
	// faultSettle is how long the load runs on a whole chain after each
	// recovery, before the next fault.
	faultSettle = time.Second
	// faultRecover bounds each wait for the chain to recover from a fault.
	faultRecover = 20 * time.Second
	// faultMaxGap bounds the longest time, in any phase, during which no
	// client operation succeeded.
	faultMaxGap = 10 * time.Second
	// faultZKOutage is how long ZooKeeper stays down in a full restart, and a
	// member of the ensemble stays down.
	faultZKOutage = 3 * time.Second
	// faultZKOutageMaxGap bounds how much longer than the outage less the
	// session timeout the chain goes without a successful read, and
	// without a successful write, while ZooKeeper is down: it serves for
	// as long as the head's session lease lasts, then waits for ZooKeeper
	// and goes on at once when it is back.
	faultZKOutageMaxGap = time.Second
	// faultSoakSlack is how much longer than its fault injection a soak
	// may take: the fault under way, the final reads and checks.
	faultSoakSlack = 10 * time.Minute
)

// faultSoaking reports whether the soak was asked for, and for how long.
func faultSoaking(t *testing.T) (bool, time.Duration) {
	on := *faultSoakFlag || os.Getenv(faultSoakEnv) == "1"
	d := *faultSoakDuration
	if s := os.Getenv(faultSoakDurationEnv); s != "" {
		var err error
		if d, err = time.ParseDuration(s); err != nil || d <= 0 {
			t.Fatalf("%s=%q is not a positive duration", faultSoakDurationEnv, s)
		}
	}
	return on, d
}

// faultSeedOf returns the seed of a run, from -fault.seed or the clock.
func faultSeedOf(t *testing.T) uint64 {
	s := *faultSeed
	if s == 0 {
		s = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (rerun the same choices with -fault.seed %d)", s, s)
	return s
}

// nemesis injects faults into a chain under load, one phase each.
type nemesis struct {
	t   *testing.T
	c   *cluster.Cluster
	l   *cluster.Load
	rec *cluster.Recorder
	rng *rand.Rand
	// checks run on the report's rows once the run is over, by phase.
	checks map[*cluster.Phase]func(t *testing.T, row cluster.Row)
}

// A nemesisFault is one kind of fault. inject injects it in the phase p
// and returns once the chain is whole again (three members, the tail
// serving), after calling p.Recovered; check, if set, judges the phase's
// row of the report.
type nemesisFault struct {
	name   string
	inject func(nm *nemesis, p *cluster.Phase)
	check  func(t *testing.T, row cluster.Row)
}

// startNemesis starts a chain of three with proxies in front of the nodes,
// and a load on it.
func startNemesis(t *testing.T, opts cluster.Options, seed uint64) *nemesis {
	opts.Nodes, opts.NodeProxies = 3, true
	c := cluster.Start(t, opts)
	c.WaitTailServes(faultRecover)
	l := cluster.StartLoad(t, c.ZKAddr(), cluster.LoadOptions{Seed: seed})
	return &nemesis{t: t, c: c, l: l, rec: cluster.NewRecorder(l), rng: rand.New(rand.NewPCG(seed, 1)),
		checks: make(map[*cluster.Phase]func(*testing.T, cluster.Row))}
}

// run injects f in a phase of its own, lets the load go on a little on the
// whole chain, and reads every key written so far.
func (nm *nemesis) run(f nemesisFault) {
	t := nm.t
	p := nm.rec.Begin(f.name)
	t.Logf("fault %d: %s", len(nm.rec.Phases()), f.name)
	f.inject(nm, p)
	time.Sleep(faultSettle)
	if failed := nm.l.Audit(); failed > 0 {
		t.Errorf("%s: %d reads of the keys written so far failed after the recovery", f.name, failed)
	}
	s := p.Stats()
	t.Logf("%s: recovered in %v; %d operations, %d errors, longest unavailability %v",
		f.name, p.Recovery.Round(time.Millisecond), s.Ops, s.Indefinite, s.LongestGap.Round(time.Millisecond))
	if p.Recovery == 0 && f.name != faultBaseline().name {
		t.Errorf("%s: the fault did not say when the chain recovered", f.name)
	}
	if f.check != nil {
		nm.checks[p] = f.check
	}
}

// finish stops the load, reads the final state, checks the whole run,
// publishes the report, and checks that every replica holds the same
// table.
func (nm *nemesis) finish(header ...string) *cluster.Report {
	t, c, l := nm.t, nm.c, nm.l
	nm.rec.End()
	l.Stop()
	c.WaitTailServes(faultRecover)
	final := l.ReadFinal()
	rep := nm.rec.Report(t, final, c.Dir())
	rep.Header = append([]string{
		fmt.Sprintf("chain of 3 table_server processes, session timeout %v, %s", c.SessionTimeout(), faultZKDescription(c)),
	}, header...)
	rep.Publish(t)
	for i, p := range nm.rec.Phases() {
		row := rep.Rows[i]
		if row.LongestGap >= faultMaxGap {
			t.Errorf("%s: clients went %v without a successful operation, want less than %v", row.Name, row.LongestGap, faultMaxGap)
		}
		if check := nm.checks[p]; check != nil {
			check(t, row)
		}
	}
	if rep.Total.Lost > 0 || rep.Total.Linearizable != porcupine.Ok {
		t.Errorf("run failed its checks: %s", rep.Summary())
	}
	nemesisSameTables(t, c, final)
	return rep
}

func faultZKDescription(c *cluster.Cluster) string {
	if n := len(c.ZKServers()); n > 1 {
		return fmt.Sprintf("ZooKeeper ensemble of %d", n)
	}
	return "standalone ZooKeeper"
}

// TestFaultSchedule runs the nemesis schedule on one chain under load:
// once, or as a soak (see above).
func TestFaultSchedule(t *testing.T) {
	soak, soakFor := faultSoaking(t)
	if deadline, ok := t.Deadline(); ok && soak && time.Until(deadline) < soakFor+faultSoakSlack {
		t.Fatalf("the soak injects faults for %v and then checks the run, but go test's -timeout ends it in %v: run it with -timeout %v or more (make fault SOAK=1 does)",
			soakFor, time.Until(deadline).Round(time.Second), (soakFor + 2*faultSoakSlack).Round(time.Minute))
	}
	s := faultSeedOf(t)
	nm := startNemesis(t, cluster.Options{}, s)
	st := nm.c.SessionTimeout()
	short, long := st/2, 2*st

	nm.run(faultBaseline())
	if !soak {
		for _, f := range []nemesisFault{
			faultKillAndAddBack(0),
			faultKillAndAddBack(1),
			faultKillAndAddBack(2),
			faultFreeze(2),
			faultPartition(1, cluster.Reset, short),
			faultPartition(1, cluster.Silent, long),
			faultPartition(2, cluster.Silent, short),
			faultPartition(2, cluster.Reset, long),
			faultCutZK(0),
			faultCutZK(1, 2),
			faultCutAllZK(),
			faultRestartZK(),
			faultRollingRestart(),
		} {
			nm.run(f)
		}
		nm.finish("profile: short (one pass of the schedule)", fmt.Sprintf("seed %d", s))
		return
	}

	// The soak: rounds of every fault, in a random order, on random
	// targets, until soakFor has passed.
	deadline := time.Now().Add(soakFor)
	round := 0
	for ; time.Now().Before(deadline); round++ {
		faults := faultSoakRound(nm.rng)
		nm.rng.Shuffle(len(faults), func(i, j int) { faults[i], faults[j] = faults[j], faults[i] })
		for _, f := range faults {
			if !time.Now().Before(deadline) {
				break
			}
			nm.run(f)
			if t.Failed() {
				t.Logf("stopping the soak at the first failure")
				deadline = time.Now()
			}
		}
	}
	nm.finish(fmt.Sprintf("profile: soak, %d rounds in %v", round, soakFor), fmt.Sprintf("seed %d", s))
}

// faultSoakRound returns every fault of the schedule once, on random targets
// and with random timing.
func faultSoakRound(rng *rand.Rand) []nemesisFault {
	pos := func() int { return rng.IntN(3) }
	mode := func() cluster.PartitionMode { return cluster.PartitionMode(rng.IntN(2)) }
	hold := func() float64 { return []float64{0.5, 2}[rng.IntN(2)] }
	return []nemesisFault{
		faultKillAndAddBack(pos()),
		faultRestartAtOnce(pos()),
		faultFreeze(pos()),
		faultPartitionFor(pos(), mode(), hold()),
		faultPartitionFor(1+rng.IntN(2), mode(), hold()),
		faultCutZK(pos()),
		faultCutZK(faultSubset(rng)...),
		faultCutAllZK(),
		faultRestartZK(),
		faultRollingRestart(),
	}
}

// faultSubset returns one or two positions of a chain of three, at
// random, in chain order.
func faultSubset(rng *rand.Rand) []int {
	first := rng.IntN(3)
	if rng.IntN(2) == 0 || first == 2 {
		return []int{first}
	}
	return []int{first, first + 1 + rng.IntN(2-first)}
}

// faultBaseline is two seconds of load without a fault: the reference.
func faultBaseline() nemesisFault {
	return nemesisFault{name: "baseline (no fault)", inject: func(*nemesis, *cluster.Phase) { time.Sleep(2 * time.Second) },
		check: faultNoErrors}
}

// faultRole names a position in a chain of three.
func faultRole(pos int) string { return []string{"head", "middle", "tail"}[pos] }

// faultNoErrors checks that no operation of the phase failed.
func faultNoErrors(t *testing.T, row cluster.Row) {
	t.Helper()
	if row.Indefinite > 0 {
		t.Errorf("%s: %d operations failed without a definite answer, want none", row.Name, row.Indefinite)
	}
}

// faultKillAndAddBack kills the node at pos with SIGKILL, waits until the chain
// serves without it, and starts it again under load: it must join as the
// tail, catch up and serve.
func faultKillAndAddBack(pos int) nemesisFault {
	return nemesisFault{name: "SIGKILL " + faultRole(pos) + ", add it back", inject: func(nm *nemesis, p *cluster.Phase) {
		n := nm.c.At(pos)
		start := time.Now()
		n.Kill()
		failover := faultAddBack(nm, n)
		p.Recovered()
		p.Notef("%v killed; the chain served without it after %v, and with it as the new tail after %v",
			n, failover.Sub(start).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	}}
}

// faultAddBack waits until the chain serves without n, which failed,
// starts n again and waits until it is the new tail. It returns when the
// chain served without n.
func faultAddBack(nm *nemesis, n *cluster.Node) (failover time.Time) {
	nm.c.WaitGone(n, faultRecover)
	nm.c.WaitTailServes(faultRecover)
	failover = time.Now()
	n.Restart()
	nemesisWaitTail(nm.t, nm.c, n, -1)
	return failover
}

// faultRestartAtOnce kills the node at pos and restarts it on the same port at
// once, while its old registration still stands.
func faultRestartAtOnce(pos int) nemesisFault {
	return nemesisFault{name: "SIGKILL " + faultRole(pos) + ", restart it at once", inject: func(nm *nemesis, p *cluster.Phase) {
		c := nm.c
		n := c.At(pos)
		old, _ := n.Member()
		n.Restart()
		c.WaitView(func(v zkwatch.View) bool { return v.Index(old.Name) < 0 }, faultRecover)
		nemesisWaitTail(nm.t, c, n, old.Seq)
		p.Recovered()
		p.Notef("%v restarted", n)
	}}
}

// faultFreeze freezes the node at pos with SIGSTOP for twice its
// session timeout, sends it reads and writes while it is frozen, and
// resumes it with SIGCONT: it lost its place, so it must answer them with
// neither stale data nor writes the chain does not have (porcupine and
// the final reads judge), and rejoin as a new tail.
func faultFreeze(pos int) nemesisFault {
	return nemesisFault{name: "SIGSTOP " + faultRole(pos) + " past its session timeout", inject: func(nm *nemesis, p *cluster.Phase) {
		c, l := nm.c, nm.l
		n := c.At(pos)
		old, _ := n.Member()
		n.Stop()
		frozen := time.Now()
		c.WaitView(func(v zkwatch.View) bool { return v.Index(old.Name) < 0 }, faultRecover)
		c.WaitTailServes(faultRecover)
		dropped := time.Since(frozen)
		time.Sleep(time.Until(frozen.Add(2 * c.SessionTimeout())))
		pr := l.Probe(n.Addr)
		nemesisProbe(pr, n, l.Keys(), len(nm.rec.Phases()))
		// Nothing shows when requests reach a frozen process's socket:
		// give them a moment.
		time.Sleep(200 * time.Millisecond)
		n.Cont()
		ops := pr.Wait()
		nemesisWaitTail(nm.t, c, n, old.Seq)
		p.Recovered()
		p.Notef("%v frozen for %v (dropped from the chain after %v); answers to requests sent while frozen: %s",
			n, 2*c.SessionTimeout(), dropped.Round(time.Millisecond), faultSummarize(ops))
	}}
}

// faultPartition cuts the links into the node at pos, from its predecessor
// and from clients, for hold, then heals them. The node's ZooKeeper
// session lives on, so the chain keeps its membership and must simply go
// on once healed, having lost nothing.
func faultPartition(pos int, mode cluster.PartitionMode, hold time.Duration) nemesisFault {
	name := fmt.Sprintf("partition into %s (%s, %v)", faultRole(pos), mode, hold)
	return nemesisFault{name: name, inject: func(nm *nemesis, p *cluster.Phase) {
		c := nm.c
		n := c.At(pos)
		before := c.View()
		n.Partition(mode)
		time.Sleep(hold)
		n.Heal()
		healed := time.Now()
		c.WaitView(func(v zkwatch.View) bool { return len(v.Members) == 3 }, faultRecover)
		c.WaitTailServes(faultRecover)
		p.Recovered()
		after := c.View()
		same := faultSameMembers(before, after)
		p.Notef("%v cut off (%s) for %v; served again %v after healing; membership %s",
			n, mode, hold, time.Since(healed).Round(time.Millisecond), map[bool]string{true: "unchanged", false: "changed"}[same])
	}}
}

// faultPartitionFor is faultPartition for factor times the session timeout,
// which the cluster decides.
func faultPartitionFor(pos int, mode cluster.PartitionMode, factor float64) nemesisFault {
	f := faultPartition(pos, mode, 0)
	f.name = fmt.Sprintf("partition into %s (%s, %v× session timeout)", faultRole(pos), mode, factor)
	f.inject = func(nm *nemesis, p *cluster.Phase) {
		faultPartition(pos, mode, time.Duration(factor*float64(nm.c.SessionTimeout()))).inject(nm, p)
	}
	return f
}

func faultSameMembers(a, b zkwatch.View) bool {
	if len(a.Members) != len(b.Members) {
		return false
	}
	for i := range a.Members {
		if a.Members[i].Name != b.Members[i].Name {
			return false
		}
	}
	return true
}

// faultCutZK cuts the nodes at positions off from ZooKeeper, and only
// them, while their links to the rest of the chain and to each other stay
// up, and probes every one of them with reads and writes meanwhile: until
// ZooKeeper drops them, and for twice the session timeout after. Once
// dropped, a node must neither serve stale reads nor acknowledge writes
// the chain does not have, even while the nodes ahead of it, dropped too,
// still talk to it (the middle and the tail cut off together, say).
// Reconnected, they must rejoin as new tails.
func faultCutZK(positions ...int) nemesisFault {
	var roles []string
	for _, pos := range positions {
		roles = append(roles, faultRole(pos))
	}
	return nemesisFault{name: "cut " + strings.Join(roles, " and ") + " off from ZooKeeper", inject: func(nm *nemesis, p *cluster.Phase) {
		c, l := nm.c, nm.l
		var nodes []*cluster.Node
		var olds []zkwatch.Member
		var probes []*cluster.Probe
		for _, pos := range positions {
			n := c.At(pos)
			old, _ := n.Member()
			nodes, olds = append(nodes, n), append(olds, old)
			probes = append(probes, l.Probe(n.Addr))
		}
		for _, n := range nodes {
			n.CutZK()
		}
		cut := time.Now()
		dropped := func(v zkwatch.View) bool {
			for _, old := range olds {
				if v.Index(old.Name) >= 0 {
					return false
				}
			}
			return true
		}
		var droppedAt time.Time
		for round := 0; droppedAt.IsZero() || time.Since(droppedAt) < 2*c.SessionTimeout(); round++ {
			if time.Since(cut) > faultRecover {
				nm.t.Fatalf("%s: ZooKeeper still lists the nodes cut off %v ago: %v", p.Name, faultRecover, c.View())
			}
			for i, n := range nodes {
				nemesisProbe(probes[i], n, l.Keys(), 1000*len(nm.rec.Phases())+round)
			}
			if droppedAt.IsZero() && dropped(c.View()) {
				droppedAt = time.Now()
			}
			time.Sleep(100 * time.Millisecond)
		}
		c.WaitTailServes(faultRecover)
		for _, n := range nodes {
			n.HealZK()
		}
		var ops []cluster.Op
		for _, pr := range probes {
			ops = append(ops, pr.Wait()...)
		}
		c.WaitView(func(v zkwatch.View) bool {
			if len(v.Members) != 3 {
				return false
			}
			for i, n := range nodes {
				if j := slices.IndexFunc(v.Members, func(m zkwatch.Member) bool { return m.Addr == n.Addr }); j < 0 || v.Members[j].Seq <= olds[i].Seq {
					return false
				}
			}
			return true
		}, faultRecover)
		c.WaitTailServes(faultRecover)
		p.Recovered()
		p.Notef("%s cut off from ZooKeeper for %v (dropped after %v); probe answers: %s", faultJoinNodes(nodes),
			time.Since(cut).Round(time.Millisecond), droppedAt.Sub(cut).Round(time.Millisecond), faultSummarize(ops))
	}}
}

// faultJoinNodes names nodes for a report.
func faultJoinNodes(nodes []*cluster.Node) string {
	var s []string
	for _, n := range nodes {
		s = append(s, n.String())
	}
	return faultJoin(s)
}

// faultRestartZK kills the standalone ZooKeeper server, keeps it down for
// faultZKOutage, and restarts it. The chain must go on serving reads and
// writes for as long as the head's session lease lasts, and keep its
// members: their sessions survive a short outage. Past that lease no node
// may serve (ZooKeeper might have dropped the head).
func faultRestartZK() nemesisFault {
	var outage cluster.Stats
	return nemesisFault{name: "ZooKeeper restart", inject: func(nm *nemesis, p *cluster.Phase) {
		c, h := nm.c, nm.l.History()
		before := c.View()
		zk := c.ZK()
		zk.Stop()
		down := h.Now()
		time.Sleep(faultZKOutage)
		up := h.Now()
		outage = h.Stats(down, up)
		zk.Restart()
		serving := time.Duration(h.Now() - down)
		c.WaitView(func(v zkwatch.View) bool { return len(v.Members) == 3 }, faultRecover)
		c.WaitTailServes(faultRecover)
		p.Recovered()
		same := faultSameMembers(before, c.View())
		p.Notef("ZooKeeper down for %v (serving again after %v); meanwhile %d reads and %d writes succeeded, longest without a read %v, without a write %v; membership %s",
			faultZKOutage, serving.Round(time.Millisecond), outage.Reads, outage.Writes,
			outage.ReadGap.Round(time.Millisecond), outage.WriteGap.Round(time.Millisecond),
			map[bool]string{true: "unchanged (sessions survived)", false: "changed"}[same])
		if !same {
			nm.t.Errorf("membership changed across a %v ZooKeeper outage: %v before, %v after; sessions should survive it", faultZKOutage, before, c.View())
		}
	}, check: func(t *testing.T, row cluster.Row) {
		t.Helper()
		faultNoErrors(t, row)
		maxGap := faultZKOutage - cluster.DefaultSessionTimeout + faultZKOutageMaxGap
		if outage.Reads == 0 || outage.Writes == 0 || outage.ReadGap > maxGap || outage.WriteGap > maxGap {
			t.Errorf("%s: while ZooKeeper was down, %d reads and %d writes succeeded, with at most %v without a read and %v without a write; want both, and gaps under %v",
				row.Name, outage.Reads, outage.Writes, outage.ReadGap, outage.WriteGap, maxGap)
		}
	}}
}

// faultRollingRestart terminates every node with SIGTERM, from the tail to the
// head, each restarted and serving as the tail before the next: a
// graceful leave must cost the clients no error at all, only the wait of
// a tail's leave (its predecessor waits out the read lease it granted).
func faultRollingRestart() nemesisFault {
	return nemesisFault{name: "rolling restart (SIGTERM)", inject: func(nm *nemesis, p *cluster.Phase) {
		c := nm.c
		v := c.View()
		var order []*cluster.Node
		for i := len(v.Members) - 1; i >= 0; i-- {
			order = append(order, c.NodeAt(v.Members[i].Addr))
		}
		var steps []string
		for i, n := range order {
			start := time.Now()
			if code := n.Term(); code != 0 {
				nm.t.Errorf("%v exited with status %d after SIGTERM, want 0", n, code)
			}
			c.WaitGone(n, faultRecover)
			c.WaitTailServes(faultRecover)
			n.Restart()
			nemesisWaitTail(nm.t, c, n, -1)
			steps = append(steps, fmt.Sprintf("%s %v %v", faultRole(len(order)-1-i), n, time.Since(start).Round(time.Millisecond)))
		}
		p.Recovered()
		p.Notef("terminated and restarted in turn: %s", strings.Join(steps, ", "))
	}, check: faultNoErrors}
}

// nemesisProbe sends pr a read of every key, where stale data would show,
// and as many writes, each of a key of its own, which must be in the chain
// at the end if it was acknowledged.
func nemesisProbe(pr *cluster.Probe, n *cluster.Node, keys []string, round int) {
	for i, key := range keys {
		pr.Send(cluster.Input{Kind: cluster.Get, Key: key})
		pr.Send(cluster.Input{Kind: cluster.Put, Key: fmt.Sprintf("nemesis%d-%d-%d", n.ID, round, i), Value: "v"})
	}
}

// faultJoin joins s with commas, or says "no node".
func faultJoin(s []string) string {
	if len(s) == 0 {
		return "no node"
	}
	return strings.Join(s, ", ")
}

// faultSummarize counts the outcomes of probe requests.
func faultSummarize(ops []cluster.Op) string {
	counts := make(map[string]int)
	for _, op := range ops {
		counts[faultOutcome(op)]++
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(counts)) {
		parts = append(parts, fmt.Sprintf("%d %s", counts[k], k))
	}
	return strings.Join(parts, ", ")
}

// faultOutcome names how op ended: ok, not found, the server's status,
// or the client's error.
func faultOutcome(op cluster.Op) string {
	var se *cli.ServerError
	switch {
	case op.Err == nil && op.Output.NotFound:
		return op.Input.Kind.String() + " not found"
	case op.Err == nil:
		return op.Input.Kind.String() + " ok"
	case errors.As(op.Err, &se):
		return op.Input.Kind.String() + " " + strings.ToLower(strings.TrimPrefix(se.Status.String(), "STATUS_"))
	case errors.Is(op.Err, context.DeadlineExceeded):
		return op.Input.Kind.String() + " timed out"
	}
	return fmt.Sprintf("%s failed (%v)", op.Input.Kind, op.Err)
}

// nemesisWaitTail waits until n, registered anew (with a sequence number
// above after), is the tail of a chain of three and serves reads.
func nemesisWaitTail(t *testing.T, c *cluster.Cluster, n *cluster.Node, after int64) {
	t.Helper()
	c.WaitView(func(v zkwatch.View) bool {
		m, ok := v.Tail()
		return ok && m.Addr == n.Addr && m.Seq > after && len(v.Members) == 3
	}, faultRecover)
	if got := c.WaitTailServes(faultRecover); got != n {
		t.Fatalf("the chain's tail is %v, want %v", got, n)
	}
}

// nemesisSameTables checks that the table at the tail holds exactly the
// final reads, then removes the tail, again and again until one node is
// left, checking that each node that becomes the tail has the same table.
func nemesisSameTables(t *testing.T, c *cluster.Cluster, final map[string]string) {
	t.Helper()
	cl := c.Client()
	for {
		tail := c.WaitTailServes(faultRecover)
		entries, err := cl.Table(t.Context())
		if err != nil {
			t.Fatalf("gettable at %v: %v", tail, err)
		}
		got := make(map[string]string)
		for _, e := range entries {
			got[e.Key] = string(e.Value)
		}
		if !maps.Equal(got, final) {
			t.Errorf("table at %v has %d entries, want the %d read at the end; differences: %s", tail, len(got), len(final), faultDiffTables(got, final))
		}
		if len(c.View().Members) == 1 {
			return
		}
		tail.Kill()
		c.WaitGone(tail, faultRecover)
	}
}

// faultDiffTables describes how got differs from want, a few keys at most.
func faultDiffTables(got, want map[string]string) string {
	var diffs []string
	for k, w := range want {
		if g, ok := got[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("%q missing", k))
		} else if g != w {
			diffs = append(diffs, fmt.Sprintf("%q is %q, want %q", k, g, w))
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("%q unexpected", k))
		}
	}
	if len(diffs) > 10 {
		diffs = append(diffs[:10], fmt.Sprintf("and %d more", len(diffs)-10))
	}
	return strings.Join(diffs, ", ")
}

// TestFaultZKEnsemble runs the chain on a ZooKeeper ensemble of three and
// kills its members one at a time under load, each restarted after
// faultZKOutage: the leader, a follower, and a follower again while the chain's
// head is killed, so that the failover happens on a degraded ensemble.
// The chain must serve throughout, keep its members when only ZooKeeper
// suffers, and lose nothing.
func TestFaultZKEnsemble(t *testing.T) {
	soak, _ := faultSoaking(t)
	s := faultSeedOf(t)
	nm := startNemesis(t, cluster.Options{ZKEnsemble: 3}, s)
	nm.run(faultBaseline())
	rounds := 1
	if soak {
		rounds = 5
	}
	for range rounds {
		nm.run(faultKillZKMember("leader", false))
		nm.run(faultKillZKMember("follower", false))
		nm.run(faultKillZKMember("follower", true))
	}
	nm.finish(fmt.Sprintf("profile: %d round(s)", rounds), fmt.Sprintf("seed %d", s))
}

// faultKillZKMember kills the ensemble's member in mode ("leader" or
// "follower") for faultZKOutage and restarts it. With killHead, the chain's head
// is killed too while the member is down, and added back.
func faultKillZKMember(mode string, killHead bool) nemesisFault {
	name := "kill ZooKeeper " + mode
	if killHead {
		name += ", and the chain's head meanwhile"
	}
	return nemesisFault{name: name, inject: func(nm *nemesis, p *cluster.Phase) {
		c := nm.c
		before := c.View()
		// The nodes whose session is on member s.
		sessionsOn := func(s *zktest.Server) []string {
			var nodes []string
			for _, n := range c.Nodes() {
				if n.Running() && slices.Contains(n.ZKServers(), s.Addr()) {
					nodes = append(nodes, n.String())
				}
			}
			return nodes
		}
		leader := c.ZKLeader(faultRecover)
		victim := leader
		if mode != "leader" {
			// The follower with the most of the chain's sessions.
			victim = nil
			for _, s := range c.ZKServers() {
				if s != leader && (victim == nil || len(sessionsOn(s)) > len(sessionsOn(victim))) {
					victim = s
				}
			}
		}
		moved := sessionsOn(victim)
		start := time.Now()
		victim.Stop()
		var head *cluster.Node
		if killHead {
			head = c.At(0)
			head.Kill()
			c.WaitGone(head, faultRecover)
			c.WaitTailServes(faultRecover)
		}
		time.Sleep(time.Until(start.Add(faultZKOutage)))
		victim.Restart()
		if head != nil {
			head.Restart()
			nemesisWaitTail(nm.t, c, head, -1)
		}
		c.WaitView(func(v zkwatch.View) bool { return len(v.Members) == 3 }, faultRecover)
		c.WaitTailServes(faultRecover)
		p.Recovered()
		same := faultSameMembers(before, c.View())
		p.Notef("ZooKeeper %s %s down for %v, with the sessions of %s; membership %s", mode, victim.Addr(),
			time.Since(start).Round(time.Millisecond), faultJoin(moved), map[bool]string{true: "unchanged", false: "changed"}[same])
		if !killHead && !same {
			nm.t.Errorf("membership changed while only a ZooKeeper member was down: %v before, %v after", before, c.View())
		}
	}, check: faultNoErrors}
}

// faultCutAllZK cuts every node off from ZooKeeper, which stays up, for
// twice the session timeout, then reconnects them: ZooKeeper expires every
// session, so the whole chain loses its place at once.
func faultCutAllZK() nemesisFault {
	return nemesisFault{name: "cut every node off from ZooKeeper", inject: func(nm *nemesis, p *cluster.Phase) {
		c := nm.c
		before := c.View()
		nodes := c.Nodes()
		for _, n := range nodes {
			n.CutZK()
		}
		cut := time.Now()
		c.WaitView(func(v zkwatch.View) bool { return len(v.Members) == 0 }, faultRecover)
		emptied := time.Since(cut)
		time.Sleep(time.Until(cut.Add(2 * c.SessionTimeout())))
		for _, n := range nodes {
			n.HealZK()
		}
		healed := time.Now()
		c.WaitView(func(v zkwatch.View) bool { return len(v.Members) == 3 }, faultRecover)
		c.WaitTailServes(faultRecover)
		p.Recovered()
		p.Notef("every node cut off from ZooKeeper for %v; the chain was empty in ZooKeeper after %v; all %d registered again, and the chain served %v after the heal",
			2*c.SessionTimeout(), emptied.Round(time.Millisecond), len(before.Members), time.Since(healed).Round(time.Millisecond))
	}}
}

// faultStaleFirst freezes the tail past its session timeout, so that it
// loses its place while the rest of the chain goes on taking writes; then
// cuts the rest of the chain off from ZooKeeper until every session has
// expired, resumes the stale node, and lets it register again first, before
// reconnecting the others: the node that comes back first is the one that
// missed the latest writes.
func faultStaleFirst() nemesisFault {
	return nemesisFault{name: "stale node back first after the whole chain lost its place", inject: func(nm *nemesis, p *cluster.Phase) {
		c, h := nm.c, nm.l.History()
		stale := c.At(2)
		old, _ := stale.Member()
		stale.Stop()
		c.WaitView(func(v zkwatch.View) bool { return v.Index(old.Name) < 0 }, faultRecover)
		c.WaitTailServes(faultRecover)
		// Writes the stale node misses.
		since := h.Now()
		deadline := time.Now().Add(faultRecover)
		for h.Stats(since, h.Now()).Writes < 50 {
			if time.Now().After(deadline) {
				nm.t.Fatalf("fewer than 50 writes in %v on the chain without %v", faultRecover, stale)
			}
			time.Sleep(10 * time.Millisecond)
		}
		var rest []*cluster.Node
		for _, m := range c.View().Members {
			rest = append(rest, c.NodeAt(m.Addr))
		}
		for _, n := range rest {
			n.CutZK()
		}
		c.WaitView(func(v zkwatch.View) bool { return len(v.Members) == 0 }, faultRecover)
		// From now on the clients write other keys, so that the final
		// reads show what became of the writes the stale node missed.
		nm.l.Rekey(fmt.Sprintf("p%d-after-", len(nm.rec.Phases())))
		stale.Cont()
		c.WaitView(func(v zkwatch.View) bool { m, ok := v.Head(); return ok && m.Addr == stale.Addr }, faultRecover)
		for _, n := range rest {
			n.HealZK()
		}
		healed := time.Now()
		// The stale node must make way: the chain is whole only once a node
		// the holders record lists leads it. Until then the old tail may
		// still answer reads on its predecessor's lease, so a tail that
		// serves says nothing yet; the history check shows that nothing
		// was lost or read stale meanwhile.
		c.WaitView(func(v zkwatch.View) bool {
			head, ok := v.Head()
			return ok && head.Addr != stale.Addr && len(v.Members) == 3
		}, faultRecover)
		madeWay := time.Since(healed)
		c.WaitTailServes(faultRecover)
		p.Recovered()
		p.Notef("%v frozen and dropped, then %v cut off from ZooKeeper until the chain was empty; %v came back first, and made way %v after the others reconnected",
			stale, rest, stale, madeWay.Round(time.Millisecond))
	}}
}

// TestFaultStaleNodeBackFirst makes the whole chain lose its place while
// one node that lost its place earlier, and so missed the latest writes,
// is away, and lets that node register again first (faultStaleFirst). The
// holders record in ZooKeeper no longer lists it, so it must not lead with
// its stale table: it waits, then makes way for the up-to-date nodes when
// they register. Every write acknowledged while the stale node was away
// must survive, and no read may go back in time.
func TestFaultStaleNodeBackFirst(t *testing.T) {
	s := faultSeedOf(t)
	nm := startNemesis(t, cluster.Options{}, s)
	nm.run(faultBaseline())
	nm.run(faultStaleFirst())
	nm.finish(fmt.Sprintf("seed %d", s))
}
