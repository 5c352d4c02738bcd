package srv

import (
	"bytes"
	"math/rand/v2"
	"net"
	"os"
	"testing"
	"time"

	"github.com/chaintable/chaintable/codec"
)

// closedSoon reports whether the server closes w's connection within 5s.
func closedSoon(w *wireClient) bool {
	w.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64<<10)
	for {
		if _, err := w.conn.Read(buf); err != nil {
			ne, ok := err.(net.Error)
			return !(ok && ne.Timeout())
		}
	}
}

func TestServerCapsConnections(t *testing.T) {
	s, _ := startStore(t, Config{MaxConns: 5})
	var ws []*wireClient
	for range 5 {
		w := dial(t, s.Addr())
		w.do(codec.Request(codec.OpSize)) // the connection is surely open
		ws = append(ws, w)
	}
	if extra := dial(t, s.Addr()); !closedSoon(extra) {
		t.Fatal("a sixth connection stayed open with MaxConns 5")
	}
	for _, w := range ws {
		if r := w.do(codec.Request(codec.OpSize)); r.Opcode != codec.OpSize+1 {
			t.Fatalf("connection within the cap: %v", r)
		}
	}
}

func TestServerDropsClientThatNeverReads(t *testing.T) {
	// A budget above the cap: the cap, not backpressure, acts.
	s, store := startStore(t, Config{MaxOutbound: 1 << 20, ReplyBudget: 8 << 20})
	store.Table.Put("big", make([]byte, 64<<10))
	greedy := dial(t, s.Addr())
	frame := mustFrame(codec.GetRequest("big"))
	go func() {
		// Up to 64 MiB of replies asked for, none read.
		for range 1000 {
			if _, err := greedy.conn.Write(frame); err != nil {
				return
			}
		}
	}()
	time.Sleep(200 * time.Millisecond)
	other := dial(t, s.Addr())
	start := time.Now()
	if r := other.do(codec.GetRequest("big")); r.Opcode != codec.OpGet+1 {
		t.Fatalf("another client's get: %v", r)
	}
	t.Logf("another client's get took %v while a client did not read", time.Since(start))
	if !closedSoon(greedy) {
		t.Fatal("the server kept a client that never reads its replies")
	}
}

func TestServerClosesIdleConnections(t *testing.T) {
	s, _ := startStore(t, Config{IdleTimeout: 300 * time.Millisecond})
	idle := dial(t, s.Addr())
	busy := dial(t, s.Addr())
	for range 10 {
		busy.do(codec.Request(codec.OpSize))
		time.Sleep(100 * time.Millisecond)
	}
	if !closedSoon(idle) {
		t.Fatal("idle connection still open")
	}
	if r := busy.do(codec.Request(codec.OpSize)); r.Opcode != codec.OpSize+1 {
		t.Fatalf("busy connection: %v", r)
	}
}

func TestServerSurvivesChurnAndGarbage(t *testing.T) {
	s, store := startStore(t, Config{})
	// The first connection of the process starts the Go runtime's poller,
	// whose descriptors stay: count from after it.
	first, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	first.Close()
	fdsBefore := openFDs(t)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		conn, err := net.Dial("tcp", s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		if i%4 == 0 {
			garbage := make([]byte, rng.IntN(300))
			for j := range garbage {
				garbage[j] = byte(rng.Uint32())
			}
			conn.Write(garbage)
		}
		conn.Close()
	}
	w := dial(t, s.Addr())
	if r := w.do(codec.PutRequest("k", []byte("v"))); r.Opcode != codec.OpPut+1 {
		t.Fatalf("put after churn: %v", r)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := w.do(codec.Request(codec.OpStats)).Stats
		if st.GetClients() == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d clients counted with one connection open", st.GetClients())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if store.Table.Size() != 1 {
		t.Fatalf("garbage changed the table: %d keys", store.Table.Size())
	}
	// The one connection still open counts twice here: both of its ends
	// are in this process.
	// Closing is asynchronous on both sides: wait for the count to settle.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		fds := openFDs(t)
		if len(fds) <= len(fdsBefore)+2 {
			break
		}
		if time.Now().After(deadline) {
			var added []string
			for fd, target := range fds {
				if fdsBefore[fd] != target {
					added = append(added, fd+" -> "+target)
				}
			}
			t.Fatalf("%d file descriptors open after 2000 connections came and went, %d before; new: %v", len(fds), len(fdsBefore), added)
		}
	}
}

// openFDs returns this process's open file descriptors and what each is.
func openFDs(t *testing.T) map[string]string {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("listing file descriptors: %v", err)
	}
	fds := make(map[string]string, len(entries))
	for _, e := range entries {
		fds[e.Name()], _ = os.Readlink("/proc/self/fd/" + e.Name())
	}
	return fds
}

// FuzzServe feeds arbitrary bytes to a live server as one connection's
// stream: it must answer or close, never crash, and keep serving others.
func FuzzServe(f *testing.F) {
	f.Add(mustFrame(codec.GetRequest("k")))
	f.Add(mustFrame(codec.PutRequest("k", []byte("v"))))
	f.Add(append(mustFrame(codec.Request(codec.OpGetTable)), 0xff, 0xff, 0, 1))
	f.Add([]byte{0, 3, 8, 20, 0})
	s, store := startStore(f, Config{MaxFrame: 1 << 16})
	f.Fuzz(func(t *testing.T, stream []byte) {
		conn, err := net.Dial("tcp", s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		conn.Write(stream)
		conn.(*net.TCPConn).CloseWrite()
		conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		var sink bytes.Buffer
		sink.ReadFrom(conn)
		conn.Close()
		w := dial(t, s.Addr())
		if r := w.do(codec.Request(codec.OpSize)); r.Opcode != codec.OpSize+1 || int(r.Result) != store.Table.Size() {
			t.Fatalf("server unhealthy after the input: %v", r)
		}
	})
}

// holdingHandler never answers puts, and executes everything else.
type holdingHandler struct{ store *Store }

func (h holdingHandler) Serve(c *Conn, req, reply *codec.MessageT) bool {
	if req.Opcode == codec.OpPut {
		c.Defer()
		return false
	}
	h.store.Execute(req, reply)
	return true
}

// TestServerCapCountsQueuedReplies: replies queued behind one that is not
// ready count toward MaxOutbound as much as written ones.
func TestServerCapCountsQueuedReplies(t *testing.T) {
	store, _ := NewStore(4)
	store.Table.Put("big", make([]byte, 256<<10))
	// A budget above the cap: the cap, not backpressure, acts.
	s, _ := startStore(t, Config{Handler: holdingHandler{store}, MaxOutbound: 1 << 20, ReplyBudget: 8 << 20})
	w := dial(t, s.Addr())
	reqs := []*codec.MessageT{codec.PutRequest("held", nil)}
	for range 200 {
		reqs = append(reqs, codec.GetRequest("big"))
	}
	w.send(reqs...)
	if !closedSoon(w) {
		t.Fatal("the server kept 50 MiB of replies queued behind a held one")
	}
}

// Start must return a whole server: a descriptor it opens later (gnet
// opens its loops' pollers after OnBoot) breaks every count of what
// connections leave behind, as TestServerSurvivesChurnAndGarbage makes.
func TestStartReturnsWithEveryLoopOpen(t *testing.T) {
	for range 5 {
		startStore(t, Config{EventLoops: 32})
		atStart := openFDs(t)
		time.Sleep(50 * time.Millisecond)
		if later := openFDs(t); len(later) != len(atStart) {
			t.Fatalf("an idle server with 32 event loops held %d descriptors when Start returned, %d 50 ms later", len(atStart), len(later))
		}
	}
}
