package durable_test

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chaintable/chaintable/codec"
	"github.com/chaintable/chaintable/diskfs"
	"github.com/chaintable/chaintable/durable"
	"github.com/chaintable/chaintable/srv"
	"github.com/chaintable/chaintable/wal"
)

// memMember is a chain node whose data dir lives on a simulated disk.
type memMember struct {
	*member
	mem *diskfs.Mem
}

func startMem(t *testing.T, name string, mem *diskfs.Mem, opts durable.Options) *memMember {
	t.Helper()
	opts.WAL.SegmentSize = 16 << 10
	return &memMember{member: openOn(t, mem, "/data", name, opts), mem: mem}
}

// crashStop cuts the member's power: its disk keeps only what was synced,
// and the process is gone. It returns the disk as a restart finds it.
func (m *memMember) crashStop(rng *rand.Rand) *diskfs.Mem {
	after := m.mem.Crash(rng)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m.server.Stop(ctx)
	m.node.Close()
	m.log.Close()
	m.server = nil
	return after
}

func members(ms []*memMember) []*member {
	var out []*member
	for _, m := range ms {
		out = append(out, m.member)
	}
	return out
}

// loadPuts runs clients that put unique keys at addr until stop is
// closed, each on its own connection, and returns the writes that were
// acknowledged.
func loadPuts(addr string, clients int, round int, stop <-chan struct{}) func() map[string]string {
	var mu sync.Mutex
	acked := make(map[string]string)
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				return
			}
			defer conn.Close()
			rd := bufio.NewReader(conn)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprintf("r%d-c%d-%d", round, c, i)
				val := fmt.Sprintf("v%d", i)
				b, _ := codec.AppendMessage(nil, codec.PutRequest(key, []byte(val)))
				conn.SetDeadline(time.Now().Add(2 * time.Second))
				if _, err := conn.Write(b); err != nil {
					return
				}
				reply := new(codec.MessageT)
				if err := codec.ReadMessage(rd, codec.DefaultMaxFrame, reply); err != nil {
					return
				}
				if reply.Opcode != codec.OpPut+1 {
					return
				}
				mu.Lock()
				acked[key] = val
				mu.Unlock()
			}
		}()
	}
	return func() map[string]string {
		wg.Wait()
		return acked
	}
}

func tableOf(tb *srv.Table) map[string]string {
	out := make(map[string]string)
	for _, e := range tb.Entries() {
		out[e.Key] = string(e.Value)
	}
	return out
}

func diffTables(a, b map[string]string) string {
	var d []string
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			d = append(d, fmt.Sprintf("%s: %q vs %q", k, v, w))
		}
	}
	for k, w := range b {
		if _, ok := a[k]; !ok {
			d = append(d, fmt.Sprintf("%s: missing vs %q", k, w))
		}
	}
	sort.Strings(d)
	if len(d) > 10 {
		d = append(d[:10], fmt.Sprintf("... %d in all", len(d)))
	}
	return fmt.Sprint(d)
}

// TestAttackPowerCutChain: a chain of three under load from several
// clients loses power on every node at once (each disk keeps only what it
// synced), again and again, and every time restarts from its data dirs:
// under always and batch, every acknowledged write must be back, and once
// the chain has caught up every member's table must equal the head's.
// Small segments and frequent periodic snapshots put the crash points in
// the middle of snapshot saves and log releases too.
func TestAttackPowerCutChain(t *testing.T) {
	for _, mode := range []wal.Mode{wal.Always, wal.Batch} {
		t.Run(mode.String(), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(12, uint64(mode)))
			opts := durable.Options{Mode: mode, SnapshotEvery: 40}
			mems := []*diskfs.Mem{diskfs.NewMem(), diskfs.NewMem(), diskfs.NewMem()}
			all := make(map[string]string)
			for round := range 4 {
				var ms []*memMember
				for i, mem := range mems {
					ms = append(ms, startMem(t, fmt.Sprintf("r%d-n%d", round, i), mem, opts))
				}
				setViews(members(ms)...)
				// A client writes as soon as the head takes writes; every
				// write acknowledged before the last cut is then readable at
				// every member, the members' tables agree, and the chain
				// serves the new write everywhere.
				key := fmt.Sprintf("start%d", round)
				put(t, ms[0].member, key, "x")
				for _, m := range ms {
					eventually(t, "every acknowledged write readable at "+m.name, func() error {
						var bad []string
						for k, v := range all {
							if got, err := get(t, m.member, k); err != nil || got != v {
								bad = append(bad, fmt.Sprintf("%s=%q (%v), want %q", k, got, err, v))
							}
						}
						if len(bad) > 0 {
							sort.Strings(bad)
							return fmt.Errorf("%d of %d acknowledged writes not read; table holds %d keys; e.g. %v", len(bad), len(all), ms[0].table.Size(), bad[:min(2, len(bad))])
						}
						return nil
					})
				}
				eventually(t, "members agree", func() error {
					head := tableOf(ms[0].table)
					for _, m := range ms[1:] {
						if d := diffTables(head, tableOf(m.table)); d != "[]" {
							return fmt.Errorf("%s vs %s: %s", ms[0].name, m.name, d)
						}
					}
					return nil
				})
				stop := make(chan struct{})
				wait := loadPuts(ms[0].server.Addr(), 4, round, stop)
				time.Sleep(time.Duration(50+rng.IntN(250)) * time.Millisecond)
				for i, m := range ms {
					mems[i] = m.crashStop(rng)
				}
				close(stop)
				acked := wait()
				t.Logf("round %d: %d writes acknowledged", round, len(acked))
				for k, v := range acked {
					all[k] = v
				}
			}
		})
	}
}

// TestAttackSnapshotAtReportedSeq: a restarted tail is ahead of the new
// head (it logged write 5, which the head lost), so the head sends it a
// snapshot as of 4, and then the head's own write 5. The tail's log had
// reported 5 durable before the snapshot; the log's reporter tells the
// node only a durable point that differs from the last one it told, so
// when the new write 5 reached the disk before the snapshot was saved it
// says nothing once the save is done, and the node, whose durable point
// the snapshot reset, never commits 5: the client's put hangs, and reads
// at the tail wait, until some later write arrives. (The whole-chain
// power cuts of TestAttackPowerCutChain run into this by themselves: a
// live middle with committed=0, its reads never answered.)
func TestAttackSnapshotAtReportedSeq(t *testing.T) {
	opts := durable.Options{Mode: wal.Batch}
	dirB := t.TempDir()
	x := start(t, "x", t.TempDir(), opts)
	b := start(t, "b", dirB, opts)
	setViews(x, b)
	putKeys(t, x, "k", 5, "old")
	x.stop()
	b.stop()
	// A new head (its log lost the last write, say) has four writes.
	a := start(t, "a", t.TempDir(), opts)
	setViews(a)
	putKeys(t, a, "j", 4, "new")
	// b2's save of the snapshot is held back until the head's write 5
	// is on b2's disk.
	var armed atomic.Bool
	armed.Store(true)
	blocked, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	fsys := &gateFS{FS: diskfs.OS{}, gate: func(op, name string) {
		if op == "create" && strings.HasSuffix(name, ".snap.tmp") && armed.Load() {
			once.Do(func() { close(blocked) })
			<-release
		}
	}}
	b = openOn(t, fsys, dirB, "b2", opts)
	setViews(a, b)
	select {
	case <-blocked:
	case <-time.After(10 * time.Second):
		t.Fatalf("b2 never saved a snapshot: %s", b.node.State())
	}
	result := make(chan error, 1)
	go func() {
		r, err := do(t, a.server.Addr(), codec.PutRequest("j4", []byte("new")))
		if err == nil && r.Opcode != codec.OpPut+1 {
			err = fmt.Errorf("answered %v", r)
		}
		result <- err
	}()
	eventually(t, "b2 applies write 5", func() error {
		if st := b.node.State(); !strings.Contains(st, "applied=5 ") {
			return fmt.Errorf("b2: %s", st)
		}
		return nil
	})
	time.Sleep(300 * time.Millisecond) // write 5 synced at b2
	armed.Store(false)
	close(release)
	select {
	case err := <-result:
		if err != nil {
			t.Fatalf("put j4 (write 5) at the head: %v; a: %s; b2: %s", err, a.node.State(), b.node.State())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("put j4 (write 5) at the head never answered; a: %s; b2: %s", a.node.State(), b.node.State())
	}
}

// TestAttackRetryAfterRestart: a client's exactly-once records survive a
// restart of the whole chain: a retry of a write it was answered for
// before the restart is answered with the original outcome and not
// applied again, whether the records come back from the log or from a
// snapshot.
func TestAttackRetryAfterRestart(t *testing.T) {
	for _, every := range []int{1, 3, 1000} {
		t.Run(fmt.Sprintf("snapshot every %d", every), func(t *testing.T) {
			opts := durable.Options{Mode: wal.Batch, SnapshotEvery: every}
			dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
			var ms []*member
			for i, d := range dirs {
				ms = append(ms, start(t, fmt.Sprintf("a%d", i), d, opts))
			}
			setViews(ms...)
			write := func(m *member, op codec.MessageT_Opcode, id uint64, value string) *codec.MessageT {
				t.Helper()
				req := codec.PutRequest("k", []byte(value))
				if op == codec.OpDel {
					req = codec.DelRequest("k")
				}
				req.ClientId, req.RequestId, req.FirstUnacked = 77, id, 1
				r, err := do(t, m.server.Addr(), req)
				if err != nil {
					t.Fatalf("write %d at %s: %v", id, m.name, err)
				}
				return r
			}
			write(ms[0], codec.OpPut, 1, "one")
			write(ms[0], codec.OpDel, 2, "")
			write(ms[0], codec.OpPut, 3, "three")
			putKeys(t, ms[0], "other", 5, "x")
			ms = restartAll(t, ms, dirs, opts)
			// The del (request 2) is retried: it found the key then, and
			// must not delete "three" now.
			r := write(ms[0], codec.OpDel, 2, "")
			if r.Opcode != codec.OpDel+1 {
				t.Errorf("retried del after the restart answered %v, want the original outcome (found)", r)
			}
			for _, m := range ms {
				eventually(t, "k at "+m.name, func() error {
					if got, err := get(t, m, "k"); err != nil || got != "three" {
						return fmt.Errorf("k = %q, %v; want %q (a retried write applied twice)", got, err, "three")
					}
					return nil
				})
			}
		})
	}
}

// TestAttackLateDuplicateAfterRestart: a client's write arrives twice, the
// second copy late (a retry over another connection, say), after the
// client went on and after the whole chain restarted. Before the restart
// the head refuses it as too old (the client's first unacknowledged id
// is past it); after a restart from a snapshot it must still, not apply
// the write a second time over the client's later one.
func TestAttackLateDuplicateAfterRestart(t *testing.T) {
	opts := durable.Options{Mode: wal.Batch, SnapshotEvery: 1}
	dirs := []string{t.TempDir(), t.TempDir()}
	var ms []*member
	for i, d := range dirs {
		ms = append(ms, start(t, fmt.Sprintf("a%d", i), d, opts))
	}
	setViews(ms...)
	write := func(m *member, id, first uint64, value string) *codec.MessageT {
		t.Helper()
		req := codec.PutRequest("k", []byte(value))
		req.ClientId, req.RequestId, req.FirstUnacked = 78, id, first
		r, err := do(t, m.server.Addr(), req)
		if err != nil {
			t.Fatalf("write %d at %s: %v", id, m.name, err)
		}
		return r
	}
	write(ms[0], 1, 1, "one")
	write(ms[0], 2, 2, "two")
	if r := write(ms[0], 1, 1, "one"); r.Opcode == codec.OpPut+1 {
		t.Logf("the late copy before the restart answered %v", r)
	}
	putKeys(t, ms[0], "other", 3, "x")
	ms = restartAll(t, ms, dirs, opts)
	r := write(ms[0], 1, 1, "one")
	for _, m := range ms {
		eventually(t, "k at "+m.name, func() error {
			if got, err := get(t, m, "k"); err != nil || got != "two" {
				return fmt.Errorf("k = %q, %v; want %q: the late copy of request 1 (answered %v) was applied after the restart", got, err, "two", r)
			}
			return nil
		})
	}
}

// gateFS is a file system that asks gate before creating a file and
// before syncing one, outside the wrapped file system's locks, so that a
// test can hold an operation back while others go on.
type gateFS struct {
	diskfs.FS
	gate func(op, name string)
}

type gateFile struct {
	diskfs.File
	fs   *gateFS
	name string
}

func (g *gateFS) Create(name string) (diskfs.File, error) {
	g.gate("create", name)
	f, err := g.FS.Create(name)
	if err != nil {
		return nil, err
	}
	return &gateFile{f, g, name}, nil
}

func (g *gateFS) OpenWrite(name string) (diskfs.File, error) {
	f, err := g.FS.OpenWrite(name)
	if err != nil {
		return nil, err
	}
	return &gateFile{f, g, name}, nil
}

func (f *gateFile) Sync() error {
	f.fs.gate("sync", f.name)
	return f.File.Sync()
}

// TestAttackSnapshotAheadOfLog: a periodic snapshot reads the table while
// the node goes on applying writes, and so may hold writes after its seq.
// The node applies a write to the table before it appends it to the log,
// so a write can be in the table, and in the snapshot, and not yet
// appended: the snapshot must wait for every write the node applied by
// the end of its scan, not only those appended. When it waited only for
// those appended and the power was cut, the snapshot on disk held a write
// the log never got, never acknowledged, and the node restarted serving
// it (a phantom value), at a seq another head may give to another write.
func TestAttackSnapshotAheadOfLog(t *testing.T) {
	mem := diskfs.NewMem()
	var armSnap, armLog atomic.Bool
	snapGate := make(chan struct{})
	logBlocked := make(chan struct{})
	never := make(chan struct{})
	var once sync.Once
	fsys := &gateFS{FS: mem, gate: func(op, name string) {
		switch {
		case op == "create" && strings.HasSuffix(name, ".snap.tmp") && armSnap.Load():
			<-snapGate
		case op == "sync" && strings.Contains(name, ".wal") && armLog.Load():
			once.Do(func() { close(logBlocked) })
			<-never
		}
	}}
	opts := durable.Options{Mode: wal.Always, SnapshotEvery: 5}
	a := openOn(t, fsys, "/data", "a", opts)
	// Registered after a's stop, so it runs first: the crashed node's
	// blocked goroutines go on (on a disk that fails everything) and a stops.
	t.Cleanup(func() { close(never) })
	setViews(a)
	putKeys(t, a, "k", 4, "v")
	armSnap.Store(true)
	put(t, a, "k4", "v") // write 5: the snapshot as of 5 begins, and waits to create its file
	armLog.Store(true)
	go do(t, a.server.Addr(), codec.PutRequest("phantom", []byte("never acknowledged")))
	select {
	case <-logBlocked: // write 6 is in the table, its append stuck in the log's sync
	case <-time.After(5 * time.Second):
		t.Fatal("write 6 never reached the log")
	}
	armSnap.Store(false)
	close(snapGate)
	// Give the snapshot time to be saved, which it must not be while write
	// 6, which it may hold, is not on disk in the log.
	time.Sleep(500 * time.Millisecond)
	t.Logf("snapshots saved before the power cut: %d", a.log.SnapshotsSaved())
	after := mem.Crash(rand.New(rand.NewPCG(1, 2)))
	// The crashed process is gone; its goroutines stay blocked on the old
	// disk until the test ends.
	b := openOn(t, after, "/data", "b", opts)
	setViews(b)
	if got, err := get(t, b, "phantom"); err == nil {
		t.Errorf("after the power cut the node serves phantom = %q, a write that was never acknowledged nor logged (%s)", got, b.node.State())
	}
}

// TestAttackTwoHistoriesAtOneSeq: a node that restarts from a periodic
// snapshot, with nothing logged after it, and a predecessor that has just
// installed a snapshot from a new head, are both at write 5, but of
// different histories: b's five writes came from a head that died with
// them (the power cuts of TestAttackPowerCutChain get here by
// themselves). Neither has a logged write at 5 to tell its epoch by, so
// the snapshots must carry it; without it both said 0, p took b for a
// copy of its own history, and b kept the dead head's writes, without
// the new head's, for good.
func TestAttackTwoHistoriesAtOneSeq(t *testing.T) {
	opts := durable.Options{Mode: wal.Batch, SnapshotEvery: 5}
	dirB := t.TempDir()
	x := start(t, "x", t.TempDir(), opts)
	b := start(t, "b", dirB, opts)
	setViews(x, b)
	putKeys(t, x, "k", 5, "old")
	eventually(t, "b saves a snapshot as of 5", func() error {
		if n := b.log.SnapshotsSaved(); n == 0 {
			return fmt.Errorf("b saved %d snapshots: %s", n, b.node.State())
		}
		return nil
	})
	x.stop()
	b.stop()

	a := start(t, "a", t.TempDir(), opts)
	setViews(a)
	putKeys(t, a, "j", 5, "new")
	p := start(t, "p", t.TempDir(), opts)
	b = start(t, "b2", dirB, opts)
	setViews(a, p, b)
	eventually(t, "b2 holds the new head's history", func() error {
		if d := diffTables(tableOf(a.table), tableOf(b.table)); d != "[]" {
			return fmt.Errorf("a vs b2: %s (%s)", d, b.node.State())
		}
		return nil
	})
}
