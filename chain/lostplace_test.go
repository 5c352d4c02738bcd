package chain

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chaintable/chaintable/codec"
)

// ackClamp stands between a node and its successor and lets the
// successor's acknowledgements through only up to limit, so that a test
// decides how far the node's writes commit.
func ackClamp(t *testing.T, succAddr string, limit *atomic.Uint64) string {
	return startReplyRelay(t, succAddr, func(dst []byte, m *codec.MessageT) []byte {
		if m.Opcode == codec.MessageT_OP_REPLICATE+1 {
			m.Seq, m.Committed = min(m.Seq, limit.Load()), min(m.Committed, limit.Load())
		}
		dst, _ = codec.AppendMessage(dst, m)
		return dst
	})
}

// A head that loses its place while a client's pipelined writes are in
// flight answers those that committed, in order, and only then closes
// the connection: the client learns every write that is known to stand.
// (A batched reply for writes taken together must not drop the answers
// of those that did commit.)
func TestLostPlaceAnswersWhatCommitted(t *testing.T) {
	// A head whose link breaks commits alone once the lease it granted
	// runs out, which would commit the writes the test holds back: with
	// a long lease, a link that breaks under load (2 shared cores, the
	// race detector) cannot end the test's hold.
	head, tail := startNodeLease(t, "n1", time.Minute), startNodeLease(t, "n2", time.Minute)
	var limit atomic.Uint64
	limit.Store(math.MaxUint64)
	members := []Member{{Name: head.name, Addr: head.server.Addr()}, {Name: tail.name, Addr: ackClamp(t, tail.server.Addr(), &limit)}}
	head.node.SetView(members)
	tail.node.SetView(members)
	put(t, head, "before", "v")
	eventually(t, "the tail is live", func() error { _, err := get(t, tail, "before"); return err })
	// While the head counts its successor as catching up, it commits on
	// its own: the burst must come once it counts it live.
	eventually(t, "the head counts the tail live", func() error {
		if st := head.node.State(); !strings.Contains(st, `succ="n2"/live`) {
			return fmt.Errorf("head: %s", st)
		}
		return nil
	})

	const writes, committed = 16, 5
	before := head.node.applied.Load()
	limit.Store(before + committed)
	w := dialWire(t, head.server.Addr())
	var burst []byte
	for range writes {
		burst, _ = codec.AppendMessage(burst, codec.PutRequest("k", []byte("v")))
	}
	w.conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := w.conn.Write(burst); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the head takes the burst", func() error {
		if got := head.node.applied.Load(); got < before+writes {
			return errors.New("not yet")
		}
		return nil
	})
	eventually(t, "the committed writes commit", func() error {
		if st := head.node.Status(); st.Committed < before+committed {
			return errors.New("not yet")
		}
		return nil
	})
	head.node.Rejoin(head.name) // its session expired

	answered := 0
	for {
		var reply codec.MessageT
		if err := codec.ReadMessage(w.r, codec.DefaultMaxFrame, &reply); err != nil {
			break
		}
		if reply.Opcode != codec.OpPut+1 {
			t.Fatalf("reply %d: %v", answered+1, &reply)
		}
		answered++
	}
	if answered != committed {
		t.Fatalf("%d writes answered before the connection closed; %d had committed", answered, committed)
	}
}

// Writes answered at once (a del of a missing key) and writes that wait
// for the chain keep their clients' order, in one pipelined burst.
func TestPipelinedWritesKeepReplyOrder(t *testing.T) {
	head, tail := startNode(t, "n1"), startNode(t, "n2")
	setViews(head, tail)
	put(t, head, "before", "v")
	eventually(t, "the tail is live", func() error { _, err := get(t, tail, "before"); return err })
	reqs := []*codec.MessageT{
		codec.PutRequest("a", []byte("1")), codec.DelRequest("missing"), codec.PutRequest("b", []byte("2")),
		codec.DelRequest("a"), codec.DelRequest("a"), codec.PutRequest("c", []byte("3")),
	}
	want := []codec.MessageT_Opcode{codec.OpPut + 1, codec.OpError, codec.OpPut + 1, codec.OpDel + 1, codec.OpError, codec.OpPut + 1}
	var burst []byte
	for _, r := range reqs {
		burst, _ = codec.AppendMessage(burst, r)
	}
	w := dialWire(t, head.server.Addr())
	w.conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := w.conn.Write(burst); err != nil {
		t.Fatal(err)
	}
	for i, op := range want {
		var reply codec.MessageT
		if err := codec.ReadMessage(w.r, codec.DefaultMaxFrame, &reply); err != nil {
			t.Fatalf("reply %d: %v", i+1, err)
		}
		if reply.Opcode != op {
			t.Fatalf("reply %d to %v: %v, want opcode %v", i+1, reqs[i].Opcode, &reply, op)
		}
	}
}
