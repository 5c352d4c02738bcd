package codec

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"
)

// TestAppendWrite checks that AppendWrite makes proto's bytes and that
// UnmarshalWrite reads back what either made.
func TestAppendWrite(t *testing.T) {
	for _, w := range []*WriteT{
		{},
		{Seq: 1, Op: OpPut, Key: "k", Value: []byte("v"), ClientId: 7, RequestId: 9},
		{Seq: 2, Op: OpDel, Key: "k", ClientId: 7, RequestId: 10, Found: true, FirstUnacked: 8, ExpireSeq: 1, Epoch: 5},
		{Seq: 1 << 62, Op: OpDel, Key: "ключ"},
		{Seq: 3, Op: MessageT_Opcode(-1), Value: bytes.Repeat([]byte{0}, 300)},
	} {
		got := AppendWrite(nil, w)
		want, err := proto.MarshalOptions{Deterministic: true}.Marshal(w)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) || WriteSize(w) != len(got) {
			t.Errorf("AppendWrite(%v) = %x (size %d), proto makes %x", w, got, WriteSize(w), want)
		}
		var back WriteT
		if err := UnmarshalWrite(got, &back); err != nil || !proto.Equal(&back, w) {
			t.Errorf("UnmarshalWrite(%x) = %v, %v; want %v", got, &back, err, w)
		}
	}
	// Something only proto decodes (an unknown field) still decodes; and
	// garbage is an error.
	withUnknown := append(AppendWrite(nil, &WriteT{Seq: 5}), 0x78, 0x01) // field 15, varint 1
	var w WriteT
	if err := UnmarshalWrite(withUnknown, &w); err != nil || w.Seq != 5 {
		t.Errorf("UnmarshalWrite with an unknown field = %v, %v", &w, err)
	}
	if err := UnmarshalWrite([]byte{0x0a, 0x05}, &w); err == nil {
		t.Error("UnmarshalWrite of a truncated field: no error")
	}
}
