package codec

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
)

// replicateCases are REPLICATE messages as the chain sends them: empty
// heartbeats, zero fields left out, deletes, large batches and frames past
// the 16-bit length.
func replicateCases() []*MessageT {
	big := bytes.Repeat([]byte{'v'}, 70000)
	many := make([]*WriteT, 1024)
	for i := range many {
		many[i] = &WriteT{Seq: uint64(i + 1), Op: OpPut, Key: "key:" + strings.Repeat("k", i%40), Value: []byte("value"), ClientId: 7, RequestId: uint64(i)}
	}
	return []*MessageT{
		{Opcode: MessageT_OP_REPLICATE},
		{Opcode: MessageT_OP_REPLICATE, From: "node0000000001", To: "node0000000002", LeaseGrant: 3},
		{Opcode: MessageT_OP_REPLICATE, From: "a", To: "b", Live: true, Writes: []*WriteT{{Seq: 1, Op: OpDel, Key: "gone"}}},
		{Opcode: MessageT_OP_REPLICATE, From: "a", To: "b", Writes: []*WriteT{{}, {Seq: 1 << 40, Op: OpPut, Key: "k", Value: []byte{}}}},
		{Opcode: MessageT_OP_REPLICATE, From: "a", To: "b", Writes: []*WriteT{{Seq: 9, Op: OpPut, Key: "big", Value: big}}},
		{Opcode: MessageT_OP_REPLICATE, From: "_c_3f-node0000000007", To: "_c_40-node0000000009", Writes: many, Live: true, LeaseGrant: 1<<64 - 1, LeaseTermUs: 2_000_000},
		{Opcode: MessageT_OP_REPLICATE, Writes: []*WriteT{{Seq: 2, Op: MessageT_Opcode(-5), Key: "négatif"}}},
		{Opcode: MessageT_OP_REPLICATE, From: "a", To: "b", Writes: []*WriteT{
			{Seq: 3, Op: OpDel, Key: "k", ClientId: 9, RequestId: 70, Found: true, FirstUnacked: 12, ExpireSeq: 1 << 33, Epoch: 1 << 40},
			{Seq: 4, Op: OpPut, Key: "k", Value: []byte("v"), ClientId: 9, RequestId: 71, FirstUnacked: 12}}},
	}
}

func TestAppendReplicateMatchesProto(t *testing.T) {
	for i, m := range replicateCases() {
		want, err := AppendMessage([]byte("prefix"), m)
		if err != nil {
			t.Fatal(err)
		}
		got := AppendReplicate([]byte("prefix"), m.From, m.To, m.Writes, m.Live, Grant{m.LeaseGrant, m.LeaseTermUs})
		if !bytes.Equal(got, want) {
			t.Fatalf("case %d: AppendReplicate made %d bytes, AppendMessage %d; first at %d differ", i, len(got), len(want), firstDiff(got, want))
		}
	}
}

// TestAppendReplicateSizesAtBoundaries checks the writes and frames whose
// lengths come to where AppendReplicate must make room for a longer
// length than it kept: writes of 127 and 128 bytes, frames of 64 KiB less
// one byte and more.
func TestAppendReplicateSizesAtBoundaries(t *testing.T) {
	for _, n := range []int{0, 100, 110, 111, 112, 113, 120, 16370, 16371, 16372, 16373, 16374, 65480, 65490, 65500, 65505, 65510, 65520} {
		for _, writes := range [][]*WriteT{
			{{Seq: 1, Op: OpPut, Key: "k", Value: bytes.Repeat([]byte{'v'}, n), ClientId: 300, RequestId: 2}},
			{{Seq: 1, Op: OpDel, Key: "d"}, {Seq: 2, Op: OpPut, Key: "k", Value: bytes.Repeat([]byte{'v'}, n)}, {Seq: 3, Op: OpDel, Key: "e"}},
		} {
			for extra := range 16 {
				m := &MessageT{Opcode: MessageT_OP_REPLICATE, From: strings.Repeat("f", extra), To: "t", Writes: writes, LeaseGrant: 5}
				want, _ := AppendMessage([]byte("p"), m)
				if got := AppendReplicate([]byte("p"), m.From, m.To, m.Writes, false, Grant{ID: 5}); !bytes.Equal(got, want) {
					t.Fatalf("value of %d bytes, %d writes, from %q: AppendReplicate made %d bytes, AppendMessage %d; first at %d differ",
						n, len(writes), m.From, len(got), len(want), firstDiff(got, want))
				}
			}
		}
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func TestUnmarshal(t *testing.T) {
	marshal := func(m *MessageT) []byte {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	rep := marshal(&MessageT{Opcode: MessageT_OP_REPLICATE, From: "a", Writes: []*WriteT{{Seq: 1, Op: OpPut, Key: "k", Value: []byte("v")}}})
	tests := []struct {
		name string
		b    []byte
		fast bool // decoded without proto
		err  bool
	}{
		{"replicate", rep, true, false},
		{"replicate, a field twice", append(append([]byte(nil), rep...), 0x6a, 1, 'z'), true, false}, // from again: the last counts
		{"replicate with a hello's field", marshal(&MessageT{Opcode: MessageT_OP_REPLICATE, Synced: true}), false, false},
		{"write with an unknown field", append(append([]byte(nil), rep...), 0x82, 1, 2, 0x50, 1), false, false},
		{"invalid UTF-8 in from", []byte{0x08, 120, 0x6a, 1, 0xff}, false, true},
		{"invalid UTF-8 key in a write", []byte{0x08, 120, 0x82, 1, 3, 0x1a, 1, 0xff}, false, true},
		{"truncated write", rep[:len(rep)-1], false, true},
		{"replicate, opcode last", append(append([]byte(nil), rep[2:]...), rep[:2]...), false, false},
		{"put", marshal(PutRequest("k", []byte("v"))), false, false},
		{"empty", nil, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var fast MessageT
			if got := unmarshalReplicate(tt.b, &fast); got != tt.fast {
				t.Errorf("decoded by hand: %v, want %v", got, tt.fast)
			}
			var got, want MessageT
			b := append([]byte(nil), tt.b...)
			err := Unmarshal(b, &got)
			wantErr := proto.Unmarshal(tt.b, &want)
			if (err != nil) != tt.err || (wantErr != nil) != tt.err {
				t.Fatalf("Unmarshal: %v, proto.Unmarshal: %v; want an error: %v", err, wantErr, tt.err)
			}
			if err == nil && !proto.Equal(&got, &want) {
				t.Fatalf("Unmarshal = %v, proto.Unmarshal = %v", &got, &want)
			}
			// The message shares no memory with the payload, which the
			// caller reuses.
			for i := range b {
				b[i] = 0
			}
			if err == nil && !proto.Equal(&got, &want) {
				t.Fatalf("after the payload was overwritten: Unmarshal = %v, proto.Unmarshal = %v", &got, &want)
			}
		})
	}
}

// FuzzUnmarshal checks that whatever the hand decoder accepts, proto
// decodes to the same message.
func FuzzUnmarshal(f *testing.F) {
	for _, m := range append(replicateCases()[:4], replicateCases()[7]) {
		b, _ := proto.Marshal(m)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var got MessageT
		if !unmarshalReplicate(b, &got) {
			return
		}
		var want MessageT
		if err := proto.Unmarshal(b, &want); err != nil {
			t.Fatalf("decoded by hand what proto refuses: %v", err)
		}
		if !proto.Equal(&got, &want) || len(want.ProtoReflect().GetUnknown()) != 0 {
			t.Fatalf("decoded by hand %v, proto decodes %v", &got, &want)
		}
	})
}

// FuzzAppendReplicate checks that the hand encoder writes proto's bytes
// for writes made of any field values.
func FuzzAppendReplicate(f *testing.F) {
	f.Add("node1", "node2", uint64(1), int32(10), "key", []byte("value"), uint64(3), uint64(4), true, uint64(5), true, uint64(2), uint64(6))
	f.Add("", "", uint64(0), int32(-1), "", []byte{}, uint64(0), uint64(0), false, uint64(0), false, uint64(0), uint64(0))
	f.Fuzz(func(t *testing.T, from, to string, seq uint64, op int32, key string, value []byte, client, request uint64, live bool, grant uint64, found bool, first, expire uint64) {
		// The epoch varies with the others, so that the corpus keeps its shape.
		w := &WriteT{Seq: seq, Op: MessageT_Opcode(op), Key: key, Value: value, ClientId: client, RequestId: request, Found: found, FirstUnacked: first, ExpireSeq: expire, Epoch: expire ^ seq<<7}
		// The term varies with the grant, for the same reason.
		g := Grant{ID: grant, TermUS: grant >> 3}
		if n, most := WriteSize(w), len(w.Key)+len(w.Value)+MaxWriteOverhead; n > most {
			t.Fatalf("WriteSize %d, more than MaxWriteOverhead allows (%d)", n, most)
		}
		m := &MessageT{Opcode: MessageT_OP_REPLICATE, From: from, To: to, Writes: []*WriteT{w, {}, w}, Live: live, LeaseGrant: g.ID, LeaseTermUs: g.TermUS}
		want, err := AppendMessage(nil, m)
		if err != nil {
			return // invalid UTF-8: the chain never sends it
		}
		if got := AppendReplicate(nil, from, to, m.Writes, live, g); !bytes.Equal(got, want) {
			t.Fatalf("AppendReplicate made %x, AppendMessage %x", got, want)
		}
	})
}

// BenchmarkReplicate compares the hand codec with proto on a frame of 256
// writes, with small values and with values past the size a string
// conversion would copy on the stack.
func BenchmarkReplicate(b *testing.B) {
	for _, size := range []int{32, 1024} {
		writes := make([]*WriteT, 256)
		for i := range writes {
			writes[i] = &WriteT{Seq: uint64(i + 1), Op: OpPut, Key: "key:12345", Value: bytes.Repeat([]byte{'v'}, size), ClientId: 7, RequestId: uint64(i)}
		}
		m := &MessageT{Opcode: MessageT_OP_REPLICATE, From: "_c_3f-node0000000007", To: "_c_40-node0000000009", Writes: writes, LeaseGrant: 2}
		frame, _ := AppendMessage(nil, m)
		payload := frame[HeaderLen(len(frame)-2):]
		b.Run(fmt.Sprintf("value=%d/encode/proto", size), func(b *testing.B) {
			var buf []byte
			for b.Loop() {
				buf, _ = AppendMessage(buf[:0], m)
			}
		})
		b.Run(fmt.Sprintf("value=%d/encode/hand", size), func(b *testing.B) {
			var buf []byte
			for b.Loop() {
				buf = AppendReplicate(buf[:0], m.From, m.To, m.Writes, m.Live, Grant{m.LeaseGrant, m.LeaseTermUs})
			}
		})
		b.Run(fmt.Sprintf("value=%d/decode/proto", size), func(b *testing.B) {
			var got MessageT
			for b.Loop() {
				got.Reset()
				_ = proto.Unmarshal(payload, &got)
			}
		})
		b.Run(fmt.Sprintf("value=%d/decode/hand", size), func(b *testing.B) {
			var got MessageT
			for b.Loop() {
				_ = Unmarshal(payload, &got)
			}
		})
	}
}
