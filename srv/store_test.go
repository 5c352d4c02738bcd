package srv

import (
	"errors"
	"fmt"
	"testing"

	"github.com/chaintable/chaintable/codec"
)

func TestCheck(t *testing.T) {
	entry := &codec.EntryT{Key: "k", Value: []byte("v")}
	tests := []struct {
		name string
		req  *codec.MessageT
		ok   bool
	}{
		{"put", codec.PutRequest("k", []byte("v")), true},
		{"put with CT_NONE (sloppy course client)", &codec.MessageT{Opcode: codec.OpPut, CType: codec.CtNone, Entry: entry}, true},
		{"put with c_type unset", &codec.MessageT{Opcode: codec.OpPut, Entry: entry}, true},
		{"put with empty value", codec.PutRequest("k", nil), true},
		{"put without entry", &codec.MessageT{Opcode: codec.OpPut, CType: codec.CtEntry}, false},
		{"put with empty key", codec.PutRequest("", []byte("v")), false},
		{"put with CT_KEY", &codec.MessageT{Opcode: codec.OpPut, CType: codec.CtKey, Entry: entry}, false},
		{"get", codec.GetRequest("k"), true},
		{"get with CT_NONE", &codec.MessageT{Opcode: codec.OpGet, CType: codec.CtNone, Key: "k"}, true},
		{"get without key", &codec.MessageT{Opcode: codec.OpGet, CType: codec.CtKey}, false},
		{"get with CT_ENTRY", &codec.MessageT{Opcode: codec.OpGet, CType: codec.CtEntry, Key: "k"}, false},
		{"del", codec.DelRequest("k"), true},
		{"del without key", &codec.MessageT{Opcode: codec.OpDel, CType: codec.CtKey}, false},
		{"size", codec.Request(codec.OpSize), true},
		{"size with c_type unset", &codec.MessageT{Opcode: codec.OpSize}, true},
		{"size with CT_KEY", &codec.MessageT{Opcode: codec.OpSize, CType: codec.CtKey}, false},
		{"getkeys", codec.Request(codec.OpGetKeys), true},
		{"gettable", codec.Request(codec.OpGetTable), true},
		{"stats", codec.Request(codec.OpStats), true},
		{"OP_BAD", &codec.MessageT{}, false},
		{"OP_ERROR", codec.ErrorReply(), false},
		{"a reply opcode", &codec.MessageT{Opcode: codec.OpPut + 1, CType: codec.CtNone}, false},
		{"unknown opcode", &codec.MessageT{Opcode: 1234, CType: codec.CtNone}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Check(tt.req)
			if (err == nil) != tt.ok {
				t.Fatalf("Check = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrBadRequest) {
				t.Fatalf("error %v does not wrap ErrBadRequest", err)
			}
		})
	}
}

func TestExecute(t *testing.T) {
	s, _ := NewStore(3)
	do := func(req *codec.MessageT) *codec.MessageT {
		t.Helper()
		if err := Check(req); err != nil {
			t.Fatalf("Check(%v): %v", req, err)
		}
		reply := new(codec.MessageT)
		s.Execute(req, reply)
		return reply
	}
	if r := do(codec.PutRequest("b", []byte("2"))); r.Opcode != codec.OpPut+1 || r.CType != codec.CtNone {
		t.Fatalf("put reply %v", r)
	}
	do(codec.PutRequest("a", []byte("1")))
	if r := do(codec.GetRequest("a")); r.Opcode != codec.OpGet+1 || r.CType != codec.CtValue || string(r.Value) != "1" {
		t.Fatalf("get reply %v", r)
	}
	if r := do(codec.GetRequest("nope")); r.Opcode != codec.OpError || r.CType != codec.CtNone {
		t.Fatalf("get of missing key: %v", r)
	}
	if r := do(codec.Request(codec.OpSize)); r.Opcode != codec.OpSize+1 || r.Result != 2 {
		t.Fatalf("size reply %v", r)
	}
	if r := do(codec.Request(codec.OpGetKeys)); r.CType != codec.CtKeys || len(r.Keys) != 2 || r.Keys[0] != "a" {
		t.Fatalf("getkeys reply %v", r)
	}
	if r := do(codec.Request(codec.OpGetTable)); r.CType != codec.CtTable || len(r.Entries) != 2 || string(r.Entries[1].Value) != "2" {
		t.Fatalf("gettable reply %v", r)
	}
	if r := do(codec.DelRequest("a")); r.Opcode != codec.OpDel+1 {
		t.Fatalf("del reply %v", r)
	}
	if r := do(codec.DelRequest("a")); r.Opcode != codec.OpError {
		t.Fatalf("second del: %v", r)
	}
	r := do(codec.Request(codec.OpStats))
	// 2 puts, 2 gets, size, getkeys, gettable, 2 dels; stats itself excluded.
	if r.Opcode != codec.OpStats+1 || r.CType != codec.CtStats || r.Stats.GetOps() != 9 {
		t.Fatalf("stats reply %v", r)
	}
	if r2 := do(codec.Request(codec.OpStats)); r2.Stats.GetOps() != 9 || r2.Stats.GetTime() < r.Stats.GetTime() {
		t.Fatalf("stats counted itself: %v", r2)
	}
}

// TestStoreMaxScan: a getkeys or gettable of a table over MaxScan keys is
// refused with STATUS_TOO_LARGE; at the limit, or without one, answered.
func TestStoreMaxScan(t *testing.T) {
	tests := []struct {
		maxScan, keys int
		want          codec.Status
	}{
		{maxScan: 3, keys: 3, want: codec.Status_STATUS_OK},
		{maxScan: 3, keys: 4, want: codec.Status_STATUS_TOO_LARGE},
		{maxScan: -1, keys: 10, want: codec.Status_STATUS_OK},
		{maxScan: 0, keys: 10, want: codec.Status_STATUS_OK}, // DefaultMaxScan
	}
	for _, tt := range tests {
		for _, op := range []codec.MessageT_Opcode{codec.OpGetKeys, codec.OpGetTable} {
			t.Run(fmt.Sprintf("%v/%d-of-%d", op, tt.keys, tt.maxScan), func(t *testing.T) {
				s, err := NewStore(4)
				if err != nil {
					t.Fatal(err)
				}
				s.MaxScan = tt.maxScan
				for i := range tt.keys {
					s.Table.Put(fmt.Sprint("k", i), []byte("v"))
				}
				var reply codec.MessageT
				s.Execute(codec.Request(op), &reply)
				switch {
				case tt.want == codec.Status_STATUS_OK && reply.Opcode != op+1:
					t.Fatalf("reply %v, want an answer", &reply)
				case tt.want != codec.Status_STATUS_OK && (reply.Opcode != codec.OpError || reply.Status != tt.want):
					t.Fatalf("reply %v, want OP_ERROR %v", &reply, tt.want)
				}
			})
		}
	}
}

// BenchmarkStoreGetTable measures a gettable of a table at DefaultMaxScan
// keys, encoded: the longest one request may hold an event loop by
// default.
func BenchmarkStoreGetTable(b *testing.B) {
	s, err := NewStore(64)
	if err != nil {
		b.Fatal(err)
	}
	for i := range DefaultMaxScan {
		s.Table.Put(fmt.Sprintf("key%07d", i), []byte("value-of-twenty-byte"))
	}
	req := codec.Request(codec.OpGetTable)
	var frame []byte
	for b.Loop() {
		var reply codec.MessageT
		s.Execute(req, &reply)
		if frame, err = codec.AppendMessage(frame[:0], &reply); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(frame)), "reply-bytes")
}
