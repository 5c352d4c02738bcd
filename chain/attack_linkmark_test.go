package chain

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/chaintable/chaintable/codec"
)

// Attacks on the link's wake-up rule (Node.step kicks the link only when
// Machine.LinkMark changed).

// linkIdle reports whether a link of generation gen, which has sent every
// write before next, has nothing to send in m now: Writes gives no write,
// no live marker and no error. It calls Writes on a copy, so that a live
// marker it would hand out stays in m.
func linkIdle(m *Machine, gen, next uint64) (bool, string) {
	c := *m
	ws, live, err := c.Writes(gen, next, linkBatch)
	if len(ws) > 0 || live || err != nil {
		return false, fmt.Sprintf("writes %d (first %d) live %v err %v", len(ws), firstSeq(ws), live, err)
	}
	return true, ""
}

func firstSeq(ws []*codec.WriteT) uint64 {
	if len(ws) == 0 {
		return 0
	}
	return ws[0].Seq
}

// linkPoints returns the positions an idle link of m may rest at: after
// the last write applied, and, while writes are held back for a bypassed
// successor, at the first write kept.
func linkPoints(m *Machine) []uint64 {
	pts := []uint64{m.applied + 1}
	if len(m.sent) > 0 {
		pts = append(pts, m.sent[0].Seq)
	}
	return pts
}

type idleAt struct {
	m    *Machine
	mark LinkMark
	gen  uint64
	next []uint64
	// before is a copy of the machine, described only if the check
	// fails: describing it at every step took most of the test's time.
	before Machine
}

// idleLinks returns, for each process whose link would sleep now, what
// it would sleep on.
func idleLinks(s *lsim) map[string]idleAt {
	out := map[string]idleAt{}
	for _, name := range s.procNames() {
		p := s.procs[name]
		_, gen := p.m.Successor()
		var next []uint64
		for _, x := range linkPoints(p.m) {
			if ok, _ := linkIdle(p.m, gen, x); ok {
				next = append(next, x)
			}
		}
		if len(next) > 0 {
			out[name] = idleAt{m: p.m, mark: p.m.LinkMark(), gen: gen, next: next, before: *p.m}
		}
	}
	return out
}

// TestAttackLinkMarkSim runs the lease simulation and checks, around every
// step, the rule the wake-up relies on: a machine whose link had nothing
// to send, and whose LinkMark is as it was, still has nothing to send.
// Between two checks the mark cannot change and change back without the
// link's own read (the generation only grows, and with it fixed so do
// applied and the end of a bypass; only Writes clears the live marker).
func TestAttackLinkMarkSim(t *testing.T) {
	const steps = 3000
	var checks atomic.Int64 // over seeds run in parallel
	lsimEachSeed(t, 30, 5, func(t *testing.T, s *lsim) {
		for i := range steps {
			before := idleLinks(s)
			s.step(4)
			s.read(fmt.Sprintf("k%d", s.rng.IntN(4)))
			for name, b := range before {
				p := s.procs[name]
				if p == nil || p.m != b.m || p.m.LinkMark() != b.mark {
					continue
				}
				for _, x := range b.next {
					checks.Add(1)
					if ok, what := linkIdle(p.m, b.gen, x); !ok {
						t.Fatalf("step %d: %s had nothing to send at %d with mark %+v, and now has (%s), mark unchanged\nbefore: %s\nafter:  %s",
							i, name, x, b.mark, what, b.before.String(), p.m)
					}
				}
			}
		}
	}, func(uint64, lsimStats) { t.Logf("%d checks of an unchanged mark", checks.Load()) })
}
