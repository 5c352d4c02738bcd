package cluster

import (
	"fmt"
	"hash/fnv"
	"maps"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// Kind is the kind of a table operation in a History.
type Kind int

// The operations a History records.
const (
	Get Kind = iota
	Put
	Del
)

// String returns the operation's name: "get", "put" or "del".
func (k Kind) String() string {
	switch k {
	case Get:
		return "get"
	case Put:
		return "put"
	case Del:
		return "del"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Input is what an operation asked: its kind, its key and, for a put, the
// value.
type Input struct {
	Kind  Kind
	Key   string
	Value string
}

// Outcome says how sure a History is of an operation's result.
type Outcome int

const (
	// OK is a definite answer: the operation took effect, or (NotFound
	// set) found no key.
	OK Outcome = iota
	// Indefinite is a failure that does not say whether a write took
	// effect: a timeout, a lost connection, retries exhausted. The write
	// may take effect at any time after its invocation, or never.
	Indefinite
)

// Output is what an operation answered.
type Output struct {
	Outcome Outcome
	// NotFound reports a get or del of a missing key (status NOT_FOUND).
	NotFound bool
	// Value is what a successful get returned.
	Value string
}

// Op is one operation of a History. Times are nanoseconds since the
// History began, from the monotonic clock.
type Op struct {
	Client int // which client ran it, from 0
	Input  Input
	Output Output
	Call   int64
	Return int64 // for an Indefinite operation, when the client gave up
	Err    error // the error of an Indefinite operation
	Probe  bool  // sent by a Probe straight to one node, or by an Audit: not the Load's
}

// History records the operations of concurrent clients, for Check. It is
// safe for concurrent use.
type History struct {
	start time.Time

	mu  sync.Mutex
	ops []Op
}

// NewHistory returns an empty History whose clock starts now.
func NewHistory() *History { return &History{start: time.Now()} }

// Now returns the History's clock: nanoseconds since it began.
func (h *History) Now() int64 { return int64(time.Since(h.start)) }

// Time converts a time of the History's clock to wall-clock time.
func (h *History) Time(t int64) time.Time { return h.start.Add(time.Duration(t)) }

// Add records an operation.
func (h *History) Add(op Op) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops = append(h.ops, op)
}

// Ops returns the operations recorded so far, by call time.
func (h *History) Ops() []Op {
	h.mu.Lock()
	ops := slices.Clone(h.ops)
	h.mu.Unlock()
	sort.SliceStable(ops, func(i, j int) bool { return ops[i].Call < ops[j].Call })
	return ops
}

// Stats sums up a History.
type Stats struct {
	Ops        int // recorded operations
	OK         int // definite answers (NotFound included)
	Indefinite int // operations without a definite answer
	Writes     int // puts and dels with a definite answer
	Reads      int // gets with a definite answer
	// LongestGap is the longest time within the period summed up during
	// which no operation returned a definite answer, and GapStart when it
	// began.
	LongestGap time.Duration
	GapStart   time.Time
	// ReadGap and WriteGap are the longest times during which no get,
	// and no put or del, returned a definite answer.
	ReadGap  time.Duration
	WriteGap time.Duration
}

// Stats sums up the operations invoked between from and to (History
// clock), those of Probes aside; the gap is measured over [from, to].
func (h *History) Stats(from, to int64) Stats {
	var s Stats
	var returns, reads, writes []int64
	for _, op := range h.Ops() {
		if op.Probe || op.Call < from || op.Call > to {
			continue
		}
		s.Ops++
		if op.Output.Outcome != OK {
			s.Indefinite++
			continue
		}
		s.OK++
		if op.Input.Kind == Get {
			s.Reads++
			reads = append(reads, op.Return)
		} else {
			s.Writes++
			writes = append(writes, op.Return)
		}
		returns = append(returns, op.Return)
	}
	var start int64
	s.LongestGap, start = longestGap(returns, from, to)
	s.GapStart = h.Time(start)
	s.ReadGap, _ = longestGap(reads, from, to)
	s.WriteGap, _ = longestGap(writes, from, to)
	return s
}

// longestGap returns the longest time within [from, to] that holds none
// of returns, and when it begins.
func longestGap(returns []int64, from, to int64) (time.Duration, int64) {
	slices.Sort(returns)
	var longest time.Duration
	start, last := from, from
	for _, r := range append(returns, to) {
		r = min(r, to)
		if gap := time.Duration(r - last); gap > longest {
			longest, start = gap, last
		}
		last = max(last, r)
	}
	return longest, start
}

// kvState is the model's state of one key.
type kvState struct {
	present bool
	value   string
}

// Model is the porcupine model of the table, partitioned by key: a put sets
// a key's value, a del removes it (answering whether it was there), a get
// returns the value or that there is none. An Indefinite put or del has
// its effect, if at all, at its linearization point, which porcupine may
// put anywhere after its call since its return time is unbounded; its
// answer is unknown, so a del's is not checked.
var Model = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := make(map[string][]porcupine.Operation)
		var keys []string
		for _, op := range history {
			k := op.Input.(Input).Key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		parts := make([][]porcupine.Operation, len(keys))
		for i, k := range keys {
			parts[i] = byKey[k]
		}
		return parts
	},
	PartitionEvent: func(history []porcupine.Event) [][]porcupine.Event {
		// A return event carries no input: follow the key by event id.
		keyOf := make(map[int]string)
		byKey := make(map[string][]porcupine.Event)
		var keys []string
		for _, ev := range history {
			if ev.Kind == porcupine.CallEvent {
				keyOf[ev.Id] = ev.Value.(Input).Key
			}
			k := keyOf[ev.Id]
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], ev)
		}
		parts := make([][]porcupine.Event, len(keys))
		for i, k := range keys {
			parts[i] = byKey[k]
		}
		return parts
	},
	Init: func() any { return kvState{} },
	Step: func(state, input, output any) (bool, any) {
		s, in, out := state.(kvState), input.(Input), output.(Output)
		switch in.Kind {
		case Get:
			if out.Outcome != OK {
				return true, s
			}
			if out.NotFound {
				return !s.present, s
			}
			return s.present && s.value == out.Value, s
		case Put:
			return true, kvState{present: true, value: in.Value}
		case Del:
			if out.Outcome != OK {
				return true, kvState{}
			}
			return out.NotFound != s.present, kvState{}
		}
		return false, s
	},
	Equal: func(a, b any) bool { return a.(kvState) == b.(kvState) },
	Hash: func(state any) uint64 {
		s := state.(kvState)
		if !s.present {
			return 0
		}
		h := fnv.New64a()
		h.Write([]byte(s.value))
		return h.Sum64() | 1
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(Input), output.(Output)
		var res string
		switch {
		case out.Outcome != OK:
			res = "?"
		case out.NotFound:
			res = "not found"
		case in.Kind == Get:
			res = fmt.Sprintf("%q", out.Value)
		default:
			res = "ok"
		}
		if in.Kind == Put {
			return fmt.Sprintf("put(%q, %q) -> %s", in.Key, in.Value, res)
		}
		return fmt.Sprintf("%s(%q) -> %s", in.Kind, in.Key, res)
	},
	DescribeState: func(state any) string {
		s := state.(kvState)
		if !s.present {
			return "absent"
		}
		return fmt.Sprintf("%q", s.value)
	},
}

// indefiniteReturn is how far after the last event of a history an
// Indefinite operation "returns" for porcupine: beyond everything, so that
// it may take effect at any point after its call.
const indefiniteReturn = int64(time.Hour)

// Operations converts ops to porcupine's form. Gets without a definite
// answer are left out, since they observed nothing; Indefinite writes
// return after everything else.
func Operations(ops []Op) []porcupine.Operation {
	var end int64
	for _, op := range ops {
		end = max(end, op.Call, op.Return)
	}
	var pops []porcupine.Operation
	for _, op := range ops {
		if op.Output.Outcome != OK && op.Input.Kind == Get {
			continue
		}
		ret := op.Return
		if op.Output.Outcome != OK {
			ret = end + indefiniteReturn
		}
		pops = append(pops, porcupine.Operation{
			ClientId: op.Client,
			Input:    op.Input,
			Call:     op.Call,
			Output:   op.Output,
			Return:   ret,
		})
	}
	return pops
}

// CheckTimeout bounds a linearizability check. Histories of a few thousand
// operations over a handful of keys take well under a second.
const CheckTimeout = time.Minute

// CheckLinearizable checks the History with porcupine and fails the test if
// it is not linearizable, or if the check did not finish within
// CheckTimeout. For an illegal history it writes porcupine's visualization
// to dir and names it in the failure. It returns the result.
func CheckLinearizable(tb testing.TB, h *History, dir string) porcupine.CheckResult {
	tb.Helper()
	return checkLinearizable(tb, h.Ops(), dir, sanitize(tb.Name())+"-linearizability.html", "history")
}

// checkLinearizable checks ops with porcupine as CheckLinearizable does,
// naming them what in messages and writing a visualization to dir/file.
func checkLinearizable(tb testing.TB, ops []Op, dir, file, what string) porcupine.CheckResult {
	tb.Helper()
	pops := Operations(ops)
	start := time.Now()
	res, info := porcupine.CheckOperationsVerbose(Model, pops, CheckTimeout)
	tb.Logf("porcupine: %s for %d operations (%s) in %v", res, len(pops), what, time.Since(start).Round(time.Millisecond))
	switch res {
	case porcupine.Ok:
	case porcupine.Illegal:
		path := filepath.Join(dir, file)
		if err := porcupine.VisualizePath(Model, info, path); err != nil {
			tb.Errorf("cluster: %s not linearizable; writing the visualization failed: %v", what, err)
		} else {
			tb.Errorf("cluster: %s not linearizable; visualization: %s", what, path)
		}
	default:
		// A timed-out search leaves no trustworthy partial linearizations
		// to draw.
		tb.Errorf("cluster: linearizability check of %d operations (%s) did not finish within %v: %s",
			len(pops), what, CheckTimeout, res)
	}
	return res
}

// CheckFinal checks that final, each key's value read at the tail once
// every client stopped (absent keys missing from the map), can be the last
// state of the History. The last write applied to a key is one that no
// acknowledged write of the key follows in real time (an Indefinite write
// may or may not have been applied), or none if no write of the key was
// acknowledged; it must explain the key's final value. CheckFinal names
// every key for which none does, with those writes: what CheckLinearizable
// also finds, in a form that says which acknowledged write was lost.
func CheckFinal(tb testing.TB, h *History, final map[string]string) {
	tb.Helper()
	reportLost(tb, h, LostWrites(h, final))
}

// reportLost fails the test for each key of lost, describing at most
// maxReported of them.
func reportLost(tb testing.TB, h *History, lost []Lost) {
	tb.Helper()
	for i, l := range lost {
		if i == maxReported {
			tb.Errorf("cluster: and %d more keys whose final value no write explains", len(lost)-maxReported)
			break
		}
		got := "absent"
		if l.Present {
			got = fmt.Sprintf("%q", l.Value)
		}
		var desc []string
		for _, w := range l.Writes {
			desc = append(desc, describeOp(h, w))
		}
		tb.Errorf("cluster: key %q is %s at the tail, but the last writes of it were:\n\t%s",
			l.Key, got, joinOr(desc, "\n\t", "(none)"))
	}
}

// Lost is a key whose final value no write of a History explains: an
// acknowledged write of it was lost, or a value appeared that no write
// could have left.
type Lost struct {
	Key     string
	Present bool   // whether the key was there at the end
	Value   string // its value then
	// Writes are the writes that could have been the last one applied:
	// those that no acknowledged write of the key followed in real time.
	Writes []Op
}

// LostWrites returns, sorted by key, the keys whose value in final (each
// key's value read at the tail once every client stopped, absent keys
// missing from the map) no write of the History explains; see CheckFinal.
func LostWrites(h *History, final map[string]string) []Lost {
	byKey := make(map[string][]Op)
	for _, op := range h.Ops() {
		if op.Input.Kind != Get {
			byKey[op.Input.Key] = append(byKey[op.Input.Key], op)
		}
	}
	for key := range final {
		if _, ok := byKey[key]; !ok {
			byKey[key] = nil
		}
	}
	var lost []Lost
	for _, key := range slices.Sorted(maps.Keys(byKey)) {
		writes := byKey[key]
		value, present := final[key]
		// A write can be the last applied unless an acknowledged write
		// began after it returned.
		var lastAcked int64 = -1
		for _, w := range writes {
			if w.Output.Outcome == OK {
				lastAcked = max(lastAcked, w.Call)
			}
		}
		explained := lastAcked < 0 && !present // the key was never written
		var candidates []Op
		for _, w := range writes {
			if w.Output.Outcome == OK && w.Return < lastAcked {
				continue
			}
			candidates = append(candidates, w)
			switch w.Input.Kind {
			case Put:
				explained = explained || present && value == w.Input.Value
			case Del:
				explained = explained || !present
			}
		}
		if !explained {
			lost = append(lost, Lost{Key: key, Present: present, Value: value, Writes: candidates})
		}
	}
	return lost
}

// maxReported is how many keys CheckFinal describes.
const maxReported = 10

// Describe renders op for test logs, with its times of day.
func (h *History) Describe(op Op) string { return describeOp(h, op) }

func describeOp(h *History, op Op) string {
	s := fmt.Sprintf("client %d %s [%s, %s]", op.Client, Model.DescribeOperation(op.Input, op.Output),
		h.Time(op.Call).Format("15:04:05.000000"), h.Time(op.Return).Format("15:04:05.000000"))
	if op.Err != nil {
		s += fmt.Sprintf(" (%v)", op.Err)
	}
	return s
}

func joinOr(s []string, sep, none string) string {
	if len(s) == 0 {
		return none
	}
	return strings.Join(s, sep)
}
