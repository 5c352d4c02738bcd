package chain

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/chaintable/chaintable/codec"
	"github.com/chaintable/chaintable/srv"
)

// lsim runs Machines with a clock, real read leases and a model of
// ZooKeeper: sessions that live only while ZooKeeper hears from them, and
// views that reach each connected node late. Faults: cutting nodes off
// ZooKeeper (their links to each other stay up), freezing a node (it takes
// no events, then resumes with its clock jumped), breaking a link,
// killing a node, draining one that leaves, joins. Every read a node
// answers is checked against the acknowledged writes and earlier reads
// (simRead.check).
//
// Time is modelled so that it favours the attack: a connected node's
// session lease is the time ZooKeeper last heard from it plus the session
// timeout, and ZooKeeper expires a session at exactly that time.
type lsim struct {
	*sim
	now     time.Time
	session time.Duration // ZooKeeper's session timeout
	term    time.Duration // the lease term, at most the session timeout

	procs map[string]*lproc // running processes, by current member name (see setProc)
	names []string          // procs' names in order, nil when to be sorted again (see procNames)
	zk    []string          // the members ZooKeeper lists, in order
	heard map[string]time.Time
	view  int // version of the view ZooKeeper lists (bumped on every change)

	stats   lsimStats                        // what the simulation exercised
	stepErr func(format string, args ...any) // t.Fatalf
	profile int                              // index in lsimProfiles
	batch   int                              // writes per frame; 0 draws 1 to 3
}

// lproc is a node's process.
type lproc struct {
	*simNode
	cut    bool      // cut off ZooKeeper: no renewals, no views
	frozen time.Time // takes no events before then
	seen   int       // version of the view it installed
	// out is the link to the successor: frames and acknowledgements in
	// flight, each with the generation it was sent on.
	gen     uint64
	linked  bool
	next    uint64
	frames  []lframe
	acks    []lack
	hbeat   bool // the next send is a heartbeat: it carries a grant
	leaving bool // drained: leaves once idle and released
	release bool // an acknowledgement carried the release
}

type lframe struct {
	gen      uint64
	from, to string
	writes   []*codec.WriteT
	live     bool
	grant    codec.Grant
}

type lack struct {
	gen     uint64
	pos     Position
	ask     uint64
	release bool
}

func newLsim(t *testing.T, seed uint64, session, term time.Duration) *lsim {
	return &lsim{sim: newSim(t, seed), now: time.Unix(1_000_000, 0), session: session, term: term,
		procs: map[string]*lproc{}, heard: map[string]time.Time{}, stepErr: t.Fatalf}
}

func (s *lsim) logf(format string, args ...any) {
	if traceSim {
		s.t.Logf("%v "+format, append([]any{s.now.Sub(time.Unix(1_000_000, 0))}, args...)...)
	}
}

// members returns the view ZooKeeper lists.
func (s *lsim) members() []Member {
	var ms []Member
	for _, name := range s.zk {
		ms = append(ms, Member{Name: name, Addr: name})
	}
	return ms
}

// up reports whether p takes events now.
func (s *lsim) up(p *lproc) bool { return p != nil && !s.now.Before(p.frozen) }

// event starts an event at p: it ticks its clock and, while ZooKeeper
// hears it, renews its session lease, as Node.step does.
func (s *lsim) event(p *lproc) {
	if !p.cut && slices.Contains(s.zk, p.name) {
		p.m.SetSessionLease(s.heard[p.name].Add(s.session))
	}
	p.m.Tick(s.now)
}

// join starts a node that registers at the end of the chain and sees the
// current view at once.
func (s *lsim) join() *lproc {
	s.seq++
	name := fmt.Sprintf("node%010d", s.seq)
	store, _ := srv.NewStore(4)
	p := &lproc{simNode: &simNode{name: name, m: NewMachine(name, store, s.term), store: store}}
	s.setProc(p)
	s.nodes[name] = p.simNode
	s.zk = append(s.zk, name)
	s.order = s.zk
	s.heard[name] = s.now
	s.view++
	s.logf("join %s", name)
	s.event(p)
	s.install(p)
	return p
}

// install gives p the view ZooKeeper lists now.
func (s *lsim) install(p *lproc) {
	s.event(p)
	p.m.SetView(s.members())
	p.seen = s.view
	s.flush(p)
}

// flush wakes the waiters of p's machine.
func (s *lsim) flush(p *lproc) {
	done, pos, failed := p.m.TakeDone()
	for _, w := range done {
		w.Done(pos, nil)
	}
	for _, w := range failed {
		w.Done(Position{}, ErrUnavailable)
	}
}

// zkTick is ZooKeeper's side of time: it hears the connected nodes and
// expires the sessions it has not heard for a session timeout.
func (s *lsim) zkTick() {
	for _, name := range s.zk {
		if p := s.procs[name]; p != nil && !p.cut && s.up(p) {
			s.heard[name] = s.now
		}
	}
	for _, name := range slices.Clone(s.zk) {
		if !s.now.Before(s.heard[name].Add(s.session)) {
			s.logf("zookeeper expires %s", name)
			s.removeMember(name)
		}
	}
}

func (s *lsim) removeMember(name string) {
	s.zk = slices.DeleteFunc(s.zk, func(n string) bool { return n == name })
	s.order = s.zk
	s.view++
}

// advance moves the clock on by d.
func (s *lsim) advance(d time.Duration) {
	s.now = s.now.Add(d)
	s.zkTick()
}

// deliverView gives p the latest view, if it is connected and up.
func (s *lsim) deliverView(p *lproc) {
	if p.cut || !s.up(p) || p.seen == s.view {
		return
	}
	if !slices.Contains(s.zk, p.name) {
		// Its session expired: it registers again under a new name.
		s.rejoin(p)
		return
	}
	s.logf("view %v at %s", s.zk, p.name)
	s.install(p)
}

// setProc and dropProc change procs. procNames returns the names in
// procs in order, for the simulation's choices to depend on its seed
// alone; it sorts them again only after a change, since sorting at every
// step was most of the simulation's time. A caller may go on ranging over
// what it returned while procs changes.
func (s *lsim) setProc(p *lproc) { s.procs[p.name], s.names = p, nil }

func (s *lsim) dropProc(name string) {
	delete(s.procs, name)
	s.names = nil
}

func (s *lsim) procNames() []string {
	if s.names == nil {
		s.names = slices.Sorted(maps.Keys(s.procs))
	}
	return s.names
}

func (s *lsim) rejoin(p *lproc) {
	old := p.name
	s.dropProc(old)
	delete(s.nodes, old)
	s.seq++
	p.name = fmt.Sprintf("node%010d", s.seq)
	s.logf("%s rejoins as %s", old, p.name)
	p.m.Rejoin(p.name)
	s.flush(p)
	p.linked, p.frames, p.acks = false, nil, nil
	s.setProc(p)
	s.nodes[p.name] = p.simNode
	s.zk = append(s.zk, p.name)
	s.order = s.zk
	s.heard[p.name] = s.now
	s.view++
	s.install(p)
}

// kill stops p's process: its links break, and ZooKeeper expires its
// session a session timeout after it last heard it.
func (s *lsim) kill(p *lproc) {
	s.logf("kill %s", p.name)
	s.dropProc(p.name)
	delete(s.nodes, p.name)
	for _, name := range s.procNames() {
		if q := s.procs[name]; q.m.succ.Name == p.name && s.up(q) {
			s.breakLink(q)
		}
	}
}

// breakLink breaks p's connection to its successor: what is in flight on
// it is lost.
func (s *lsim) breakLink(p *lproc) {
	s.event(p)
	_, gen := p.m.Successor()
	p.m.SuccessorLost(gen)
	p.linked, p.frames, p.acks = false, nil, nil
	s.flush(p)
}

// ackWaiter sends an acknowledgement back on p's link of generation gen.
type lackWaiter struct {
	p       *lproc
	gen     uint64
	last    uint64
	ask     uint64
	release bool
}

func (w lackWaiter) Done(pos Position, err error) {
	if err == nil {
		w.p.acks = append(w.p.acks, lack{w.gen, AckPosition(w.last, pos), w.ask, w.release})
	}
}

// pump takes one step on p's link to its successor; step picks which:
// connect, send, deliver a frame, deliver an acknowledgement.
func (s *lsim) pump(p *lproc, step int) {
	if !s.up(p) {
		return
	}
	succ, gen := p.m.Successor()
	if p.gen != gen {
		// A new connection: frames already written may still arrive,
		// acknowledgements on the old one are lost.
		p.gen, p.linked, p.acks = gen, false, nil
	}
	switch step % 4 {
	case 0:
		sp := s.procs[succ.Name]
		if p.linked || succ.Name == "" || sp == nil || !s.up(sp) {
			return
		}
		s.event(sp)
		h, err := sp.m.Hello(p.name, succ.Name)
		if err != nil {
			return // the successor's view differs for now
		}
		s.event(p)
		act, err := p.m.SuccessorHello(gen, h)
		if err != nil {
			if errors.Is(err, ErrUnavailable) || errors.Is(err, ErrStale) {
				return
			}
			s.stepErr("successor hello at %s: %v", p.name, err)
			return
		}
		if act.Snapshot {
			var entries []*codec.WriteT
			for _, e := range p.store.Table.Entries() {
				entries = append(entries, &codec.WriteT{Op: codec.OpPut, Key: e.Key, Value: e.Value})
			}
			s.event(sp)
			if err := sp.m.Snapshot(p.name, succ.Name, true, entries, p.m.DedupRecords(), &SnapshotEnd{At: Point{Seq: act.Next - 1, Epoch: act.Epoch}, AheadTo: p.m.Applied()}); err != nil {
				s.stepErr("snapshot: %v", err)
				return
			}
			s.flush(sp)
			if err := p.m.SuccessorAck(gen, sp.m.Position(), 0, false); err != nil {
				s.stepErr("snapshot ack: %v", err)
				return
			}
		}
		s.logf("link %s->%s gen %d snapshot=%v next %d", p.name, succ.Name, gen, act.Snapshot, act.Next)
		p.linked, p.next = true, act.Next
		s.flush(p)
	case 1:
		if !p.linked {
			return
		}
		if s.procs[succ.Name] == nil {
			s.breakLink(p) // the successor's process is gone: the connection resets
			return
		}
		batch := s.batch
		if batch == 0 {
			batch = 1 + s.rng.IntN(3)
		}
		ws, live, err := p.m.Writes(gen, p.next, batch)
		if err != nil {
			// Frames of an older connection reached the successor after
			// this one's handshake, and its acknowledgement passed what
			// this link sent: the link starts again, as Node.link does.
			s.logf("writes at %s: %v", p.name, err)
			s.breakLink(p)
			return
		}
		if len(ws) == 0 && !live && !p.hbeat {
			p.hbeat = s.rng.IntN(2) == 0
			return
		}
		p.hbeat = false
		grant := p.m.Grant(gen, s.now)
		p.frames = append(p.frames, lframe{gen, p.name, succ.Name, ws, live, grant})
		if len(ws) > 0 {
			p.next = ws[len(ws)-1].Seq + 1
		}
	case 2:
		if len(p.frames) == 0 {
			return
		}
		f := p.frames[0]
		sp := s.procs[f.to]
		if sp == nil {
			p.frames = p.frames[1:]
			return
		}
		if !s.up(sp) {
			return
		}
		p.frames = p.frames[1:]
		s.event(sp)
		last, ask, err := sp.m.Replicate(f.from, f.to, f.writes, f.live, f.grant)
		if err != nil {
			if errors.Is(err, ErrStale) {
				if f.gen == gen {
					s.breakLink(p) // refused: the link ends
				}
				return
			}
			s.stepErr("replicate %s->%s: %v", f.from, f.to, err)
			return
		}
		w := lackWaiter{p, f.gen, last, ask, sp.m.Released()}
		if w.release {
			sp.release = true
		}
		if sp.m.Live() {
			sp.m.Await(last, w)
		} else {
			w.Done(sp.m.Position(), nil)
		}
		s.flush(sp)
	case 3:
		if len(p.acks) == 0 {
			return
		}
		a := p.acks[0]
		p.acks = p.acks[1:]
		if a.gen != gen {
			return
		}
		s.event(p)
		if err := p.m.SuccessorAck(gen, a.pos, a.ask, a.release); err != nil {
			s.stepErr("ack at %s: %v", p.name, err)
			return
		}
		s.flush(p)
	}
}

// write sends a client write to a node that believes it is the head.
func (s *lsim) write(key string, del bool) {
	var heads []*lproc
	for _, name := range s.procNames() {
		if p := s.procs[name]; s.up(p) && p.m.IsHead() {
			heads = append(heads, p)
		}
	}
	if len(heads) == 0 {
		return
	}
	h := heads[s.rng.IntN(len(heads))]
	s.event(h)
	s.writeAt(h, key, del)
}

func (s *lsim) writeAt(h *lproc, key string, del bool) {
	s.val++
	value := fmt.Sprintf("v%d", s.val)
	op := codec.OpPut
	if del {
		op, value = codec.OpDel, ""
	}
	w := &codec.WriteT{Op: op, Key: key, Value: []byte(value)}
	cw := &simClientWaiter{s: s.sim, key: key, value: value, at: h.name}
	counted := countedWaiter{cw, &s.stats}
	seq, _, err := h.m.ClientWrite(w)
	if err != nil {
		return
	}
	cw.seq = seq
	if value != "" {
		s.valueSeq[value] = seq
	}
	s.logf("write %s=%q seq %d at %s: %v", key, value, seq, h.name, h.m)
	h.m.Await(seq, counted)
	s.flush(h)
}

// countedWaiter counts the writes acknowledged, in stats.
type countedWaiter struct {
	*simClientWaiter
	stats *lsimStats
}

func (w countedWaiter) Done(pos Position, err error) {
	if err == nil {
		w.stats.acked++
	}
	w.simClientWaiter.Done(pos, err)
}

// read reads key at every node that answers it now (see sim.read).
func (s *lsim) read(key string) {
	for _, name := range s.procNames() {
		p := s.procs[name]
		if !s.up(p) || p.m.CanRead(s.now) != nil {
			continue
		}
		s.stats.reads++
		if !p.m.IsHead() {
			s.stats.notHead++
		}
		if !slices.Contains(s.zk, p.name) {
			s.stats.dropped++ // answered by a node ZooKeeper no longer lists
		}
		v, found := p.store.Table.Get(key)
		r := &simRead{s: s.sim, node: p.name, key: key, value: string(v), found: found, observed: s.observed[key]}
		r.acked, r.wasAcked = s.acked[key]
		if need := p.m.ReadNeed([]byte(key)); need != 0 {
			s.stats.dirty++
			s.logf("read %s at %s = %q waits for %d", key, p.name, v, need)
			p.m.Await(need, r)
			continue
		}
		s.logf("read %s at %s = %q", key, p.name, v)
		r.check()
	}
}

// drain makes p leave gracefully: it drains, and once idle and released
// (or with no predecessor) it deletes its member node and stops.
func (s *lsim) drain(p *lproc) {
	s.logf("drain %s", p.name)
	s.event(p)
	p.m.Drain()
	p.leaving = true
}

func (s *lsim) maybeLeave(p *lproc) {
	if !p.leaving || !s.up(p) || p.cut {
		return
	}
	if p.m.Idle() && (p.m.pred.Name == "" || p.release) {
		s.logf("%s leaves", p.name)
		s.removeMember(p.name)
		s.kill(p)
	}
}

// faulty reports whether p is cut off, frozen or leaving.
func (s *lsim) faulty(p *lproc) bool { return p.cut || !s.up(p) || p.leaving }

// safe reports whether a fault at victim still leaves a node that is up,
// connected, a live member, and holds every acknowledged write: chain
// replication promises nothing when the last complete copy is lost. (A
// node still catching up does not count: the node acting as tail
// commits without it. The holders record, which this sim does not model,
// is what stops such a node from leading with its table.)
func (s *lsim) safe(victim *lproc) bool {
	var need uint64
	for _, a := range s.acked {
		need = max(need, a.seq)
	}
	for _, name := range s.zk {
		if p := s.procs[name]; p != nil && p != victim && !s.faulty(p) && p.m.Live() && p.m.Applied() >= need {
			return true
		}
	}
	return false
}

// The events of step.
const (
	evWrite = iota
	evPump
	evRead
	evView
	evTick
	evBreak
	evCut
	evHeal
	evFreeze
	evKill
	evDrain
	evJoin
	evGroupCut
	evTime
	nEvents
)

// Profiles of how often each event comes, per mille: a steady one, one
// heavy with faults, where nodes ZooKeeper dropped go on longer, and one
// where nodes leave gracefully while others are cut off.
var lsimProfiles = [][nEvents]int{
	{250, 450, 100, 80, 40, 10, 10, 5, 10, 5, 4, 8, 8, 15},
	{120, 500, 100, 60, 50, 10, 30, 3, 10, 5, 15, 30, 20, 40},
	{120, 500, 100, 60, 50, 5, 20, 2, 3, 2, 40, 40, 30, 30},
}

// pick draws an event from the sim's profile.
func (s *lsim) pick() int {
	w := lsimProfiles[s.profile]
	total := 0
	for _, n := range w {
		total += n
	}
	r := s.rng.IntN(total)
	for ev, n := range w {
		if r < n {
			return ev
		}
		r -= n
	}
	return evTime
}

// step takes one random event, after background progress: each node
// takes a random link step, and now and then its view, so that the chain
// heals between faults as fast as a real one does.
func (s *lsim) step(nkeys int) {
	s.advance(time.Duration(s.rng.IntN(30)) * time.Millisecond)
	for _, name := range s.procNames() {
		if p := s.procs[name]; p != nil && s.rng.IntN(2) == 0 {
			s.pump(p, s.rng.IntN(4))
		}
		if p := s.procs[name]; p != nil && s.rng.IntN(10) == 0 {
			s.deliverView(p)
		}
	}
	names := s.procNames()
	if len(names) == 0 {
		s.join()
		return
	}
	p := s.procs[names[s.rng.IntN(len(names))]]
	key := fmt.Sprintf("k%d", s.rng.IntN(nkeys))
	switch s.pick() {
	case evWrite:
		s.write(key, s.rng.IntN(5) == 0)
	case evPump:
		s.pump(p, s.rng.IntN(4))
	case evRead:
		s.read(key)
	case evView:
		s.deliverView(p)
	case evTick:
		if s.up(p) {
			s.event(p)
			s.flush(p)
		}
		s.maybeLeave(p)
	case evBreak:
		if s.up(p) {
			s.breakLink(p)
		}
	case evCut:
		if !p.cut && s.safe(p) {
			s.logf("cut %s", p.name)
			p.cut = true
		}
	case evHeal:
		if p.cut {
			s.logf("heal %s", p.name)
			p.cut = false
			if slices.Contains(s.zk, p.name) && s.up(p) {
				s.heard[p.name] = s.now
			}
		}
	case evFreeze:
		if s.up(p) && s.safe(p) {
			d := time.Duration(s.rng.Int64N(int64(2 * s.session)))
			s.logf("freeze %s for %v", p.name, d)
			p.frozen = s.now.Add(d)
		}
	case evKill:
		if s.safe(p) {
			s.kill(p)
		}
	case evDrain:
		if s.up(p) && !p.leaving && s.safe(p) {
			s.drain(p)
		}
	case evJoin:
		if len(s.zk) < 5 {
			s.join()
		}
	case evGroupCut:
		// A cut group: several nodes at once, the attack of issue 16.1.
		for _, name := range names {
			if q := s.procs[name]; q != nil && !q.cut && s.rng.IntN(2) == 0 && s.safe(q) {
				s.logf("cut %s (group)", q.name)
				q.cut = true
			}
		}
	case evTime:
		// Time passes: leases and sessions run out.
		s.advance(time.Duration(s.rng.Int64N(int64(s.session))))
	}
}

// heal ends every fault and lets the chain settle, then checks that it
// converged with every acknowledged write.
func (s *lsim) healAndSettle() {
	for _, p := range s.procs {
		p.cut, p.frozen = false, time.Time{}
	}
	for range 20000 {
		s.advance(10 * time.Millisecond)
		for _, name := range s.procNames() {
			if p := s.procs[name]; p != nil {
				s.deliverView(p)
				s.maybeLeave(p)
			}
		}
		for _, name := range s.procNames() {
			if p := s.procs[name]; p != nil {
				s.event(p)
				s.flush(p)
				for step := range 4 {
					s.pump(p, step)
				}
			}
		}
		if s.converged() {
			return
		}
	}
	for _, name := range s.zk {
		s.t.Log(s.procs[name].m)
	}
	s.t.Fatal("chain did not settle")
}

func (s *lsim) converged() bool {
	if len(s.zk) == 0 {
		return false
	}
	tail := s.procs[s.zk[len(s.zk)-1]]
	if tail == nil {
		return false
	}
	for _, name := range s.zk {
		p := s.procs[name]
		if p == nil || p.seen != s.view || p.m.CanRead(s.now) != nil || p.m.Applied() != tail.m.Applied() || !p.m.Idle() {
			return false
		}
	}
	return s.procs[s.zk[0]].m.CanWrite() == nil
}

// lsimEachSeed runs body on a simulation of three nodes that joined, one
// per seed, as parallel subtests: seeds of them, short with -short, or
// those that LSIM_SEEDS=first:count names, for longer hunts. Once every
// seed has finished, it calls done with how many ran and what they
// exercised together.
func lsimEachSeed(t *testing.T, seeds, short uint64, body func(t *testing.T, s *lsim), done func(seeds uint64, total lsimStats)) {
	first := uint64(1)
	if testing.Short() {
		seeds = short
	}
	if v := os.Getenv("LSIM_SEEDS"); v != "" {
		if _, err := fmt.Sscanf(v, "%d:%d", &first, &seeds); err != nil {
			t.Fatalf("LSIM_SEEDS=%q: want first:count (%v)", v, err)
		}
	}
	var mu sync.Mutex
	var total lsimStats
	// Cleanup runs once the parallel subtests are done.
	t.Cleanup(func() { done(seeds, total) })
	for seed := first; seed < first+seeds; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Parallel()
			session := 4 * time.Second
			term := session / 2
			if seed%3 == 0 {
				term = session // the most table_server allows
			}
			s := newLsim(t, seed, session, term)
			s.profile = int(seed % uint64(len(lsimProfiles)))
			for range 3 {
				s.join()
			}
			body(t, s)
			mu.Lock()
			total.add(s.stats)
			mu.Unlock()
		})
	}
}

// lsimStats counts what a random simulation exercised.
type lsimStats struct{ reads, dirty, notHead, dropped, acked int }

func (a *lsimStats) add(b lsimStats) {
	a.reads += b.reads
	a.dirty += b.dirty
	a.notHead += b.notHead
	a.dropped += b.dropped
	a.acked += b.acked
}

// TestLeaseSimRandomFaults is the attack: random writes, reads at every
// node, and faults, with real leases and a model of ZooKeeper.
func TestLeaseSimRandomFaults(t *testing.T) {
	const steps = 3000
	lsimEachSeed(t, 200, 20, func(t *testing.T, s *lsim) {
		for range steps {
			s.step(4)
			s.read(fmt.Sprintf("k%d", s.rng.IntN(4)))
		}
		s.healAndSettle()
		s.checkConverged()
	}, func(seeds uint64, st lsimStats) {
		t.Logf("%d seeds x %d steps: %d writes acknowledged, %d reads answered (%d dirty, %d not at a head, %d by nodes ZooKeeper had dropped)",
			seeds, steps, st.acked, st.reads, st.dirty, st.notHead, st.dropped)
	})
}

func init() {
	if os.Getenv("LSIM_TRACE") != "" {
		traceSim = true
	}
}
