package codec

import (
	"bytes"
	"encoding/binary"
	"math"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
)

// Attack tests on the one-pass replication encoder (AppendReplicate,
// AppendWrite, MaxWriteOverhead): byte-for-byte equality with
// AppendMessage, whatever dst holds, at every length boundary, and
// round trips through Split and Unmarshal.

// attackDsts are the destinations the encoders are given: nil, empty,
// a prefix, a prefix with spare capacity full of garbage (too little for
// an encoding of need bytes, and room for all of it), and a prefix with
// no spare capacity at all. Each call makes fresh ones, so that two
// encoders never share a backing array.
func attackDsts(need int) []struct {
	name string
	dst  []byte
} {
	garbage := func(n, spare int) []byte {
		b := bytes.Repeat([]byte{0xA5}, n+spare)
		for i := range n {
			b[i] = byte('p' + i%7)
		}
		return b[:n]
	}
	return []struct {
		name string
		dst  []byte
	}{
		{"nil", nil},
		{"empty", []byte{}},
		{"prefix", []byte("prefix")},
		{"garbage spare 1", garbage(3, 1)},
		{"garbage spare 7", garbage(5, 7)},
		{"garbage spare 4KiB", garbage(9, 4096)},
		{"garbage spare for all", garbage(2, need+16)},
		{"exact capacity", bytes.Clone([]byte("xyz"))[:3:3]},
	}
}

// checkReplicate fails unless AppendReplicate makes AppendMessage's bytes
// of m for every destination, leaves the prefix alone, and the frame
// splits and decodes back to m.
func checkReplicate(t *testing.T, what string, m *MessageT) {
	t.Helper()
	g := Grant{ID: m.LeaseGrant, TermUS: m.LeaseTermUs}
	for _, d := range attackDsts(proto.Size(m) + 6) {
		prefix := bytes.Clone(d.dst)
		wantDst := append([]byte(nil), d.dst...)
		want, err := AppendMessage(wantDst, m)
		if err != nil {
			t.Fatalf("%s, dst %s: AppendMessage: %v", what, d.name, err)
		}
		got := AppendReplicate(d.dst, m.From, m.To, m.Writes, m.Live, g)
		if !bytes.Equal(got, want) {
			t.Fatalf("%s, dst %s: AppendReplicate made %d bytes, AppendMessage %d; first difference at %d",
				what, d.name, len(got), len(want), firstDiff(got, want))
		}
		if !bytes.Equal(got[:len(prefix)], prefix) {
			t.Fatalf("%s, dst %s: prefix changed", what, d.name)
		}
		frame := got[len(prefix):]
		payload, n, err := Split(frame, math.MaxInt32)
		if err != nil || n != len(frame) {
			t.Fatalf("%s, dst %s: Split = %d, %v; want %d", what, d.name, n, err, len(frame))
		}
		if hl := HeaderLen(len(payload)); hl+len(payload) != len(frame) {
			t.Fatalf("%s, dst %s: header %d + payload %d != frame %d", what, d.name, hl, len(payload), len(frame))
		}
		var back MessageT
		if err := Unmarshal(payload, &back); err != nil {
			t.Fatalf("%s, dst %s: Unmarshal: %v", what, d.name, err)
		}
		if !proto.Equal(&back, m) {
			t.Fatalf("%s, dst %s: decoded message differs from the one encoded", what, d.name)
		}
		var viaProto MessageT
		if err := proto.Unmarshal(payload, &viaProto); err != nil || !proto.Equal(&viaProto, m) {
			t.Fatalf("%s, dst %s: proto.Unmarshal = %v or differs", what, d.name, err)
		}
	}
}

// checkWrite fails unless AppendWrite makes proto's bytes of w on any dst,
// WriteSize is their length and within MaxWriteOverhead, and
// UnmarshalWrite reads w back.
func checkWrite(t *testing.T, w *WriteT) {
	t.Helper()
	want, err := proto.MarshalOptions{Deterministic: true}.Marshal(w)
	if err != nil {
		t.Fatalf("proto.Marshal: %v", err)
	}
	for _, d := range attackDsts(len(want)) {
		n := len(d.dst)
		prefix := bytes.Clone(d.dst)
		got := AppendWrite(d.dst, w)
		if !bytes.Equal(got[:n], prefix) || !bytes.Equal(got[n:], want) {
			t.Fatalf("dst %s: AppendWrite = %d bytes, proto %d; first difference at %d", d.name, len(got)-n, len(want), firstDiff(got[n:], want))
		}
	}
	if WriteSize(w) != len(want) {
		t.Fatalf("WriteSize = %d, encoding %d", WriteSize(w), len(want))
	}
	if most := len(w.Key) + len(w.Value) + MaxWriteOverhead; len(want) > most {
		t.Fatalf("encoding %d bytes, more than len(key)+len(value)+MaxWriteOverhead = %d", len(want), most)
	}
	var back WriteT
	if err := UnmarshalWrite(bytes.Clone(want), &back); err != nil || !proto.Equal(&back, w) {
		t.Fatalf("UnmarshalWrite: %v, or differs", err)
	}
}

// sizedWrite returns a copy of base with a value (and, if needed, a key
// one or two bytes longer) that makes its encoding exactly n bytes, or nil
// if no such value exists.
func sizedWrite(base *WriteT, n int) *WriteT {
	value := bytes.Repeat([]byte{'v'}, n)
	for extraKey := range 3 {
		w := proto.Clone(base).(*WriteT)
		w.Key += strings.Repeat("K", extraKey)
		w.Value = nil
		rest := n - WriteSize(w)
		for v := max(0, rest-12); v <= rest; v++ {
			w.Value = nil
			if v > 0 {
				w.Value = value[:v:v]
			}
			if WriteSize(w) == n {
				return w
			}
		}
	}
	return nil
}

var maxWrite = &WriteT{Seq: math.MaxUint64, Op: math.MinInt32, Key: "k", ClientId: math.MaxUint64, RequestId: math.MaxUint64,
	Found: true, FirstUnacked: math.MaxUint64, ExpireSeq: math.MaxUint64, Epoch: math.MaxUint64}

// TestAttackEncWriteVarintBoundaries encodes writes whose own encoding is
// right at each boundary of its length's varint (1/2, 2/3, 3/4 bytes),
// alone, among others, with small and max-valued fields.
func TestAttackEncWriteVarintBoundaries(t *testing.T) {
	var sizes []int
	for _, b := range []int{1 << 7, 1 << 14, 1 << 21} {
		for d := -2; d <= 2; d++ {
			sizes = append(sizes, b+d)
		}
	}
	bases := []*WriteT{
		{Seq: 1, Op: OpPut, Key: "k"},
		{Seq: 300, Op: OpPut, Key: "key", ClientId: 7, RequestId: 1 << 20, Epoch: 3},
		maxWrite,
	}
	for _, n := range sizes {
		for bi, base := range bases {
			w := sizedWrite(base, n)
			if w == nil {
				t.Logf("no write of base %d encodes to exactly %d bytes", bi, n)
				continue
			}
			checkWrite(t, w)
			small := &WriteT{Seq: 2, Op: OpDel, Key: "d"}
			for _, ws := range [][]*WriteT{{w}, {small, w, small}, {w, w}} {
				checkReplicate(t, "write of "+strconv.Itoa(n)+" bytes", &MessageT{Opcode: MessageT_OP_REPLICATE, From: "f", To: "t", Writes: ws, Live: true, LeaseGrant: 9, LeaseTermUs: 1})
			}
		}
	}
}

// tunedFrame returns build(v) for a v that makes the frame's payload
// exactly p bytes, trying from names of lengths 0..20 too; nil if none.
func tunedFrame(p int, build func(from string, v int) *MessageT) *MessageT {
	for fl := 0; fl <= 20; fl++ {
		from := strings.Repeat("f", fl)
		v := max(0, p-200)
		for range 8 {
			m := build(from, v)
			s := proto.Size(m)
			if s == p {
				return m
			}
			v += p - s
			if v < 0 {
				break
			}
		}
	}
	return nil
}

// TestAttackEncFrameBoundaries makes frames whose payload is right at the
// 2-byte/6-byte header boundary (0xFFFF is the marker, so 65534 is the
// longest 2-byte one), with one big write (whose length varint also grows)
// or many small ones plus a filler, and with the frame's last field a
// write, the live flag or the lease.
func TestAttackEncFrameBoundaries(t *testing.T) {
	small := make([]*WriteT, 500)
	for i := range small {
		small[i] = &WriteT{Seq: uint64(i + 1), Op: OpPut, Key: "key", Value: bytes.Repeat([]byte{byte(i)}, 120), ClientId: 5, RequestId: uint64(i)}
	}
	builders := map[string]func(from string, v int) *MessageT{
		"one write": func(from string, v int) *MessageT {
			return &MessageT{Opcode: MessageT_OP_REPLICATE, From: from, To: "t", Writes: []*WriteT{{Seq: 1, Op: OpPut, Key: "k", Value: make([]byte, v)}}}
		},
		"one write, live and lease": func(from string, v int) *MessageT {
			return &MessageT{Opcode: MessageT_OP_REPLICATE, From: from, To: "t", Live: true, LeaseGrant: math.MaxUint64, LeaseTermUs: math.MaxUint64,
				Writes: []*WriteT{{Seq: 1, Op: OpPut, Key: "k", Value: make([]byte, v)}}}
		},
		"many writes": func(from string, v int) *MessageT {
			n := min(len(small), v/140)
			ws := append([]*WriteT(nil), small[:n]...)
			rest := v - n*140
			if rest > 0 {
				ws = append(ws, &WriteT{Seq: uint64(n + 1), Op: OpPut, Key: "z", Value: make([]byte, rest)})
			}
			return &MessageT{Opcode: MessageT_OP_REPLICATE, From: from, To: "to", Writes: ws, LeaseGrant: 2}
		},
		"no writes, long names": func(from string, v int) *MessageT {
			return &MessageT{Opcode: MessageT_OP_REPLICATE, From: from, To: strings.Repeat("t", v), Live: true}
		},
	}
	for name, build := range builders {
		for p := 65530; p <= 65540; p++ {
			m := tunedFrame(p, build)
			if m == nil {
				t.Logf("%s: no frame of payload %d", name, p)
				continue
			}
			checkReplicate(t, name+", payload "+strconv.Itoa(p), m)
		}
	}
}

// TestAttackEncEmptyAndZero covers empty frames and writes, nil against
// empty slices, zero-valued and max-valued fields.
func TestAttackEncEmptyAndZero(t *testing.T) {
	for i, m := range []*MessageT{
		{Opcode: MessageT_OP_REPLICATE},
		{Opcode: MessageT_OP_REPLICATE, Writes: []*WriteT{}},
		{Opcode: MessageT_OP_REPLICATE, Writes: []*WriteT{{}}},
		{Opcode: MessageT_OP_REPLICATE, Writes: []*WriteT{{}, {}, {}}},
		{Opcode: MessageT_OP_REPLICATE, Writes: []*WriteT{{Value: []byte{}}, {Value: nil}, {Key: ""}}},
		{Opcode: MessageT_OP_REPLICATE, Live: true},
		{Opcode: MessageT_OP_REPLICATE, LeaseTermUs: 1},
		{Opcode: MessageT_OP_REPLICATE, LeaseGrant: math.MaxUint64, LeaseTermUs: math.MaxUint64, Live: true, From: "\u00e9\U0001F600", To: "\x00"},
		{Opcode: MessageT_OP_REPLICATE, Writes: []*WriteT{maxWrite, {Op: math.MaxInt32}, {Op: -1}, {Found: true}, {Epoch: 1}, {Epoch: 1 << 63}}},
		{Opcode: MessageT_OP_REPLICATE, Writes: []*WriteT{{Seq: 1 << 7}, {Seq: 1<<7 - 1}, {Seq: 1 << 14}, {Seq: 1<<14 - 1}, {Seq: 1 << 63}, {Seq: 1<<63 - 1}}},
		{Opcode: MessageT_OP_REPLICATE, Writes: []*WriteT{{Key: strings.Repeat("\U0010FFFF", 40), Value: bytes.Repeat([]byte{0xff}, 200)}}},
	} {
		checkReplicate(t, "case "+strconv.Itoa(i), m)
		for _, w := range m.Writes {
			checkWrite(t, w)
		}
	}
}

// TestAttackEncOverheadTight checks MaxWriteOverhead against the largest
// overhead a write can really have: every varint field at its longest
// (the op negative), found set, key and value lengths at 1<<21 (a 4-byte
// varint each, which the bound's 10 covers).
func TestAttackEncOverheadTight(t *testing.T) {
	w := proto.Clone(maxWrite).(*WriteT)
	w.Key = strings.Repeat("k", 1<<21)
	w.Value = make([]byte, 1<<21)
	over := WriteSize(w) - len(w.Key) - len(w.Value)
	if over > MaxWriteOverhead {
		t.Fatalf("overhead %d > MaxWriteOverhead %d", over, MaxWriteOverhead)
	}
	if n := len(AppendWrite(nil, w)); n != WriteSize(w) {
		t.Fatalf("AppendWrite %d bytes, WriteSize %d", n, WriteSize(w))
	}
	t.Logf("largest overhead seen %d, bound %d", over, MaxWriteOverhead)
}

// TestAttackEncValueAliasesDst: writes whose keys and values live in
// dst's own prefix (as when a caller re-encodes from a buffer it appends
// to) must still encode right, since the encoder moves only bytes after
// the prefix.
func TestAttackEncValueAliasesDst(t *testing.T) {
	for _, vlen := range []int{1, 127, 128, 70000} {
		buf := make([]byte, vlen+10, 2*vlen+100000)
		for i := range buf {
			buf[i] = byte(i * 7)
		}
		w := &WriteT{Seq: 1, Op: OpPut, Key: "k", Value: buf[5 : 5+vlen]}
		m := &MessageT{Opcode: MessageT_OP_REPLICATE, From: "a", To: "b", Writes: []*WriteT{w, w}}
		want, _ := AppendMessage(bytes.Clone(buf), m)
		got := AppendReplicate(buf, m.From, m.To, m.Writes, false, Grant{})
		if !bytes.Equal(got, want) {
			t.Fatalf("value of %d bytes aliasing dst's prefix: first difference at %d", vlen, firstDiff(got, want))
		}
	}
}

// TestAttackEncInvalidUTF8 checks that strings proto refuses to encode
// never decode: AppendReplicate writes them (the chain's keys are checked
// when clients' requests are decoded), and Unmarshal and UnmarshalWrite
// refuse what it wrote.
func TestAttackEncInvalidUTF8(t *testing.T) {
	for _, m := range []*MessageT{
		{Opcode: MessageT_OP_REPLICATE, From: "a", To: "b", Writes: []*WriteT{{Seq: 1, Op: OpPut, Key: "\xff", Value: []byte("v")}}},
		{Opcode: MessageT_OP_REPLICATE, From: "\xc3", To: "b"},
	} {
		_, perr := AppendMessage(nil, m)
		got := AppendReplicate(nil, m.From, m.To, m.Writes, m.Live, Grant{})
		payload, _, _ := Split(got, math.MaxInt32)
		var back MessageT
		derr := Unmarshal(payload, &back)
		t.Logf("from %q, writes %v: AppendMessage error %v; AppendReplicate %x; Unmarshal of it: %v", m.From, m.Writes, perr, got, derr)
		if perr == nil {
			t.Errorf("AppendMessage accepted invalid UTF-8")
		}
		if derr == nil {
			t.Errorf("Unmarshal accepted invalid UTF-8")
		}
		for _, w := range m.Writes {
			var bw WriteT
			if err := UnmarshalWrite(AppendWrite(nil, w), &bw); err == nil {
				t.Errorf("UnmarshalWrite accepted key %q", w.Key)
			}
		}
	}
}

// attackReader hands out fuzz bytes as numbers, zero once they run out.
type attackReader struct{ b []byte }

func (r *attackReader) byte() byte {
	if len(r.b) == 0 {
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *attackReader) u64() uint64 {
	switch k := r.byte() % 4; k {
	case 0:
		return 0
	case 1:
		return uint64(r.byte())
	case 2:
		return math.MaxUint64 - uint64(r.byte())
	default:
		var b [8]byte
		for i := range b {
			b[i] = r.byte()
		}
		return binary.LittleEndian.Uint64(b[:])
	}
}

func (r *attackReader) str() string {
	n := int(r.byte() % 16)
	var b []byte
	for range n {
		b = append(b, r.byte())
	}
	return string(b)
}

// attackSizes are value lengths near the boundaries that matter.
var attackSizes = []int{0, 1, 100, 110, 120, 16360, 16370, 65450, 65480, 65500, 65520, 2097100, 2097140}

// FuzzAttackEncReplicate builds frames of up to 7 writes with every
// field drawn from the fuzz input, values sized near the boundaries, on
// destinations with prefixes and garbage spare capacity, and checks
// AppendReplicate against AppendMessage and the round trip.
func FuzzAttackEncReplicate(f *testing.F) {
	f.Add([]byte{3, 1, 2, 3, 4, 5, 6, 7, 8, 9}, uint8(3), uint16(10))
	f.Add(bytes.Repeat([]byte{0xff}, 200), uint8(0), uint16(0))
	f.Add(bytes.Repeat([]byte{0x07, 0x03, 0x81}, 100), uint8(17), uint16(65535))
	f.Fuzz(func(t *testing.T, data []byte, prefixLen uint8, spare uint16) {
		r := &attackReader{data}
		from, to := r.str(), r.str()
		live := r.byte()%2 == 1
		g := Grant{ID: r.u64(), TermUS: r.u64()}
		ws := make([]*WriteT, int(r.byte()%8))
		for i := range ws {
			w := &WriteT{Seq: r.u64(), Op: MessageT_Opcode(int32(r.u64())), Key: r.str(), ClientId: r.u64(), RequestId: r.u64(),
				Found: r.byte()%2 == 1, FirstUnacked: r.u64(), ExpireSeq: r.u64(), Epoch: r.u64()}
			sel := r.byte()
			n := attackSizes[int(sel)%len(attackSizes)] + int(r.byte()%64)
			if sel&0x80 != 0 && n > 0 {
				w.Value = bytes.Repeat([]byte{r.byte()}, n)
			} else if sel&0x40 != 0 {
				w.Value = []byte{}
			}
			ws[i] = w
		}
		m := &MessageT{Opcode: MessageT_OP_REPLICATE, From: from, To: to, Writes: ws, Live: live, LeaseGrant: g.ID, LeaseTermUs: g.TermUS}
		dst := bytes.Repeat([]byte{0xC3}, int(prefixLen)+int(spare))[:prefixLen]
		want, err := AppendMessage(bytes.Clone(dst), m)
		if err != nil {
			return // invalid UTF-8 (TestAttackEncInvalidUTF8)
		}
		got := AppendReplicate(dst, from, to, ws, live, g)
		if !bytes.Equal(got, want) {
			t.Fatalf("AppendReplicate differs from AppendMessage at %d (of %d, %d)", firstDiff(got, want), len(got), len(want))
		}
		payload, n, err := Split(got[prefixLen:], math.MaxInt32)
		if err != nil || n != len(got)-int(prefixLen) {
			t.Fatalf("Split: %d, %v", n, err)
		}
		var back MessageT
		if err := Unmarshal(payload, &back); err != nil || !proto.Equal(&back, m) {
			t.Fatalf("Unmarshal: %v, or differs", err)
		}
		for _, w := range ws {
			b := AppendWrite(nil, w)
			if len(b) != WriteSize(w) || len(b) > len(w.Key)+len(w.Value)+MaxWriteOverhead {
				t.Fatalf("write of %d bytes, WriteSize %d, bound %d", len(b), WriteSize(w), len(w.Key)+len(w.Value)+MaxWriteOverhead)
			}
			var bw WriteT
			if err := UnmarshalWrite(b, &bw); err != nil || !proto.Equal(&bw, w) {
				t.Fatalf("UnmarshalWrite: %v, or differs", err)
			}
		}
	})
}
