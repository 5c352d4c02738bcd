package durable_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/chaintable/chaintable/chain"
	"github.com/chaintable/chaintable/codec"
	"github.com/chaintable/chaintable/diskfs"
	"github.com/chaintable/chaintable/durable"
	"github.com/chaintable/chaintable/srv"
	"github.com/chaintable/chaintable/wal"
)

// member is a chain node with a data dir, on loopback, whose membership
// the test feeds by hand.
type member struct {
	name   string
	dir    string
	node   *chain.Node
	log    *durable.Log
	server *srv.Server
	table  *srv.Table
}

// testSegment is the tests' log segment size: the default 64 MiB, made
// and read whole, would only slow them down.
const testSegment = 256 << 10

func logger() *slog.Logger {
	if os.Getenv("CHAIN_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func start(t *testing.T, name, dir string, opts durable.Options) *member {
	t.Helper()
	return startLogged(t, name, dir, opts, nil)
}

// startLogged is start, with the node's logs (info and above) to w if
// not nil.
func startLogged(t *testing.T, name, dir string, opts durable.Options, w io.Writer) *member {
	t.Helper()
	return openLogged(t, diskfs.OS{}, dir, name, opts, w)
}

// openOn starts a node named name on the data dir dir of fsys, with log
// segments of opts.WAL.SegmentSize, testSegment if 0. Its cleanup stops it.
func openOn(t *testing.T, fsys diskfs.FS, dir, name string, opts durable.Options) *member {
	t.Helper()
	return openLogged(t, fsys, dir, name, opts, nil)
}

// openLogged is openOn, with the node's logs (info and above) to w if not
// nil.
func openLogged(t *testing.T, fsys diskfs.FS, dir, name string, opts durable.Options, w io.Writer) *member {
	t.Helper()
	store, _ := srv.NewStore(8)
	if opts.WAL.SegmentSize == 0 {
		opts.WAL.SegmentSize = testSegment
	}
	opts.Logger = logger().With("node", name)
	if w != nil {
		opts.Logger = slog.New(slog.NewTextHandler(w, nil)).With("node", name)
	}
	l, err := durable.Open(fsys, dir, store.Table, opts)
	if err != nil {
		t.Fatal(err)
	}
	n, err := chain.OpenNode(chain.NodeConfig{Store: store, Log: l, Logger: opts.Logger, LeaseTerm: 300 * time.Millisecond, HoldTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	l.Start(n)
	s, err := srv.Start(srv.Config{Addr: "127.0.0.1:0", Handler: n, Stats: store.Stats, Logger: logger(), EventLoops: 2})
	if err != nil {
		t.Fatal(err)
	}
	m := &member{name: name, dir: dir, node: n, log: l, server: s, table: store.Table}
	n.Rejoin(name)
	t.Cleanup(m.stop)
	return m
}

func (m *member) stop() {
	if m.server == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m.server.Stop(ctx)
	m.node.Close()
	m.log.Close()
	m.server = nil
}

func setViews(ms ...*member) {
	var view []chain.Member
	for _, m := range ms {
		view = append(view, chain.Member{Name: m.name, Addr: m.server.Addr()})
	}
	for _, m := range ms {
		m.node.SetView(view)
	}
}

func do(t *testing.T, addr string, req *codec.MessageT) (*codec.MessageT, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	b, _ := codec.AppendMessage(nil, req)
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write(b); err != nil {
		return nil, err
	}
	reply := new(codec.MessageT)
	if err := codec.ReadMessage(bufio.NewReader(conn), codec.DefaultMaxFrame, reply); err != nil {
		return nil, err
	}
	return reply, nil
}

func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func put(t *testing.T, head *member, key, value string) {
	t.Helper()
	r, err := do(t, head.server.Addr(), codec.PutRequest(key, []byte(value)))
	if err != nil || r.Opcode != codec.OpPut+1 {
		t.Fatalf("put %s at %s: %v %v (%s)", key, head.name, r, err, head.node.State())
	}
}

// restartAll stops every member of ms and starts the chain again on
// dirs, as b0, b1 and so on, and puts a key through its head.
func restartAll(t *testing.T, ms []*member, dirs []string, opts durable.Options) []*member {
	t.Helper()
	for _, m := range ms {
		m.stop()
	}
	ms = ms[:0]
	for i, d := range dirs {
		ms = append(ms, start(t, fmt.Sprintf("b%d", i), d, opts))
	}
	setViews(ms...)
	put(t, ms[0], "after", "restart")
	return ms
}

// putKeys puts n keys, prefix0 to prefix<n-1>, all of value value.
func putKeys(t *testing.T, head *member, prefix string, n int, value string) {
	t.Helper()
	for i := range n {
		put(t, head, fmt.Sprintf("%s%d", prefix, i), value)
	}
}

func get(t *testing.T, m *member, key string) (string, error) {
	r, err := do(t, m.server.Addr(), codec.GetRequest(key))
	if err != nil {
		return "", fmt.Errorf("get %s at %s: %w (%s)", key, m.name, err, m.node.State())
	}
	if r.Opcode != codec.OpGet+1 {
		return "", fmt.Errorf("get %s at %s: %v (%s)", key, m.name, r, m.node.State())
	}
	return string(r.Value), nil
}

// TestRestartChain: a chain of three with data dirs takes writes, every
// node stops and starts again from its dir, and the first leads with what
// it logged while the others catch up: every acknowledged write is back.
func TestRestartChain(t *testing.T) {
	for _, mode := range []wal.Mode{wal.Always, wal.Batch, wal.None} {
		t.Run(mode.String(), func(t *testing.T) {
			opts := durable.Options{Mode: mode, SnapshotEvery: 7}
			dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
			var ms []*member
			for i, d := range dirs {
				ms = append(ms, start(t, fmt.Sprintf("a%d", i), d, opts))
			}
			setViews(ms...)
			for i := range 50 {
				put(t, ms[0], fmt.Sprintf("k%d", i%20), fmt.Sprintf("v%d", i))
			}
			ms = restartAll(t, ms, dirs, opts)
			for _, m := range ms {
				eventually(t, "reads at "+m.name, func() error {
					for i := 30; i < 50; i++ {
						want := fmt.Sprintf("v%d", i)
						if got, err := get(t, m, fmt.Sprintf("k%d", i%20)); err != nil || got != want {
							return fmt.Errorf("k%d = %q, %v; want %q", i%20, got, err, want)
						}
					}
					return nil
				})
			}
		})
	}
}

// TestDiskFailure: once the log's disk fails (ENOSPC on every write and
// sync), the node acknowledges no write, neither one in flight nor a new
// one: a client gets no OK, only its connection closed, and the node says
// why in its log.
func TestDiskFailure(t *testing.T) {
	mem := diskfs.NewMem()
	var failing atomic.Bool
	mem.Fault = func(op, name string) error {
		if failing.Load() && (op == "write" || op == "sync" || op == "allocate") {
			return &fs.PathError{Op: op, Path: name, Err: syscall.ENOSPC}
		}
		return nil
	}
	var logs bytes.Buffer
	var mu sync.Mutex
	store, _ := srv.NewStore(8)
	lg := slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil))
	l, err := durable.Open(mem, "/data", store.Table, durable.Options{Mode: wal.Batch, Logger: lg, WAL: wal.Options{SegmentSize: testSegment}})
	if err != nil {
		t.Fatal(err)
	}
	n, err := chain.OpenNode(chain.NodeConfig{Store: store, Log: l, Logger: lg, LeaseTerm: 300 * time.Millisecond, HoldTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	l.Start(n)
	s, err := srv.Start(srv.Config{Addr: "127.0.0.1:0", Handler: n, Stats: store.Stats, Logger: logger(), EventLoops: 2})
	if err != nil {
		t.Fatal(err)
	}
	m := &member{name: "a", node: n, log: l, server: s}
	t.Cleanup(m.stop)
	n.Rejoin("a")
	setViews(m)
	put(t, m, "k", "before")
	failing.Store(true)
	// The first write after the failure was taken before the node knew:
	// its outcome is unknown, so its connection is closed, as a failed
	// head's would be. Every later one from a client that numbers its
	// writes is refused at once, not taken (a course client's waits: see
	// TestAttackCourseClientAtFailedHead).
	var refused []string
	for i := range 3 {
		t0 := time.Now()
		value := fmt.Sprintf("after%d", i)
		req := codec.PutRequest("k", []byte(value))
		req.ClientId, req.RequestId = 7, uint64(i+1)
		r, err := do(t, s.Addr(), req)
		t.Logf("put %d: %v %v after %v", i, r, err, time.Since(t0))
		switch {
		case err != nil && i == 0:
		case err != nil:
			t.Errorf("put %d after the disk failed: %v, want STATUS_DISK_FAILED", i, err)
		case r.Opcode != codec.OpError || r.Status != codec.Status_STATUS_DISK_FAILED:
			t.Errorf("put %d after the disk failed answered %v, want STATUS_DISK_FAILED", i, r)
		default:
			refused = append(refused, value)
			if d := time.Since(t0); d >= 300*time.Millisecond {
				t.Errorf("put %d refused after %v: held, not answered at once", i, d)
			}
		}
	}
	select {
	case <-n.DiskFailed():
	default:
		t.Error("the node does not say its disk failed (Node.DiskFailed)")
	}
	mu.Lock()
	if !strings.Contains(logs.String(), "write-ahead log failed") || !strings.Contains(logs.String(), "no space left") {
		t.Errorf("the node's log does not say the disk failed:\n%s", logs.String())
	}
	mu.Unlock()
	// Back on a working disk, the node holds nothing it refused.
	m.stop()
	failing.Store(false)
	m = openOn(t, mem, "/data", "a2", durable.Options{Mode: wal.Batch})
	setViews(m)
	got, err := get(t, m, "k")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range refused {
		if got == v {
			t.Errorf("k = %q after a restart: a write refused with STATUS_DISK_FAILED was made", got)
		}
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}

// TestRestartCatchesUpFromLog: a tail stopped while the chain takes more
// writes, and started again from its data dir, gets only the writes it
// missed, from its predecessor's log, and no snapshot.
func TestRestartCatchesUpFromLog(t *testing.T) {
	opts := durable.Options{Mode: wal.Batch}
	var mu sync.Mutex
	var logs bytes.Buffer
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	a := start(t, "a", dirs[0], opts)
	b := startLogged(t, "b", dirs[1], opts, lockedWriter{&mu, &logs})
	c := start(t, "c", dirs[2], opts)
	setViews(a, b, c)
	for i := range 50 {
		put(t, a, fmt.Sprintf("k%d", i%20), fmt.Sprintf("v%d", i))
	}
	c.stop()
	setViews(a, b)
	for i := 50; i < 80; i++ {
		put(t, a, fmt.Sprintf("k%d", i%20), fmt.Sprintf("v%d", i))
	}
	c = start(t, "c2", dirs[2], opts)
	setViews(a, b, c)
	put(t, a, "after", "restart")
	eventually(t, "reads at c2", func() error {
		for i := 60; i < 80; i++ {
			want := fmt.Sprintf("v%d", i)
			if got, err := get(t, c, fmt.Sprintf("k%d", i%20)); err != nil || got != want {
				return fmt.Errorf("k%d = %q, %v; want %q", i%20, got, err, want)
			}
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	var linked []string
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "linked to successor") && strings.Contains(line, "succ=c2") {
			linked = append(linked, line)
		}
	}
	if len(linked) == 0 {
		t.Fatalf("b never linked to c2:\n%s", logs.String())
	}
	for _, line := range linked {
		if !strings.Contains(line, "snapshot=false") || !strings.Contains(line, "delta=51") {
			t.Errorf("b linked to c2 with %q, want no snapshot and the delta from 51", line)
		}
	}
}
