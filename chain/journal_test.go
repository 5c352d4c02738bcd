package chain

import (
	"errors"
	"testing"
	"time"

	"github.com/chaintable/chaintable/codec"
	"github.com/chaintable/chaintable/srv"
)

// journalMachine returns a Machine with a log, in the chain as name, with
// a session lease for an hour.
func journalMachine(name string) *Machine {
	store, _ := srv.NewStore(4)
	m := NewMachine("", store, 0)
	m.EnableJournal()
	m.Rejoin(name)
	now := time.Now()
	m.Tick(now)
	m.SetSessionLease(now.Add(time.Hour))
	return m
}

// A head with a log links to a successor that restarted from its own:
// the successor gets only the writes it lacks, from the log, when its last
// write carries the epoch this node's has at that seq; a snapshot when
// the epochs differ (it holds writes a head that failed took, which never
// committed) or the log no longer holds that seq.
func TestSuccessorHelloEpochs(t *testing.T) {
	mine := epochOf("p")
	for _, tc := range []struct {
		name      string
		applied   uint64
		lastEpoch uint64
		logged    Logged
		want      LinkAction
	}{
		{"same last write", 3, mine, Logged{}, LinkAction{Next: 4}},
		{"other epoch at the last write", 3, epochOf("old head"), Logged{}, LinkAction{Snapshot: true, Epoch: mine, Next: 4}},
		{"behind, in the log", 2, mine, Logged{OK: true, Epoch: mine}, LinkAction{Delta: 3, Next: 4}},
		{"behind, other epoch", 2, epochOf("old head"), Logged{OK: true, Epoch: mine}, LinkAction{Snapshot: true, Epoch: mine, Next: 4}},
		{"behind, released from the log", 2, mine, Logged{}, LinkAction{Snapshot: true, Epoch: mine, Next: 4}},
		{"empty, the log from the first write", 0, 0, Logged{OK: true}, LinkAction{Delta: 1, Next: 4}},
		{"empty", 0, 0, Logged{}, LinkAction{Snapshot: true, Epoch: mine, Next: 4}},
		{"epoch unknown at the last write", 3, 0, Logged{}, LinkAction{Snapshot: true, Epoch: mine, Next: 4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := journalMachine("p")
			p, s := Member{Name: "p", Addr: "127.0.0.1:1"}, Member{Name: "s", Addr: "127.0.0.1:2"}
			if err := m.SetView([]Member{p}); err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{"a", "b", "c"} {
				if _, _, err := m.ClientWrite(&codec.WriteT{Op: codec.OpPut, Key: k, Value: []byte("v")}); err != nil {
					t.Fatal(err)
				}
			}
			if ws := m.TakeLogged(); len(ws) != 3 || ws[2].Epoch != mine {
				t.Fatalf("logged %v, want 3 writes stamped with epoch %d", ws, mine)
			}
			if err := m.SetView([]Member{p, s}); err != nil {
				t.Fatal(err)
			}
			_, gen := m.Successor()
			act, err := m.SuccessorHello(gen, HelloReply{Applied: tc.applied, Synced: true, LastEpoch: tc.lastEpoch, Logged: tc.logged})
			if err != nil || act != tc.want {
				t.Errorf("SuccessorHello = %+v, %v; want %+v", act, err, tc.want)
			}
		})
	}
}

// A node that installed a snapshot knows the epoch of the write it is as
// of, and one restarted from a snapshot the epoch the snapshot kept: at
// the same seq, two histories are told apart by them alone, and an
// unknown epoch (0) matches nothing, not even another 0.
func TestSnapshotKeepsItsEpoch(t *testing.T) {
	theirs := epochOf("new head")
	for _, tc := range []struct {
		name      string
		snapEpoch uint64 // the epoch the predecessor's snapshot was as of
		lastEpoch uint64 // the successor's, at the same seq
		resume    bool
	}{
		{"same history", theirs, theirs, true},
		{"another history", theirs, epochOf("dead head"), false},
		{"successor's epoch unknown", theirs, 0, false},
		{"both unknown", 0, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := journalMachine("p")
			h, p, s := Member{Name: "h", Addr: "127.0.0.1:1"}, Member{Name: "p", Addr: "127.0.0.1:2"}, Member{Name: "s", Addr: "127.0.0.1:3"}
			if err := m.SetView([]Member{h, p}); err != nil {
				t.Fatal(err)
			}
			if err := m.Snapshot("h", "p", true, nil, nil, &SnapshotEnd{At: Point{Seq: 5, Epoch: tc.snapEpoch}}); err != nil {
				t.Fatal(err)
			}
			if got := m.Last(); got != (Point{Seq: 5, Epoch: tc.snapEpoch}) {
				t.Fatalf("after the snapshot Last = %+v", got)
			}
			m.SetDurable(5)
			if err := m.SetView([]Member{h, p, s}); err != nil {
				t.Fatal(err)
			}
			_, gen := m.Successor()
			act, err := m.SuccessorHello(gen, HelloReply{Applied: 5, Synced: true, LastEpoch: tc.lastEpoch})
			if err != nil {
				t.Fatal(err)
			}
			if resumed := !act.Snapshot && act.Delta == 0; resumed != tc.resume {
				t.Errorf("SuccessorHello = %+v; resume %v, want %v", act, resumed, tc.resume)
			}
		})
	}
}

// A snapshot read while its sender went on applying writes may hold
// writes after the seq it is as of: until the receiver applied them too,
// its table is the state of no history, so it says it is not synced (a
// new predecessor sends it a snapshot again rather than resume it), and
// neither feeds a successor nor takes writes.
func TestSnapshotAheadOfItsSeq(t *testing.T) {
	m := journalMachine("p")
	h, p, s := Member{Name: "h", Addr: "127.0.0.1:1"}, Member{Name: "p", Addr: "127.0.0.1:2"}, Member{Name: "s", Addr: "127.0.0.1:3"}
	if err := m.SetView([]Member{h, p}); err != nil {
		t.Fatal(err)
	}
	epoch := epochOf("h")
	if err := m.Snapshot("h", "p", true, nil, nil, &SnapshotEnd{At: Point{Seq: 5, Epoch: epoch}, AheadTo: 7}); err != nil {
		t.Fatal(err)
	}
	m.SetDurable(5)
	if hr, _ := m.Hello("h", "p"); hr.Synced {
		t.Errorf("Hello says synced at 5 with a table ahead to 7: %+v", hr)
	}
	if err := m.SetView([]Member{h, p, s}); err != nil {
		t.Fatal(err)
	}
	_, gen := m.Successor()
	if _, err := m.SuccessorHello(gen, HelloReply{Synced: true}); !errors.Is(err, ErrUnavailable) {
		t.Errorf("fed a successor from a table ahead of its seq: %v", err)
	}
	ws := []*codec.WriteT{{Seq: 6, Op: codec.OpPut, Key: "a", Epoch: epoch}, {Seq: 7, Op: codec.OpPut, Key: "b", Epoch: epoch}}
	if _, _, err := m.Replicate("h", "p", ws, false, codec.Grant{}); err != nil {
		t.Fatal(err)
	}
	if hr, _ := m.Hello("h", "p"); !hr.Synced {
		t.Errorf("Hello says not synced once the writes up to 7 are applied: %+v", hr)
	}
}

// A node restarted from its log that is first in the chain but may not
// lead (the holders record lists another node) takes no client write: its
// table may lack committed writes, and a write applied to it would
// diverge from the chain's.
func TestRestoredNodeThatMayNotLeadTakesNoWrites(t *testing.T) {
	store, _ := srv.NewStore(4)
	m := NewMachine("", store, 0)
	m.Restore(Point{}, nil, true)
	if err := m.Replay(&codec.WriteT{Seq: 1, Op: codec.OpPut, Key: "k", Value: []byte("v"), Epoch: epochOf("old")}); err != nil {
		t.Fatal(err)
	}
	m.EnableJournal()
	m.TrackHolders("me")
	m.SetHolders(Holders{{ID: "other", Name: "o1"}})
	m.Rejoin("r")
	now := time.Now()
	m.Tick(now)
	m.SetSessionLease(now.Add(time.Hour))
	if err := m.SetView([]Member{{Name: "r", Addr: "127.0.0.1:1"}}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := m.ClientWrite(&codec.WriteT{Op: codec.OpPut, Key: "k", Value: []byte("new")}); err == nil {
		t.Fatalf("a restored node that may not lead took a write (%s)", m)
	}
	if v, _ := store.Table.Get("k"); string(v) != "v" {
		t.Errorf("k = %q, want the logged v", v)
	}
}

// A node with a log that became live lists itself in the holders record
// only once it has on disk what it had when it became live: a whole-chain
// crash before that would let it lead without writes that committed.
func TestListedOnlyOnceOnDisk(t *testing.T) {
	store, _ := srv.NewStore(4)
	m := NewMachine("", store, 0)
	m.EnableJournal()
	m.TrackHolders("me")
	m.Rejoin("s")
	now := time.Now()
	m.Tick(now)
	m.SetSessionLease(now.Add(time.Hour))
	view := []Member{{Name: "p", Addr: "127.0.0.1:1"}, {Name: "s", Addr: "127.0.0.1:2"}}
	if err := m.SetView(view); err != nil {
		t.Fatal(err)
	}
	if err := m.Snapshot("p", "s", true, []*codec.WriteT{{Op: codec.OpPut, Key: "k", Value: []byte("v")}}, nil, &SnapshotEnd{At: Point{Seq: 5}}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := m.Replicate("p", "s", nil, true, codec.Grant{}); err != nil {
		t.Fatal(err)
	}
	if !m.Live() {
		t.Fatalf("not live after the live marker (%s)", m)
	}
	hs := Holders{{ID: "other", Name: "p"}}
	if next, _ := m.PlanHolders(hs, view); len(next) != 1 {
		t.Errorf("listed itself before the snapshot was on disk: %v", next)
	}
	m.SetDurable(5)
	if next, _ := m.PlanHolders(hs, view); len(next) != 2 {
		t.Errorf("not listed once on disk: %v", next)
	}
}
