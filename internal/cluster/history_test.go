package cluster

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// op builds an operation for hand-written histories; times are in
// arbitrary units.
func op(client int, kind Kind, key, value string, call, ret int64) Op {
	o := Op{Client: client, Input: Input{Kind: kind, Key: key}, Call: call, Return: ret}
	switch kind {
	case Put:
		o.Input.Value = value
	case Get:
		o.Output.Value = value
	}
	return o
}

func notFound(o Op) Op   { o.Output.NotFound = true; return o }
func indefinite(o Op) Op { o.Output = Output{Outcome: Indefinite}; return o }

func TestModel(t *testing.T) {
	tests := []struct {
		name string
		ops  []Op
		want porcupine.CheckResult
	}{
		{"sequential", []Op{
			notFound(op(0, Get, "a", "", 0, 1)),
			op(0, Put, "a", "1", 2, 3),
			op(1, Get, "a", "1", 4, 5),
			op(1, Del, "a", "", 6, 7),
			notFound(op(0, Del, "a", "", 8, 9)),
			notFound(op(0, Get, "a", "", 10, 11)),
		}, porcupine.Ok},
		{"stale read", []Op{
			op(0, Put, "a", "1", 0, 1),
			op(0, Put, "a", "2", 2, 3),
			op(1, Get, "a", "1", 4, 5),
		}, porcupine.Illegal},
		{"lost write", []Op{
			op(0, Put, "a", "1", 0, 1),
			notFound(op(1, Get, "a", "", 2, 3)),
		}, porcupine.Illegal},
		{"del of a present key reports not found", []Op{
			op(0, Put, "a", "1", 0, 1),
			notFound(op(0, Del, "a", "", 2, 3)),
		}, porcupine.Illegal},
		{"del of a missing key reports found", []Op{
			op(0, Del, "a", "", 0, 1),
		}, porcupine.Illegal},
		{"concurrent writes either order", []Op{
			op(0, Put, "a", "1", 0, 10),
			op(1, Put, "a", "2", 1, 9),
			op(2, Get, "a", "1", 11, 12),
		}, porcupine.Ok},
		{"keys are independent", []Op{
			op(0, Put, "a", "1", 0, 1),
			notFound(op(1, Get, "b", "", 2, 3)),
			op(1, Get, "a", "1", 4, 5),
		}, porcupine.Ok},
		{"indefinite put applied late", []Op{
			indefinite(op(0, Put, "a", "1", 0, 1)),
			notFound(op(1, Get, "a", "", 2, 3)),
			op(1, Get, "a", "1", 4, 5),
		}, porcupine.Ok},
		{"indefinite put never applied", []Op{
			indefinite(op(0, Put, "a", "1", 0, 1)),
			notFound(op(1, Get, "a", "", 2, 3)),
		}, porcupine.Ok},
		{"indefinite put cannot take effect before its call", []Op{
			notFound(op(1, Get, "a", "", 0, 1)),
			op(1, Get, "a", "1", 2, 3),
			indefinite(op(0, Put, "a", "1", 4, 5)),
		}, porcupine.Illegal},
		{"indefinite del", []Op{
			op(0, Put, "a", "1", 0, 1),
			indefinite(op(1, Del, "a", "", 2, 3)),
			op(0, Get, "a", "1", 4, 5),
			notFound(op(0, Get, "a", "", 6, 7)),
		}, porcupine.Ok},
		{"indefinite get observes nothing", []Op{
			op(0, Put, "a", "1", 0, 1),
			indefinite(op(1, Get, "a", "", 2, 3)),
		}, porcupine.Ok},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := porcupine.CheckOperations(Model, Operations(tt.ops)); got != (tt.want == porcupine.Ok) {
				t.Errorf("CheckOperations = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestModelEvents(t *testing.T) {
	// The event form, partitioned by PartitionEvent: a stale read on "a"
	// among writes to "b".
	var evs []porcupine.Event
	id := 0
	add := func(client int, in Input, out Output) {
		evs = append(evs,
			porcupine.Event{ClientId: client, Kind: porcupine.CallEvent, Value: in, Id: id},
			porcupine.Event{ClientId: client, Kind: porcupine.ReturnEvent, Value: out, Id: id})
		id++
	}
	add(0, Input{Kind: Put, Key: "a", Value: "1"}, Output{})
	add(1, Input{Kind: Put, Key: "b", Value: "x"}, Output{})
	add(0, Input{Kind: Put, Key: "a", Value: "2"}, Output{})
	add(1, Input{Kind: Get, Key: "b"}, Output{Value: "x"})
	if !porcupine.CheckEvents(Model, evs) {
		t.Fatal("CheckEvents = false for a legal history")
	}
	add(1, Input{Kind: Get, Key: "a"}, Output{Value: "1"})
	if porcupine.CheckEvents(Model, evs) {
		t.Fatal("CheckEvents = true for a stale read")
	}
}

func TestCheckLinearizableVisualizes(t *testing.T) {
	h := NewHistory()
	h.Add(op(0, Put, "a", "1", 0, 1))
	h.Add(op(0, Put, "a", "2", 2, 3))
	h.Add(op(1, Get, "a", "1", 4, 5))
	ft := &fakeTB{TB: t}
	dir := t.TempDir()
	if res := CheckLinearizable(ft, h, dir); res != porcupine.Illegal {
		t.Fatalf("CheckLinearizable = %v, want Illegal", res)
	}
	if len(ft.errors) != 1 || !strings.Contains(ft.errors[0], dir) {
		t.Fatalf("errors = %q, want one naming a visualization in %s", ft.errors, dir)
	}
}

func TestCheckFinal(t *testing.T) {
	h := NewHistory()
	h.Add(op(0, Put, "a", "1", 0, 1))
	h.Add(op(1, Put, "a", "2", 2, 3))
	h.Add(indefinite(op(2, Del, "a", "", 4, 5)))
	h.Add(op(0, Put, "b", "1", 0, 10))
	h.Add(op(1, Put, "b", "2", 1, 9))
	h.Add(op(0, Put, "c", "1", 0, 1))
	h.Add(op(1, Del, "c", "", 2, 3))
	h.Add(indefinite(op(0, Put, "e", "1", 0, 1)))
	tests := []struct {
		final map[string]string
		bad   []string // keys reported
	}{
		{map[string]string{"a": "2", "b": "1"}, nil},
		{map[string]string{"b": "2"}, nil}, // a deleted by the indefinite del
		{map[string]string{"a": "1", "b": "2"}, []string{`"a"`}},
		{map[string]string{"a": "2", "b": "2", "c": "1"}, []string{`"c"`}},
		{map[string]string{"a": "2", "d": "x"}, []string{`"b"`, `"d"`}},
		{map[string]string{"a": "2", "b": "1", "e": "1"}, nil}, // the indefinite put applied
		{map[string]string{"a": "2", "b": "1", "e": "2"}, []string{`"e"`}},
	}
	for i, tt := range tests {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			ft := &fakeTB{TB: t}
			CheckFinal(ft, h, tt.final)
			if len(ft.errors) != len(tt.bad) {
				t.Fatalf("errors = %q, want %d naming %v", ft.errors, len(tt.bad), tt.bad)
			}
			for _, key := range tt.bad {
				if !strings.Contains(strings.Join(ft.errors, "\n"), "key "+key) {
					t.Errorf("errors = %q, want one about key %s", ft.errors, key)
				}
			}
		})
	}
}

func TestStats(t *testing.T) {
	h := NewHistory()
	ms := int64(time.Millisecond)
	h.Add(op(0, Put, "a", "1", 0, 10*ms))
	h.Add(op(0, Get, "a", "1", 10*ms, 20*ms))
	h.Add(indefinite(op(1, Put, "a", "2", 15*ms, 500*ms)))
	h.Add(op(1, Del, "a", "", 600*ms, 700*ms))
	s := h.Stats(0, 1000*ms)
	if s.Ops != 4 || s.OK != 3 || s.Indefinite != 1 || s.Reads != 1 || s.Writes != 2 {
		t.Errorf("Stats = %+v", s)
	}
	if s.LongestGap != 680*time.Millisecond || !s.GapStart.Equal(h.Time(20*ms)) {
		t.Errorf("LongestGap = %v from %v, want 680ms from 20ms", s.LongestGap, s.GapStart.Sub(h.Time(0)))
	}
}

// fakeTB records errors instead of failing the test.
type fakeTB struct {
	testing.TB
	errors []string
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Errorf(format string, args ...any) {
	f.errors = append(f.errors, fmt.Sprintf(format, args...))
}
