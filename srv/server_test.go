package srv

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/chaintable/chaintable/codec"
)

// wireClient speaks only the wire format: a length prefix and protobuf.
type wireClient struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
}

func dial(t testing.TB, addr string) *wireClient {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	return &wireClient{t: t, conn: conn, r: bufio.NewReader(conn)}
}

func (w *wireClient) send(reqs ...*codec.MessageT) {
	w.t.Helper()
	var buf []byte
	for _, req := range reqs {
		var err error
		if buf, err = codec.AppendMessage(buf, req); err != nil {
			w.t.Fatal(err)
		}
	}
	w.sendRaw(buf)
}

func (w *wireClient) sendRaw(b []byte) {
	w.t.Helper()
	if _, err := w.conn.Write(b); err != nil {
		w.t.Fatal(err)
	}
}

func (w *wireClient) recv() *codec.MessageT {
	w.t.Helper()
	m := new(codec.MessageT)
	if err := codec.ReadMessage(w.r, codec.DefaultMaxFrame, m); err != nil {
		w.t.Fatalf("reading reply: %v", err)
	}
	return m
}

func (w *wireClient) do(req *codec.MessageT) *codec.MessageT {
	w.t.Helper()
	w.send(req)
	return w.recv()
}

func startStore(t testing.TB, cfg Config) (*Server, *Store) {
	t.Helper()
	store, err := NewStore(16)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Handler == nil {
		cfg.Handler = store
	}
	cfg.Stats = store.Stats
	cfg.Addr = "127.0.0.1:0"
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Stop(ctx); err != nil {
			t.Error(err)
		}
	})
	return s, store
}

func TestServerConcurrentPipelinedClients(t *testing.T) {
	s, store := startStore(t, Config{})
	const conns, perConn = 50, 200
	var wg sync.WaitGroup
	for c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := dial(t, s.Addr())
			// Pipeline everything: puts, then gets, then dels of half.
			var reqs []*codec.MessageT
			for i := range perConn {
				reqs = append(reqs, codec.PutRequest(fmt.Sprintf("c%d-k%d", c, i), []byte(fmt.Sprintf("v%d", i))))
			}
			for i := range perConn {
				reqs = append(reqs, codec.GetRequest(fmt.Sprintf("c%d-k%d", c, i)))
			}
			for i := 0; i < perConn; i += 2 {
				reqs = append(reqs, codec.DelRequest(fmt.Sprintf("c%d-k%d", c, i)))
			}
			w.send(reqs...)
			for i, req := range reqs {
				reply := w.recv()
				wantOp, _, _ := codec.ReplyOf(req.Opcode)
				if reply.Opcode != wantOp {
					t.Errorf("conn %d reply %d: opcode %v, want %v", c, i, reply.Opcode, wantOp)
					return
				}
				if req.Opcode == codec.OpGet && string(reply.Value) != fmt.Sprintf("v%d", i-perConn) {
					t.Errorf("conn %d: get %s = %q", c, req.Key, reply.Value)
					return
				}
			}
		}()
	}
	wg.Wait()
	if got, want := store.Table.Size(), conns*perConn/2; got != want {
		t.Fatalf("table size %d, want %d", got, want)
	}
	w := dial(t, s.Addr())
	st := w.do(codec.Request(codec.OpStats)).Stats
	if want := int32(conns * (perConn*2 + perConn/2)); st.GetOps() != want {
		t.Fatalf("stats ops = %d, want %d", st.GetOps(), want)
	}
	if st.GetClients() < 1 {
		t.Fatalf("stats clients = %d with a connection open", st.GetClients())
	}
}

func TestServerBadRequestsKeepConnectionUsable(t *testing.T) {
	s, _ := startStore(t, Config{})
	w := dial(t, s.Addr())
	bad := [][]byte{
		codec.AppendFrame(nil, []byte{0xff, 0xff, 0xff}), // not protobuf
		codec.AppendFrame(nil, nil),                      // empty message: OP_BAD
		mustFrame(&codec.MessageT{Opcode: 1234, CType: codec.CtNone}),
		mustFrame(&codec.MessageT{Opcode: codec.OpPut, CType: codec.CtEntry}),
		mustFrame(&codec.MessageT{Opcode: codec.OpGet, CType: codec.CtKey}),
		mustFrame(&codec.MessageT{Opcode: codec.OpSize, CType: codec.CtEntry}),
		mustFrame(codec.GetRequest("missing")),
		mustFrame(codec.DelRequest("missing")),
	}
	for i, frame := range bad {
		w.sendRaw(frame)
		if r := w.recv(); r.Opcode != codec.OpError || r.CType != codec.CtNone {
			t.Fatalf("bad request %d: reply %v, want OP_ERROR/CT_NONE", i, r)
		}
	}
	if r := w.do(codec.PutRequest("k", []byte("v"))); r.Opcode != codec.OpPut+1 {
		t.Fatalf("put after bad requests: %v", r)
	}
	if r := w.do(codec.GetRequest("k")); string(r.Value) != "v" {
		t.Fatalf("get after bad requests: %v", r)
	}
}

func TestServerClosesOnOversizedFrame(t *testing.T) {
	s, store := startStore(t, Config{MaxFrame: 1024})
	w := dial(t, s.Addr())
	w.sendRaw([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}) // declares 4 GiB
	if _, err := w.r.ReadByte(); err == nil {
		t.Fatal("connection still open after a 4 GiB frame header")
	}
	// A frame just under the limit is served; just over closes.
	ok := dial(t, s.Addr())
	if r := ok.do(codec.PutRequest("k", make([]byte, 900))); r.Opcode != codec.OpPut+1 {
		t.Fatalf("put under the limit: %v", r)
	}
	over := dial(t, s.Addr())
	over.send(codec.PutRequest("k2", make([]byte, 2000)))
	if _, err := over.r.ReadByte(); err == nil {
		t.Fatal("connection still open after an oversized frame")
	}
	if _, found := store.Table.Get("k2"); found {
		t.Fatal("oversized put was applied")
	}
}

func TestServerTrickledBytesAndLargeValues(t *testing.T) {
	s, _ := startStore(t, Config{})
	w := dial(t, s.Addr())
	big := make([]byte, 10<<20)
	for i := range big {
		big[i] = byte(i)
	}
	frame := mustFrame(codec.PutRequest("big", big))
	small := mustFrame(codec.GetRequest("big"))
	// The get's frame arrives one byte at a time after the big put.
	w.sendRaw(frame)
	for i := range small {
		w.sendRaw(small[i : i+1])
		time.Sleep(time.Millisecond)
	}
	if r := w.recv(); r.Opcode != codec.OpPut+1 {
		t.Fatalf("put reply %v", r)
	}
	r := w.recv()
	if r.Opcode != codec.OpGet+1 || len(r.Value) != len(big) || r.Value[12345] != big[12345] {
		t.Fatalf("get of a 10 MB value: opcode %v, %d bytes", r.Opcode, len(r.Value))
	}
}

// TestServerFramesInPieces sends a stream of puts and gets, of values
// on both sides of each framing and buffering boundary, in pieces: of
// fixed sizes, or cut inside each frame's header, just after it, in the
// middle of its body and just before its end, with a pause at each cut so
// that the server reads the pieces apart. Every value must come back
// byte-exact, in order.
func TestServerFramesInPieces(t *testing.T) {
	sizes := []int{0, 1, 65534, 65535, 65536, largeFrame - 7, largeFrame, 3*largeFrame + 5, 1 << 20}
	tests := []struct {
		name  string
		piece int // 0: cut at the places above
		sizes []int
	}{
		{"one byte at a time", 1, []int{0, 1, 300}},
		{"cut in every frame", 0, sizes},
		{"1000 bytes", 1000, sizes},
		{"64 KiB + 3", 64<<10 + 3, sizes},
		{"whole", 1 << 30, sizes},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := startStore(t, Config{})
			w := dial(t, s.Addr())
			var pieces [][]byte
			var stream []byte
			add := func(frame []byte) {
				if tt.piece > 0 {
					stream = append(stream, frame...)
					return
				}
				hdr := codec.HeaderLen(len(frame) - 2)
				last := 0
				for _, cut := range []int{1, hdr, hdr + 1, len(frame) / 2, len(frame) - 1, len(frame)} {
					if cut > last && cut <= len(frame) {
						pieces = append(pieces, frame[last:cut])
						last = cut
					}
				}
			}
			values := make([][]byte, len(tt.sizes))
			for i, n := range tt.sizes {
				values[i] = make([]byte, n)
				for j := range values[i] {
					values[i][j] = byte(i*31 + j*7 + j>>8)
				}
				add(mustFrame(codec.PutRequest(fmt.Sprint("k", i), values[i])))
				add(mustFrame(codec.GetRequest(fmt.Sprint("k", i))))
			}
			for rest := stream; len(rest) > 0; rest = rest[min(len(rest), tt.piece):] {
				pieces = append(pieces, rest[:min(len(rest), tt.piece)])
			}
			go func() {
				for _, p := range pieces {
					if _, err := w.conn.Write(p); err != nil {
						return
					}
					if len(pieces) > 1 {
						time.Sleep(100 * time.Microsecond)
					}
				}
			}()
			for i, v := range values {
				if r := w.recv(); r.Opcode != codec.OpPut+1 {
					t.Fatalf("put of %d bytes: reply %v", len(v), r.Opcode)
				}
				r := w.recv()
				if r.Opcode != codec.OpGet+1 || !bytes.Equal(r.Value, v) {
					t.Fatalf("get %d of %d bytes: opcode %v, %d bytes back, equal %v", i, len(v), r.Opcode, len(r.Value), bytes.Equal(r.Value, v))
				}
			}
		})
	}
}

// TestServerMemoryWhileLargeFrameArrives sends all but the last byte of a
// 16 MiB put, and checks what the server holds meanwhile: one buffer for
// the frame, at most a quarter larger, not copies of it. (gnet's own
// buffer, which doubles, and the contiguous copies Peek made of it held
// four times the frame.)
func TestServerMemoryWhileLargeFrameArrives(t *testing.T) {
	s, store := startStore(t, Config{})
	w := dial(t, s.Addr())
	frame := mustFrame(codec.PutRequest("big", make([]byte, 16<<20)))
	heap := func() int64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return int64(ms.HeapAlloc)
	}
	before := heap()
	w.sendRaw(frame[:len(frame)-1])
	// The server reads what is sent within moments; give it plenty.
	time.Sleep(time.Second)
	held := heap() - before
	w.sendRaw(frame[len(frame)-1:])
	if r := w.recv(); r.Opcode != codec.OpPut+1 {
		t.Fatalf("put: %v", r.Opcode)
	}
	if v, _ := store.Table.Get("big"); len(v) != 16<<20 {
		t.Fatalf("stored %d bytes, want %d", len(v), 16<<20)
	}
	t.Logf("held %d bytes while a %d-byte frame arrived", held, len(frame))
	if held > int64(len(frame))*3/2 {
		t.Fatalf("the server held %d bytes while a %d-byte frame arrived, want at most 1.5x", held, len(frame))
	}
}

// TestServerBodyBudget checks the budget of bodies allocated on the word
// of their headers: taken while a large frame arrives, given back when it
// is complete or its connection closes, and never exceeded, however many
// clients declare large frames and send nothing more.
func TestServerBodyBudget(t *testing.T) {
	s, _ := startStore(t, Config{})
	header := codec.AppendHeader(nil, 60<<20)
	taken := func(want int64) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); s.bodies.Load() != want; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("budget taken: %d bytes, want %d", s.bodies.Load(), want)
			}
		}
	}
	var idle []*wireClient
	for range bodyBudget/(60<<20) + 2 {
		w := dial(t, s.Addr())
		w.sendRaw(append(header, 1, 2, 3))
		idle = append(idle, w)
	}
	taken(bodyBudget / (60 << 20) * (60 << 20))
	for _, w := range idle {
		w.conn.Close()
	}
	taken(0)

	w := dial(t, s.Addr())
	frame := mustFrame(codec.PutRequest("k", make([]byte, 1<<20)))
	w.sendRaw(frame[:len(frame)-1])
	taken(int64(len(frame) - 6))
	w.sendRaw(frame[len(frame)-1:])
	if r := w.recv(); r.Opcode != codec.OpPut+1 {
		t.Fatalf("put: %v", r.Opcode)
	}
	taken(0)
}

// TestBodyGrowsWithWhatArrives checks that a large frame's buffer follows
// the bytes received, not the size its header declares: a client that
// declares 64 MiB and sends 100 bytes does not make the server hold 64 MiB.
func TestBodyGrowsWithWhatArrives(t *testing.T) {
	tests := []struct {
		declared, have, arrive int
		wantCap                int
	}{
		{64 << 20, 0, 100, largeFrame},
		{64 << 20, 100, largeFrame, largeFrame + 100},
		{64 << 20, 1 << 20, 10, 4 << 20},
		{3 << 20, 2 << 20, 1 << 20, 3 << 20},
		{largeFrame + 1, 0, largeFrame + 1, largeFrame + 1},
		{64 << 20, 0, 5 << 20, 5 << 20},
	}
	for _, tt := range tests {
		c := &Conn{bodySize: tt.declared}
		if tt.have > 0 {
			c.body = make([]byte, tt.have)
		}
		b := c.grow(tt.arrive)
		if cap(b) != tt.wantCap || len(b) != tt.have {
			t.Errorf("declared %d, have %d, %d arriving: len %d cap %d, want len %d cap %d", tt.declared, tt.have, tt.arrive, len(b), cap(b), tt.have, tt.wantCap)
		}
	}
}

// deferringHandler answers every put later, from another goroutine, after
// a random delay, and everything else at once.
type deferringHandler struct {
	store *Store
	wg    sync.WaitGroup
}

func (h *deferringHandler) Serve(c *Conn, req, reply *codec.MessageT) bool {
	if req.Opcode != codec.OpPut {
		h.store.Execute(req, reply)
		return true
	}
	p := c.Defer()
	key, value := req.GetEntry().GetKey(), req.GetEntry().GetValue()
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
		h.store.Table.Put(key, value)
		p.Complete(&codec.MessageT{Opcode: codec.OpPut + 1, CType: codec.CtNone, Result: int32(len(value))})
	}()
	return false
}

func TestServerDeferredRepliesKeepRequestOrder(t *testing.T) {
	store, _ := NewStore(4)
	h := &deferringHandler{store: store}
	s, _ := startStore(t, Config{Handler: h})
	const conns, perConn = 8, 300
	var wg sync.WaitGroup
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := dial(t, s.Addr())
			var reqs []*codec.MessageT
			for i := range perConn {
				if i%3 == 2 {
					reqs = append(reqs, codec.Request(codec.OpSize))
				} else {
					reqs = append(reqs, codec.PutRequest("k", make([]byte, i)))
				}
			}
			w.send(reqs...)
			for i, req := range reqs {
				r := w.recv()
				wantOp, _, _ := codec.ReplyOf(req.Opcode)
				if r.Opcode != wantOp || (req.Opcode == codec.OpPut && r.Result != int32(i)) {
					t.Errorf("reply %d out of order: %v for %v", i, r, req.Opcode)
					return
				}
			}
		}()
	}
	wg.Wait()
	h.wg.Wait()
}

// batchingHandler takes plain writes in batches (a WriteBatchServer): it
// applies each at once, answers every other one at once and the rest
// later, from another goroutine, and records the batches' sizes.
type batchingHandler struct {
	store   *Store
	wg      sync.WaitGroup
	mu      sync.Mutex
	largest int
}

func (h *batchingHandler) Serve(c *Conn, req, reply *codec.MessageT) bool {
	h.store.Execute(req, reply)
	return true
}

func (h *batchingHandler) ServeWrite(c *Conn, w *codec.WriteRequest) {
	h.ServeWrites(c, []codec.WriteRequest{*w})
}

func (h *batchingHandler) ServeWrites(c *Conn, ws []codec.WriteRequest) {
	h.mu.Lock()
	h.largest = max(h.largest, len(ws))
	h.mu.Unlock()
	for i, w := range ws {
		h.store.Table.Put(string(w.Key), w.Value)
		reply := &codec.MessageT{Opcode: codec.OpPut + 1, CType: codec.CtNone, Result: int32(len(w.Value))}
		if i%2 == 0 {
			c.AnswerFrame(mustFrame(reply))
			continue
		}
		p := c.Defer()
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			time.Sleep(time.Duration(rand.IntN(500)) * time.Microsecond)
			p.Complete(reply)
		}()
	}
}

// TestServerWriteBatches checks that a WriteBatchServer gets the writes
// that follow each other in a pass together, that a request of another
// kind is served after the writes before it and before those after it
// (a size counts exactly the puts sent before it), and that replies
// answered at once and later keep the requests' order.
func TestServerWriteBatches(t *testing.T) {
	store, _ := NewStore(4)
	h := &batchingHandler{store: store}
	s, _ := startStore(t, Config{Handler: h})
	w := dial(t, s.Addr())
	const n = 400
	var reqs []*codec.MessageT
	puts := 0
	for i := range n {
		if i%17 == 16 {
			reqs = append(reqs, codec.Request(codec.OpSize))
			continue
		}
		reqs = append(reqs, codec.PutRequest(fmt.Sprint("k", i), make([]byte, i)))
	}
	w.send(reqs...)
	for i, req := range reqs {
		r := w.recv()
		switch req.Opcode {
		case codec.OpSize:
			if r.Opcode != codec.OpSize+1 || int(r.Result) != puts {
				t.Fatalf("reply %d: %v, want the size after %d puts", i, r, puts)
			}
		default:
			if r.Opcode != codec.OpPut+1 || r.Result != int32(i) {
				t.Fatalf("reply %d out of order: %v", i, r)
			}
			puts++
		}
	}
	h.wg.Wait()
	if h.largest < 2 || h.largest > 16 {
		t.Errorf("largest batch %d writes; want 2 to 16 (sizes come every 17 requests)", h.largest)
	}
}

// abandoningHandler answers gets of "missing" later by abandoning them,
// declines to answer them on the fast path, and serves everything else
// from its store.
type abandoningHandler struct{ store *Store }

func (h abandoningHandler) Serve(c *Conn, req, reply *codec.MessageT) bool {
	if req.GetOpcode() == codec.OpGet && req.GetKey() == "missing" {
		p := c.Defer()
		go p.Abandon()
		return false
	}
	h.store.Execute(req, reply)
	return true
}

func (h abandoningHandler) ServeGet(dst, key []byte) ([]byte, bool) {
	if string(key) == "missing" {
		return dst, false
	}
	return h.store.AppendGet(dst, key), true
}

// TestServerAbandonedReplyClosesAfterEarlierOnes: a reply that is
// abandoned closes its connection, once every reply before it is written,
// and no reply after it is sent; a get the GetServer declines goes to
// Serve.
func TestServerAbandonedReplyClosesAfterEarlierOnes(t *testing.T) {
	store, _ := NewStore(4)
	store.Table.Put("k", []byte("v"))
	s, _ := startStore(t, Config{Handler: abandoningHandler{store}})
	w := dial(t, s.Addr())
	w.send(codec.GetRequest("k"), codec.Request(codec.OpSize), codec.GetRequest("missing"), codec.GetRequest("k"))
	if r := w.recv(); r.Opcode != codec.OpGet+1 || string(r.Value) != "v" {
		t.Fatalf("first reply: %v", r)
	}
	if r := w.recv(); r.Opcode != codec.OpSize+1 || r.Result != 1 {
		t.Fatalf("second reply: %v", r)
	}
	m := new(codec.MessageT)
	if err := codec.ReadMessage(w.r, codec.DefaultMaxFrame, m); err == nil {
		t.Fatalf("got %v where the connection should close", m)
	}
	// The server goes on serving others.
	if r := dial(t, s.Addr()).do(codec.GetRequest("k")); string(r.Value) != "v" {
		t.Fatalf("a new connection: %v", r)
	}
}

// TestServerAnswersHalfClosedConnections: a client that sends its
// requests and shuts down its side of the connection still gets every
// reply, the deferred ones included, and then the connection closes.
func TestServerAnswersHalfClosedConnections(t *testing.T) {
	store, _ := NewStore(4)
	h := &deferringHandler{store: store}
	s, _ := startStore(t, Config{Handler: h})
	for round := range 5 {
		w := dial(t, s.Addr())
		var reqs []*codec.MessageT
		for i := range 50 {
			reqs = append(reqs, codec.PutRequest(fmt.Sprintf("k%d", i), make([]byte, i)))
		}
		w.send(reqs...)
		if err := w.conn.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		for i := range reqs {
			r := new(codec.MessageT)
			if err := codec.ReadMessage(w.r, codec.DefaultMaxFrame, r); err != nil {
				t.Fatalf("round %d: reply %d of 50 after the client shut down its side: %v", round, i, err)
			}
			if r.Opcode != codec.OpPut+1 || r.Result != int32(i) {
				t.Fatalf("round %d: reply %d: %v", round, i, r)
			}
		}
		if _, err := w.r.ReadByte(); err != io.EOF {
			t.Fatalf("round %d: after the replies: %v, want the connection closed", round, err)
		}
	}
	h.wg.Wait()
}

// BenchmarkServerGet and BenchmarkServerPut measure the server's path for
// pipelined requests; -benchmem shows its allocations per request.
func BenchmarkServerGet(b *testing.B) {
	benchmarkServer(b, codec.GetRequest("key"), codec.AppendValueReply(nil, make([]byte, 32)))
}

func BenchmarkServerPut(b *testing.B) {
	benchmarkServer(b, codec.PutRequest("key", make([]byte, 32)), WrittenFrame(codec.OpPut))
}

func benchmarkServer(b *testing.B, req *codec.MessageT, reply []byte) {
	s, store := startStore(b, Config{})
	store.Table.Put("key", make([]byte, 32))
	w := dial(b, s.Addr())
	const depth = 16
	var batch []byte
	for range depth {
		batch = append(batch, mustFrame(req)...)
	}
	// Replies are read into one reused buffer, so that allocations counted
	// are the server's.
	replies := make([]byte, depth*len(reply))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += depth {
		w.sendRaw(batch)
		if _, err := io.ReadFull(w.r, replies); err != nil {
			b.Fatal(err)
		}
	}
}

// TestWrittenPendingsDropTheirFrames checks that a reply, once written,
// is no longer held by its Pending, whose block may live on much longer.
func TestWrittenPendingsDropTheirFrames(t *testing.T) {
	c := &Conn{}
	p := c.Defer()                // queued
	c.answer(make([]byte, 1<<20)) // queued behind p: copied into a Pending
	queued := c.queue[1]
	c.wakeQueued.Store(true) // no event loop here to wake
	p.CompleteFrame([]byte("reply"))
	c.flushReady()
	if len(c.queue) != 0 || len(c.out) != len("reply")+1<<20 {
		t.Fatalf("after the flush: %d queued, %d bytes out", len(c.queue), len(c.out))
	}
	if p.frame != nil || queued.frame != nil {
		t.Errorf("written Pendings still hold %d and %d bytes", len(p.frame), len(queued.frame))
	}
}

// BenchmarkServerLargePut measures one put of a large value at a time,
// the request written whole and its reply awaited: the cost of taking in
// a frame that arrives in many reads.
func BenchmarkServerLargePut(b *testing.B) {
	for _, size := range []int{1 << 20, 10 << 20, 60 << 20} {
		b.Run(fmt.Sprintf("size=%dMiB", size>>20), func(b *testing.B) {
			s, _ := startStore(b, Config{})
			w := dial(b, s.Addr())
			frame := mustFrame(codec.PutRequest("key", make([]byte, size)))
			reply := make([]byte, len(WrittenFrame(codec.OpPut)))
			b.SetBytes(int64(size))
			b.ResetTimer()
			for range b.N {
				w.sendRaw(frame)
				if _, err := io.ReadFull(w.r, reply); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestBodyClass(t *testing.T) {
	tests := []struct{ size, class, capacity int }{
		{1 << 16, 0, 1 << 16},
		{1<<16 + 1, 1, 1<<16 + 1<<14},
		{1<<16 + 1<<14, 1, 1<<16 + 1<<14},
		{1<<17 - 1, 4, 1 << 17},
		{1 << 17, 4, 1 << 17},
		{16<<20 + 25, 4*8 + 1, 20 << 20},
		{10 << 20, 4*7 + 1, 10 << 20},
	}
	for _, tt := range tests {
		class, capacity := bodyClass(tt.size)
		if class != tt.class || capacity != tt.capacity {
			t.Errorf("bodyClass(%d) = %d, %d; want %d, %d", tt.size, class, capacity, tt.class, tt.capacity)
		}
		if b := getBody(tt.size); cap(b) != tt.capacity || len(b) != 0 {
			t.Errorf("getBody(%d): len %d cap %d", tt.size, len(b), cap(b))
		}
	}
}
