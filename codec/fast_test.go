package codec

import (
	"bytes"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
)

func TestScanGet(t *testing.T) {
	marshal := func(m *MessageT) []byte {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name string
		b    []byte
		key  string
		ok   bool
	}{
		{"get", marshal(GetRequest("k")), "k", true},
		{"get with CT_NONE", marshal(&MessageT{Opcode: OpGet, CType: CtNone, Key: "k"}), "k", true},
		{"get with c_type unset", marshal(&MessageT{Opcode: OpGet, Key: "k"}), "k", true},
		{"get with a long key", marshal(GetRequest(strings.Repeat("x", 300))), strings.Repeat("x", 300), true},
		{"get with CT_ENTRY", marshal(&MessageT{Opcode: OpGet, CType: CtEntry, Key: "k"}), "", false},
		{"get without key", marshal(&MessageT{Opcode: OpGet, CType: CtKey}), "", false},
		{"del", marshal(DelRequest("k")), "", false},
		{"get with another field", marshal(&MessageT{Opcode: OpGet, CType: CtKey, Key: "k", ClientId: 1}), "", false},
		{"invalid UTF-8 key", append(marshal(&MessageT{Opcode: OpGet, CType: CtKey}), 0x22, 1, 0xff), "", false},
		{"truncated", marshal(GetRequest("key"))[:5], "", false},
		{"an invalid UTF-8 key, then a valid one", append(append(marshal(&MessageT{Opcode: OpGet}), 0x22, 1, 0xff), 0x22, 1, 'k'), "", false},
		{"empty", nil, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, ok := ScanGet(tt.b)
			if ok != tt.ok || string(key) != tt.key {
				t.Fatalf("ScanGet = %q, %v; want %q, %v", key, ok, tt.key, tt.ok)
			}
		})
	}
}

func TestAppendValueReplyMatchesProto(t *testing.T) {
	for _, n := range []int{0, 1, 127, 128, 65520, 65535, 100000} {
		value := bytes.Repeat([]byte{'v'}, n)
		want, err := AppendMessage(nil, &MessageT{Opcode: OpGet + 1, CType: CtValue, Value: value})
		if err != nil {
			t.Fatal(err)
		}
		if got := AppendValueReply([]byte("prefix"), value); !bytes.Equal(got[6:], want) {
			t.Fatalf("value of %d bytes: %x..., want %x...", n, got[6:min(len(got), 20)], want[:min(len(want), 14)])
		}
	}
}

func BenchmarkScanGetAndReply(b *testing.B) {
	req, _ := proto.Marshal(GetRequest("key:000123"))
	value := make([]byte, 32)
	var out []byte
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		key, ok := ScanGet(req)
		if !ok || len(key) == 0 {
			b.Fatal("not a get")
		}
		out = AppendValueReply(out[:0], value)
	}
}

// FuzzScanGet checks ScanGet against protobuf: whatever it accepts must
// decode to a get of the same key with nothing else in it.
func FuzzScanGet(f *testing.F) {
	for _, m := range []*MessageT{GetRequest("k"), {Opcode: OpGet, Key: "k"}, DelRequest("k"), PutRequest("k", []byte("v"))} {
		b, _ := proto.Marshal(m)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		key, ok := ScanGet(b)
		var m MessageT
		err := proto.Unmarshal(b, &m)
		if !ok {
			return
		}
		if err != nil {
			t.Fatalf("ScanGet accepted what proto refuses: %v", err)
		}
		want := &MessageT{Opcode: OpGet, CType: m.CType, Key: string(key)}
		if !proto.Equal(&m, want) || len(m.ProtoReflect().GetUnknown()) != 0 {
			t.Fatalf("ScanGet key %q, proto decodes %v", key, &m)
		}
	})
}

func TestScanWrite(t *testing.T) {
	marshal := func(m *MessageT) []byte {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	entry := &EntryT{Key: "k", Value: []byte("v v")}
	tests := []struct {
		name string
		b    []byte
		want *WriteRequest
	}{
		{"put", marshal(PutRequest("k", []byte("v v"))), &WriteRequest{Op: OpPut, Key: []byte("k"), Value: []byte("v v")}},
		{"put with an empty value", marshal(PutRequest("k", nil)), &WriteRequest{Op: OpPut, Key: []byte("k")}},
		{"put with CT_NONE", marshal(&MessageT{Opcode: OpPut, CType: CtNone, Entry: entry}), &WriteRequest{Op: OpPut, Key: []byte("k"), Value: []byte("v v")}},
		{"put with ids", marshal(&MessageT{Opcode: OpPut, CType: CtEntry, Entry: entry, ClientId: 7, RequestId: 9, FirstUnacked: 5}),
			&WriteRequest{Op: OpPut, Key: []byte("k"), Value: []byte("v v"), ClientID: 7, RequestID: 9, FirstUnacked: 5}},
		{"del", marshal(DelRequest("k")), &WriteRequest{Op: OpDel, Key: []byte("k")}},
		{"put without entry", marshal(&MessageT{Opcode: OpPut, CType: CtEntry}), nil},
		{"put with an empty key", marshal(PutRequest("", []byte("v"))), nil},
		{"put with CT_KEY", marshal(&MessageT{Opcode: OpPut, CType: CtKey, Entry: entry}), nil},
		{"del without key", marshal(&MessageT{Opcode: OpDel, CType: CtKey}), nil},
		{"del with CT_ENTRY", marshal(&MessageT{Opcode: OpDel, CType: CtEntry, Key: "k"}), nil},
		{"get", marshal(GetRequest("k")), nil},
		{"put with a status", marshal(&MessageT{Opcode: OpPut, CType: CtEntry, Entry: entry, Status: Status_STATUS_NOT_FOUND}), nil},
		{"truncated", marshal(PutRequest("key", []byte("value")))[:7], nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var w WriteRequest
			ok := ScanWrite(tt.b, &w)
			if ok != (tt.want != nil) {
				t.Fatalf("ScanWrite = %v, want %v", ok, tt.want != nil)
			}
			if ok && (w.Op != tt.want.Op || string(w.Key) != string(tt.want.Key) || string(w.Value) != string(tt.want.Value) ||
				w.ClientID != tt.want.ClientID || w.RequestID != tt.want.RequestID || w.FirstUnacked != tt.want.FirstUnacked) {
				t.Fatalf("ScanWrite = %+v, want %+v", w, tt.want)
			}
		})
	}
}

// FuzzScanWrite checks ScanWrite against protobuf and the server's rules:
// whatever it accepts must decode to the same valid write and nothing else.
func FuzzScanWrite(f *testing.F) {
	for _, m := range []*MessageT{PutRequest("k", []byte("v")), DelRequest("k"), {Opcode: OpPut, Entry: &EntryT{Key: "k"}, ClientId: 3, RequestId: 4, FirstUnacked: 2}} {
		b, _ := proto.Marshal(m)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var w WriteRequest
		if !ScanWrite(b, &w) {
			return
		}
		var m MessageT
		if err := proto.Unmarshal(b, &m); err != nil {
			t.Fatalf("ScanWrite accepted what proto refuses: %v", err)
		}
		got := WriteOf(&m)
		if got.Op != w.Op || got.Key != string(w.Key) || string(got.Value) != string(w.Value) ||
			got.ClientId != w.ClientID || got.RequestId != w.RequestID || got.FirstUnacked != w.FirstUnacked || len(m.ProtoReflect().GetUnknown()) != 0 {
			t.Fatalf("ScanWrite %+v, proto decodes %v", w, &m)
		}
		if m.Opcode == OpPut && (m.Key != "" || m.Value != nil) || m.Opcode == OpDel && m.Entry != nil {
			t.Fatalf("ScanWrite ignored fields proto decodes: %v", &m)
		}
	})
}

func TestCopyEntry(t *testing.T) {
	tests := []struct {
		name       string
		key, value []byte
	}{
		{"put", []byte("key:1"), []byte("value")},
		{"empty value", []byte("k"), []byte{}},
		{"del", []byte("k"), nil},
		{"empty key", nil, []byte("v")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantKey, wantValue := string(tt.key), string(tt.value)
			// Room for more than the entry: what follows it in dst is
			// another entry's.
			dst := make([]byte, len(tt.key)+len(tt.value)+8)
			key, value := CopyEntry(dst, tt.key, tt.value)
			if key != wantKey || string(value) != wantValue || (value == nil) != (tt.value == nil) {
				t.Fatalf("CopyEntry = %q, %q; want %q, %q", key, value, wantKey, wantValue)
			}
			next := string(dst[len(tt.key)+len(tt.value):])
			// The copies share nothing with the arguments, and growing the
			// value leaves the key and the rest of dst alone.
			for i := range tt.key {
				tt.key[i] = '!'
			}
			for i := range tt.value {
				tt.value[i] = '!'
			}
			_ = append(value, "grown"...)
			if key != wantKey || string(value) != wantValue || string(dst[len(dst)-8:]) != next {
				t.Fatalf("after writing to the arguments and growing the value: %q, %q; want %q, %q", key, value, wantKey, wantValue)
			}
		})
	}
}
