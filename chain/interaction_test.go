package chain

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/chaintable/chaintable/codec"
	"github.com/chaintable/chaintable/srv"
)

// Tests of how the features of the chain meet: reads at every member,
// requests held and passed on, exactly-once ids, metrics, Close.

// startNodeWith is startNode with its own hold timeout and lease term,
// and the server's MaxOutbound (0: the default).
func startNodeWith(t *testing.T, name string, hold, lease time.Duration, maxOutbound int) *testNode {
	t.Helper()
	store, _ := srv.NewStore(8)
	tn := &testNode{name: name, store: store}
	n := NewNode(NodeConfig{Store: store, Logger: logger().With("node", name), LeaseTerm: lease, HoldTimeout: hold, SessionLease: tn.sessionLease})
	s, err := srv.Start(srv.Config{Addr: "127.0.0.1:0", Handler: n, Stats: store.Stats, Logger: logger(), EventLoops: 2, MaxOutbound: maxOutbound})
	if err != nil {
		t.Fatal(err)
	}
	n.UseServer(s)
	tn.node, tn.server = n, s
	n.Rejoin(name)
	t.Cleanup(tn.stop)
	return tn
}

// requestsOf returns how many requests of op the stats counted, whatever
// their outcome.
func requestsOf(st *srv.Stats, op codec.MessageT_Opcode) uint64 {
	counts := st.Requests()
	for i, o := range srv.RequestOps {
		if o == op {
			var sum uint64
			for _, c := range counts[i] {
				sum += c
			}
			return sum
		}
	}
	return 0
}

// TestInteractionHeldReadCountedOnce: a get of a key dirty at the head
// waits for the write it sees to commit; the commit does not come (the
// tail is gone and the head waits out the lease it granted), so the head
// gives up on the read. Stats count each request once, by its outcome
// ("whoever decides a request's outcome counts it, once"): one get, not
// one answered from the table and one given up.
func TestInteractionHeldReadCountedOnce(t *testing.T) {
	a := startNodeWith(t, "node0000000001", 150*time.Millisecond, 1200*time.Millisecond, 0)
	b := startNodeWith(t, "node0000000002", 150*time.Millisecond, 1200*time.Millisecond, 0)
	setViews(a, b)
	put(t, a, "k", "v0")
	b.stop() // A keeps its view [A, B], and waits out B's lease before committing alone
	w := dialWire(t, a.server.Addr())
	if _, err := w.conn.Write(mustFrame(t, codec.PutRequest("k", []byte("v1")))); err != nil {
		t.Fatal(err)
	}
	eventually(t, "A applies k=v1", func() error {
		if v, _ := a.store.Table.Get("k"); string(v) != "v1" {
			return fmt.Errorf("A has k=%q (%s)", v, a.node.State())
		}
		return nil
	})
	before := requestsOf(a.store.Stats, codec.OpGet)
	r, err := dialWire(t, a.server.Addr()).try(codec.GetRequest("k"))
	if err == nil {
		t.Logf("the get was answered: %v (%s)", r, a.node.State())
	}
	if got := requestsOf(a.store.Stats, codec.OpGet) - before; got != 1 {
		t.Fatalf("one get counted %d times (answered: %v, err %v)", got, r, err)
	}
}

// fakeHead accepts connections, reads and never answers: a head that
// takes a forwarded write and goes silent. It counts the connections.
type fakeHead struct {
	ln       net.Listener
	accepted atomic.Int32
}

func startFakeHead(t *testing.T) *fakeHead {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeHead{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.accepted.Add(1)
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return f
}

// TestInteractionCloseEndsHeldWrites: a write with exactly-once ids that
// reached a member other than the head is passed on to the head, which
// says nothing. Node.Close ends "every forwarded request, and waits for
// them": the write must end with it (its client's connection closed, as
// at the hold timeout), not go on being retried by timers that nobody
// waits for, through a forwarder that is closed, for the rest of the hold.
func TestInteractionCloseEndsHeldWrites(t *testing.T) {
	head := startFakeHead(t)
	b := startNodeWith(t, "node0000000002", 5*time.Second, testLease, 0)
	b.node.SetView([]Member{{Name: "node0000000001", Addr: head.ln.Addr().String()}, {Name: b.name, Addr: b.server.Addr()}})
	w := dialWire(t, b.server.Addr())
	req := codec.PutRequest("k", []byte("v"))
	req.ClientId, req.RequestId, req.FirstUnacked = 7, 1, 1
	if _, err := w.conn.Write(mustFrame(t, req)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "B passes the write on to the head", func() error {
		if n := head.accepted.Load(); n == 0 {
			return fmt.Errorf("no connection to the head yet (%s)", b.node.State())
		}
		return nil
	})
	time.Sleep(50 * time.Millisecond)
	b.node.Close()
	closed := time.Now()
	w.conn.SetReadDeadline(closed.Add(time.Second))
	reply := new(codec.MessageT)
	err := codec.ReadMessage(w.r, codec.DefaultMaxFrame, reply)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b.server.Stop(ctx)
	b.server = nil // stopped here: the cleanup must not close the node again
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the held write still holds its client %v after Node.Close returned", time.Since(closed))
	}
	if err == nil {
		t.Fatalf("the client got %v for a write the head never answered", reply)
	}
}

// TestInteractionHeldReadsCountTowardUnread: a client pipelines gets of a
// large value that is dirty at the head, whose commit does not come for a
// while (the tail is gone and the head waits out the lease it granted),
// and reads none of the replies. Each held get keeps its answer, taken
// when it was served; those answers are replies the client leaves unread,
// and past MaxOutbound the connection must close, before the commit, not
// only once the answers are given: else one client makes the server hold
// a copy of the value per get for as long as the chain is stuck.
func TestInteractionHeldReadsCountTowardUnread(t *testing.T) {
	const maxOutbound = 1 << 20
	a := startNodeWith(t, "node0000000001", 3*time.Second, 1500*time.Millisecond, maxOutbound)
	b := startNodeWith(t, "node0000000002", 3*time.Second, 1500*time.Millisecond, maxOutbound)
	setViews(a, b)
	value := make([]byte, 256<<10)
	put(t, a, "big", string(value))
	b.stop()
	w := dialWire(t, a.server.Addr())
	value[0] = 1
	if _, err := w.conn.Write(mustFrame(t, codec.PutRequest("big", value))); err != nil {
		t.Fatal(err)
	}
	eventually(t, "A applies the new value", func() error {
		if v, _ := a.store.Table.Get("big"); len(v) == 0 || v[0] != 1 {
			return fmt.Errorf("not yet (%s)", a.node.State())
		}
		return nil
	})
	reader := dialWire(t, a.server.Addr())
	var gets []byte
	for range 32 { // 8 MiB of answers
		gets = append(gets, mustFrame(t, codec.GetRequest("big"))...)
	}
	if _, err := reader.conn.Write(gets); err != nil {
		t.Fatal(err)
	}
	// The head never commits (its view keeps B): the gets are held until
	// the hold timeout, when the connection closes for that reason.
	sent := time.Now()
	for time.Since(sent) < 3*time.Second-500*time.Millisecond {
		if _, closed := a.store.Stats.Connections(); closed[srv.CloseUnread] > 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("32 held gets of 256 KiB, not one byte read, MaxOutbound 1 MiB: the connection is still open after %v (%s)", time.Since(sent), a.node.State())
}

// TestInteractionForwardedReadCannotBounce: two members catching up whose
// views do not agree yet (each was told the other comes first, as while a
// member that registered again moves to the end and one of them has not
// seen it): a read at one goes to its predecessor, which passes it on to
// its own, toward the head, which is back where it came from. A read
// must reach a member that answers it or be given up, within the hold,
// not go round: each round is one more request held and one more
// goroutine, with a hold of its own, for as long as the views disagree.
func TestInteractionForwardedReadCannotBounce(t *testing.T) {
	head := startFakeHead(t)
	a := startNodeWith(t, "node0000000002", 2*time.Second, testLease, 0)
	b := startNodeWith(t, "node0000000003", 2*time.Second, testLease, 0)
	h := Member{Name: "node0000000001", Addr: head.ln.Addr().String()}
	am, bm := Member{Name: a.name, Addr: a.server.Addr()}, Member{Name: b.name, Addr: b.server.Addr()}
	a.node.SetView([]Member{h, bm, am})
	b.node.SetView([]Member{h, am, bm})
	before := requestsOf(a.store.Stats, codec.OpGet) + requestsOf(b.store.Stats, codec.OpGet)
	w := dialWire(t, b.server.Addr())
	if _, err := w.conn.Write(mustFrame(t, codec.GetRequest("k"))); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	a.server.Stop(context.Background()) // ends the rounds: A answers no more
	a.node.Close()
	a.server = nil
	eventually(t, "B gives up", func() error {
		if got := requestsOf(b.store.Stats, codec.OpGet) + requestsOf(a.store.Stats, codec.OpGet) - before; got == 0 {
			return fmt.Errorf("nothing counted yet")
		}
		return nil
	})
	if got := requestsOf(a.store.Stats, codec.OpGet) + requestsOf(b.store.Stats, codec.OpGet) - before; got > 4 {
		t.Fatalf("one get went round A and B: %d gets counted (%s; %s)", got, a.node.State(), b.node.State())
	}
}

// TestInteractionForwarderTakesLargeReplies: the forwarder passes every
// request this node cannot answer to the same member on one pipelined
// connection: reads of a node catching up and writes reaching a member
// other than the head both go to the head. A reply larger than
// codec.DefaultMaxFrame is one a member may send (a gettable of a large
// table, or a get under a larger -max-frame); it must reach the node that
// asked, and must not fail the other requests in flight on that
// connection (writes whose outcome then becomes unknown to their clients).
func TestInteractionForwarderTakesLargeReplies(t *testing.T) {
	const size = codec.DefaultMaxFrame + 1
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	gotFirst := make(chan struct{})
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		r := bufio.NewReader(c)
		for i := range 2 {
			if _, err := codec.ReadFrame(r, codec.DefaultMaxFrame); err != nil {
				return
			}
			if i == 0 {
				close(gotFirst)
			}
		}
		// The get's reply, a value of size bytes, streamed.
		prefix := []byte{1<<3 | byte(protowire.VarintType), byte(codec.OpGet + 1), 2<<3 | byte(protowire.VarintType), byte(codec.CtValue)}
		prefix = protowire.AppendTag(prefix, 5, protowire.BytesType)
		prefix = protowire.AppendVarint(prefix, size)
		w := bufio.NewWriter(c)
		w.Write(codec.AppendHeader(nil, len(prefix)+size))
		w.Write(prefix)
		zeros := make([]byte, 1<<20)
		for left := size; left > 0; left -= min(left, len(zeros)) {
			w.Write(zeros[:min(left, len(zeros))])
		}
		w.Write(mustFrame(t, &codec.MessageT{Opcode: codec.OpPut + 1, CType: codec.CtNone}))
		w.Flush()
		io.Copy(io.Discard, c)
	}()
	f := newForwarder(time.Second)
	defer f.close()
	results := make(chan forwardResult, 2)
	f.forward(ln.Addr().String(), codec.GetRequest("big"), 10*time.Second, func(res forwardResult) { results <- res })
	<-gotFirst
	f.forward(ln.Addr().String(), codec.PutRequest("k", []byte("v")), 10*time.Second, func(res forwardResult) { results <- res })
	for range 2 {
		res := <-results
		switch {
		case res.reply == nil:
			t.Fatalf("a forwarded request got no reply (sent %v)", res.sent)
		case res.reply.GetOpcode() == codec.OpGet+1 && len(res.reply.GetValue()) != size:
			t.Fatalf("the get's reply holds %d bytes, not %d", len(res.reply.GetValue()), size)
		}
	}
}

// TestInteractionTooLargeDelCountedAsDel: a del whose key alone is too
// large to replicate is refused, and counted as the del it is.
func TestInteractionTooLargeDelCountedAsDel(t *testing.T) {
	const maxFrame = 8 << 10
	store, _ := srv.NewStore(8)
	n := NewNode(NodeConfig{Store: store, MaxFrame: maxFrame, Logger: logger()})
	defer n.Close()
	s, err := srv.Start(srv.Config{Addr: "127.0.0.1:0", Handler: n, Stats: store.Stats, Logger: logger(), EventLoops: 1, MaxFrame: maxFrame})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop(context.Background())
	n.Rejoin("node0000000001")
	n.SetView([]Member{{Name: "node0000000001", Addr: s.Addr()}})
	key := string(make([]byte, maxFrame-linkOverhead+1))
	for _, req := range []*codec.MessageT{codec.DelRequest(key), {Opcode: codec.OpDel, CType: codec.CtKey, Key: key, ClientId: 1, RequestId: 1}} {
		if r := dialWire(t, s.Addr()).do(req); r.GetStatus() != codec.Status_STATUS_BAD_REQUEST {
			t.Fatalf("a del too large to replicate: %v", r)
		}
	}
	if dels, puts := requestsOf(store.Stats, codec.OpDel), requestsOf(store.Stats, codec.OpPut); dels != 2 || puts != 0 {
		t.Fatalf("two dels counted as %d dels and %d puts", dels, puts)
	}
}
