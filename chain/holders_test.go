package chain_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/chaintable/chaintable/chain"
	"github.com/chaintable/chaintable/codec"
)

func TestParseHolders(t *testing.T) {
	for _, tc := range []struct {
		name, data string
		want       chain.Holders
		err        bool
	}{
		{name: "empty", data: ""},
		{name: "blank lines", data: "\n\n"},
		{name: "two", data: "holder a1 n1\nholder b2 n2\n", want: chain.Holders{{ID: "a1", Name: "n1"}, {ID: "b2", Name: "n2"}}},
		{name: "no newline at the end", data: "holder a1 n1", want: chain.Holders{{ID: "a1", Name: "n1"}}},
		{name: "course server's address", data: "127.0.0.1:1234\x00", err: true},
		{name: "missing name", data: "holder a1\n", err: true},
		{name: "extra field", data: "holder a1 n1 x\n", err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := chain.ParseHolders([]byte(tc.data))
			if (err != nil) != tc.err || !slices.Equal(got, tc.want) {
				t.Errorf("ParseHolders(%q) = %v, %v; want %v, error %v", tc.data, got, err, tc.want, tc.err)
			}
		})
	}
}

// FuzzParseHolders checks that every record ParseHolders accepts encodes
// back to one that parses to the same holders.
func FuzzParseHolders(f *testing.F) {
	f.Add([]byte("holder a1 n1\nholder b2 n2\n"))
	f.Add([]byte("holder  a1\tn1 \r\n\n"))
	f.Add([]byte("127.0.0.1:1234\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		hs, err := chain.ParseHolders(data)
		if err != nil {
			return
		}
		again, err := chain.ParseHolders(hs.Encode())
		if err != nil || !slices.Equal(again, hs) {
			t.Fatalf("%q parsed to %v, which encodes to %q, which parses to %v, %v", data, hs, hs.Encode(), again, err)
		}
	})
}

// holderNode is a Machine that tracks holders, alone in its first view,
// its session leased for an hour.
func holderNode(t *testing.T, id, name string) (*chain.Machine, mapStore) {
	t.Helper()
	st := mapStore{}
	m := chain.NewMachine(name, st, 2*time.Second)
	m.TrackHolders(id)
	now := time.Now()
	m.SetSessionLease(now.Add(time.Hour))
	m.Tick(now)
	return m, st
}

// install brings the record in line for the view, as the driver does,
// tells m the result and installs the view.
func install(t *testing.T, m *chain.Machine, hs chain.Holders, view ...chain.Member) chain.Holders {
	t.Helper()
	next, _ := m.PlanHolders(hs, view)
	m.SetHolders(next)
	if err := m.SetView(view); err != nil {
		t.Fatalf("%s: SetView after PlanHolders: %v", m.Self(), err)
	}
	return next
}

func put(t *testing.T, m *chain.Machine, key, value string) {
	t.Helper()
	seq, _, err := m.ClientWrite(&codec.WriteT{Op: codec.OpPut, Key: key, Value: []byte(value)})
	if err != nil || m.Committed() < seq {
		t.Fatalf("put %s=%s at %s: seq %d, committed %d, %v", key, value, m.Self(), seq, m.Committed(), err)
	}
}

// drainingNode returns a Machine of process "A", listed as node a, that
// leads and drains, with a log if journal.
func drainingNode(t *testing.T, journal bool) *chain.Machine {
	m, _ := holderNode(t, "A", "a")
	if journal {
		m.EnableJournal()
	}
	install(t, m, nil, member("a"))
	m.Drain()
	return m
}

func member(name string) chain.Member { return chain.Member{Name: name, Addr: "127.0.0.1:1"} }

func TestPlanHolders(t *testing.T) {
	a, b, c := member("a"), member("b"), member("c")
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T) *chain.Machine // a Machine of process "A"
		hs    chain.Holders
		view  []chain.Member
		want  chain.Holders
	}{{
		name:  "first node of a new chain lists itself",
		setup: func(t *testing.T) *chain.Machine { m, _ := holderNode(t, "A", "a"); return m },
		view:  []chain.Member{a},
		want:  chain.Holders{{ID: "A", Name: "a"}},
	}, {
		name: "live node drops the nodes the view lacks",
		setup: func(t *testing.T) *chain.Machine {
			m, _ := holderNode(t, "A", "a")
			install(t, m, nil, a)
			return m
		},
		hs:   chain.Holders{{ID: "A", Name: "a"}, {ID: "B", Name: "b"}, {ID: "C", Name: "c"}},
		view: []chain.Member{a, c},
		want: chain.Holders{{ID: "A", Name: "a"}, {ID: "C", Name: "c"}},
	}, {
		name: "node that may not lead changes nothing",
		setup: func(t *testing.T) *chain.Machine {
			m, _ := holderNode(t, "A", "a")
			return m
		},
		hs:   chain.Holders{{ID: "B", Name: "b-old"}},
		view: []chain.Member{a, b},
		want: chain.Holders{{ID: "B", Name: "b-old"}},
	}, {
		name: "listed node back under a new name renames its entry, and drops no one",
		setup: func(t *testing.T) *chain.Machine {
			m, _ := holderNode(t, "A", "a-old")
			install(t, m, nil, member("a-old"))
			m.Rejoin("a")
			return m
		},
		hs:   chain.Holders{{ID: "B", Name: "b-old"}, {ID: "A", Name: "a-old"}},
		view: []chain.Member{b, a},
		want: chain.Holders{{ID: "B", Name: "b-old"}, {ID: "A", Name: "a"}},
	}, {
		name: "listed node back first leads, renames its entry and drops the absent",
		setup: func(t *testing.T) *chain.Machine {
			m, _ := holderNode(t, "A", "a-old")
			install(t, m, nil, member("a-old"))
			m.Rejoin("a")
			return m
		},
		hs:   chain.Holders{{ID: "B", Name: "b-old"}, {ID: "A", Name: "a-old"}},
		view: []chain.Member{a},
		want: chain.Holders{{ID: "A", Name: "a"}},
	}, {
		name: "node whose table a snapshot began to replace keeps its entry's name",
		setup: func(t *testing.T) *chain.Machine {
			m, _ := holderNode(t, "A", "a-old")
			install(t, m, nil, member("a-old"))
			m.Rejoin("a")
			install(t, m, chain.Holders{{ID: "B", Name: "b"}, {ID: "A", Name: "a-old"}}, b, a)
			if err := m.Snapshot("b", "a", true, nil, nil, nil); err != nil {
				t.Fatal(err)
			}
			return m
		},
		hs:   chain.Holders{{ID: "B", Name: "b"}, {ID: "A", Name: "a-old"}},
		view: []chain.Member{b, a},
		want: chain.Holders{{ID: "B", Name: "b"}, {ID: "A", Name: "a-old"}},
	}, {
		name:  "draining node takes itself off",
		setup: func(t *testing.T) *chain.Machine { return drainingNode(t, false) },
		hs:    chain.Holders{{ID: "A", Name: "a"}, {ID: "B", Name: "b"}},
		view:  []chain.Member{a, b},
		want:  chain.Holders{{ID: "B", Name: "b"}},
	}, {
		name:  "draining node without a log, the last listed, takes itself off",
		setup: func(t *testing.T) *chain.Machine { return drainingNode(t, false) },
		hs:    chain.Holders{{ID: "A", Name: "a"}},
		view:  []chain.Member{a, b},
		want:  chain.Holders{},
	}, {
		name:  "draining node with a log takes itself off while others are listed",
		setup: func(t *testing.T) *chain.Machine { return drainingNode(t, true) },
		hs:    chain.Holders{{ID: "A", Name: "a"}, {ID: "B", Name: "b"}},
		view:  []chain.Member{a, b},
		want:  chain.Holders{{ID: "B", Name: "b"}},
	}, {
		name:  "draining node with a log, the last listed, keeps its entry",
		setup: func(t *testing.T) *chain.Machine { return drainingNode(t, true) },
		hs:    chain.Holders{{ID: "A", Name: "a"}},
		view:  []chain.Member{a, b},
		want:  chain.Holders{{ID: "A", Name: "a"}},
	}, {
		name: "node not in the view changes nothing",
		setup: func(t *testing.T) *chain.Machine {
			m, _ := holderNode(t, "A", "a")
			install(t, m, nil, a)
			return m
		},
		hs:   chain.Holders{{ID: "A", Name: "a"}, {ID: "B", Name: "b"}},
		view: []chain.Member{b},
		want: chain.Holders{{ID: "A", Name: "a"}, {ID: "B", Name: "b"}},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			m := tc.setup(t)
			got, changed := m.PlanHolders(tc.hs, tc.view)
			if !slices.Equal(got, tc.want) || changed != !slices.Equal(tc.hs, tc.want) {
				t.Errorf("PlanHolders(%v, %v) = %v, %v; want %v (%s)", tc.hs, tc.view, got, changed, tc.want, m)
			}
		})
	}
}

// A live node refuses a view that lacks a listed node until the record no
// longer lists it: it would commit writes that node never sees.
func TestSetViewWaitsForTheRecord(t *testing.T) {
	m, _ := holderNode(t, "A", "a")
	hs := install(t, m, nil, member("a"), member("b"))
	hs = append(hs, chain.Holder{ID: "B", Name: "b"})
	m.SetHolders(hs)
	err := m.SetView([]chain.Member{member("a")})
	if !errors.Is(err, chain.ErrStale) {
		t.Fatalf("SetView without b while the record lists b: %v, want ErrStale", err)
	}
	if succ, _ := m.Successor(); succ.Name != "b" {
		t.Errorf("after the refused view the successor is %q, want b still", succ.Name)
	}
	install(t, m, hs, member("a"))
	if succ, _ := m.Successor(); succ.Name != "" {
		t.Errorf("after the record dropped b the successor is %q, want none", succ.Name)
	}
}

// TestMachineStaleRejoinerYields: s was dropped from the chain before f
// applied k=v2, which the chain then acknowledged, so the record lists f
// and not s; then every session expired and s registered again first. s
// must neither serve nor take writes with its older table, and must make
// way for f, which leads with k=v2; s then takes f's table.
func TestMachineStaleRejoinerYields(t *testing.T) {
	s, sst := holderNode(t, "S", "s")
	install(t, s, nil, member("s"))
	put(t, s, "k", "v1")
	f, fst := holderNode(t, "F", "f")
	hs := install(t, f, nil, member("f"))
	put(t, f, "k", "v1")
	put(t, f, "k", "v2")
	// As the chain left them: s dropped, f live and listed alone.
	if !slices.Equal(hs, chain.Holders{{ID: "F", Name: "f"}}) {
		t.Fatalf("record: %v, want f alone", hs)
	}

	// Every session expired; s registers again first.
	s.Rejoin("s2")
	f.Rejoin("f2")
	hs = install(t, s, hs, member("s2"))
	if err := s.CanWrite(); !errors.Is(err, chain.ErrUnavailable) {
		t.Errorf("s, stale and first, takes writes: CanWrite = %v (%s)", err, s)
	}
	if err := s.CanRead(time.Now()); err == nil {
		t.Errorf("s, stale and first, answers reads with k=%s", sst["k"])
	}
	if waiting, ok := s.Waiting(); !ok || !slices.Equal(waiting, hs) {
		t.Errorf("s waits: %v for %v, want true for %v", ok, waiting, hs)
	}
	if s.ShouldYield() {
		t.Errorf("s yields while no holder is registered after it")
	}

	// f registers after s and renames its entry; s then makes way.
	view := []chain.Member{member("s2"), member("f2")}
	hs = install(t, f, hs, view...)
	hs = install(t, s, hs, view...)
	if !s.ShouldYield() {
		t.Fatalf("s does not yield to f, listed and registered after it (record %v, %s)", hs, s)
	}
	s.Rejoin("s3")
	view = []chain.Member{member("f2"), member("s3")}
	hs = install(t, f, hs, view...)
	install(t, s, hs, view...)
	if err := f.CanWrite(); err != nil {
		t.Errorf("f, listed, first after s yielded: CanWrite = %v (%s)", err, f)
	}
	_, gen := f.Successor()
	hello, err := s.Hello("f2", "s3")
	if err != nil {
		t.Fatal(err)
	}
	act, err := f.SuccessorHello(gen, hello)
	if err != nil || !act.Snapshot {
		t.Errorf("f links to s: %+v, %v; want a snapshot over s's stale table", act, err)
	}
	if fst["k"] != "v2" {
		t.Errorf("f's k = %q, want the acknowledged v2", fst["k"])
	}
}

// The first node of a new chain has lost nothing; a node that rejoins
// while a snapshot was replacing its table and then leads has.
func TestDataLost(t *testing.T) {
	m, _ := holderNode(t, "A", "")
	m.Rejoin("a")
	install(t, m, nil, member("a"))
	if m.DataLost() {
		t.Errorf("the first node of a new chain reports lost data (%s)", m)
	}

	s, _ := holderNode(t, "S", "")
	s.Rejoin("s")
	install(t, s, nil, member("b"), member("s"))
	if err := s.Snapshot("b", "s", true, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	s.Rejoin("s2")
	install(t, s, nil, member("s2"))
	if !s.DataLost() {
		t.Errorf("a node that leads with half a snapshot does not report lost data (%s)", s)
	}
}
