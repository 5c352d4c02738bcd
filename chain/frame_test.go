package chain

import (
	"bytes"

	"testing"
	"time"

	"github.com/chaintable/chaintable/codec"
)

func TestFitFrame(t *testing.T) {
	w := func(n int) *codec.WriteT { return &codec.WriteT{Op: codec.OpPut, Key: "k", Value: make([]byte, n-1)} }
	tests := []struct {
		name  string
		sizes []int
		want  int
	}{
		{"none", nil, 0},
		{"small ones", []int{10, 20, 30}, 3},
		{"exactly the limit", []int{linkBytes / 2, linkBytes / 2}, 2},
		{"one byte over", []int{linkBytes / 2, linkBytes/2 + 1}, 1},
		{"a large one alone", []int{3 * linkBytes}, 1},
		{"a large one after small ones", []int{10, 3 * linkBytes, 10}, 1},
		{"small ones after a large one", []int{3 * linkBytes, 10}, 1},
	}
	for _, tt := range tests {
		var ws []*codec.WriteT
		for _, n := range tt.sizes {
			ws = append(ws, w(n))
		}
		if got := fitFrame(ws); len(got) != tt.want {
			t.Errorf("%s: %d writes fit, want %d", tt.name, len(got), tt.want)
		}
	}
}

// TestNodeRefusesWriteTooLargeToReplicate puts, at the head of a chain of
// two, a value as large as a replication frame can carry, and one a byte
// larger: the first must reach the tail, the second be refused at once,
// not taken and then stuck at the link, holding up every write after it.
func TestNodeRefusesWriteTooLargeToReplicate(t *testing.T) {
	head, tail := startNode(t, "a"), startNode(t, "b")
	setViews(head, tail)
	eventually(t, "the tail serves", func() error { _, err := get(t, tail, "none"); return ignoreMissing(err) })
	key := "big"
	largest := codec.DefaultMaxFrame - linkOverhead - len(key)
	w := dialWire(t, head.server.Addr())
	if r := slowDo(w, codec.PutRequest(key, make([]byte, largest+1))); r.Opcode != codec.OpError || r.Status != codec.Status_STATUS_BAD_REQUEST {
		t.Fatalf("put of %d bytes: %v %v, want OP_ERROR BAD_REQUEST", largest+1, r.Opcode, r.Status)
	}
	value := bytes.Repeat([]byte("0123456789abcdef"), largest/16+1)[:largest]
	if r := slowDo(w, codec.PutRequest(key, value)); r.Opcode != codec.OpPut+1 {
		t.Fatalf("put of %d bytes: %v %v", largest, r.Opcode, r.Status)
	}
	put(t, head, "after", "v")
	r := slowDo(dialWire(t, tail.server.Addr()), codec.GetRequest(key))
	if !bytes.Equal(r.Value, value) {
		t.Fatalf("get at the tail: %v, %d bytes, want the %d put", r.Opcode, len(r.Value), len(value))
	}
	if v, err := get(t, tail, "after"); err != nil || v != "v" {
		t.Fatalf("get after: %q, %v", v, err)
	}
}

// slowDo is w.do with time for 64 MiB to go through a chain of two under
// the race detector on a busy machine.
func slowDo(w *wire, req *codec.MessageT) *codec.MessageT {
	w.t.Helper()
	frame, err := codec.AppendMessage(nil, req)
	if err != nil {
		w.t.Fatal(err)
	}
	w.conn.SetDeadline(time.Now().Add(2 * time.Minute))
	if _, err := w.conn.Write(frame); err != nil {
		w.t.Fatal(err)
	}
	reply := new(codec.MessageT)
	if err := codec.ReadMessage(w.r, codec.DefaultMaxFrame, reply); err != nil {
		w.t.Fatalf("reply: %v", err)
	}
	return reply
}

// ignoreMissing treats a read answered "not found" as served.
func ignoreMissing(err error) error {
	if err != nil && bytes.Contains([]byte(err.Error()), []byte("NOT_FOUND")) {
		return nil
	}
	return err
}
