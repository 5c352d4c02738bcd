package codec

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"

	"google.golang.org/protobuf/proto"
)

func TestFrameRoundTripAtBoundaries(t *testing.T) {
	for _, n := range []int{0, 1, 65533, 65534, 65535, 65536, 1 << 20} {
		payload := bytes.Repeat([]byte{byte(n)}, n)
		frame := AppendFrame(nil, payload)
		if want := HeaderLen(n) + n; len(frame) != want {
			t.Fatalf("n=%d: frame is %d bytes, want %d", n, len(frame), want)
		}
		wantHdr := 2
		if n >= 65535 {
			wantHdr = 6
		}
		if HeaderLen(n) != wantHdr {
			t.Fatalf("n=%d: header %d bytes, want %d", n, HeaderLen(n), wantHdr)
		}
		got, used, err := Split(frame, DefaultMaxFrame)
		if err != nil || used != len(frame) || !bytes.Equal(got, payload) {
			t.Fatalf("n=%d: Split = %d bytes, used %d, err %v", n, len(got), used, err)
		}
		// Every strict prefix is an incomplete frame, not an error.
		for _, cut := range []int{0, 1, wantHdr - 1, wantHdr, len(frame) - 1} {
			if cut < 0 || cut >= len(frame) {
				continue
			}
			if _, used, err := Split(frame[:cut], DefaultMaxFrame); used != 0 || err != nil {
				t.Fatalf("n=%d prefix %d: used %d err %v, want incomplete", n, cut, used, err)
			}
		}
		r := bufio.NewReader(bytes.NewReader(frame))
		rp, err := ReadFrame(r, DefaultMaxFrame)
		if err != nil || !bytes.Equal(rp, payload) {
			t.Fatalf("n=%d: ReadFrame = %d bytes, err %v", n, len(rp), err)
		}
		if _, err := ReadFrame(r, DefaultMaxFrame); err != io.EOF {
			t.Fatalf("n=%d: after the frame ReadFrame err = %v, want io.EOF", n, err)
		}
	}
}

func TestSplitManyFramesInOneBuffer(t *testing.T) {
	var buf []byte
	for i := range 100 {
		buf = AppendFrame(buf, bytes.Repeat([]byte{'x'}, i))
	}
	for i := range 100 {
		p, n, err := Split(buf, DefaultMaxFrame)
		if err != nil || n == 0 || len(p) != i {
			t.Fatalf("frame %d: %d bytes, n=%d err=%v", i, len(p), n, err)
		}
		buf = buf[n:]
	}
	if len(buf) != 0 {
		t.Fatalf("%d bytes left over", len(buf))
	}
}

func TestSplitRejects(t *testing.T) {
	tests := []struct {
		name string
		buf  []byte
		max  int
	}{
		{"short frame over limit", []byte{0x01, 0x00}, 100},
		{"4 GiB declared", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, DefaultMaxFrame},
		{"extended form for a short payload", []byte{0xff, 0xff, 0, 0, 0, 5, 1, 2, 3, 4, 5}, DefaultMaxFrame},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := Split(tt.buf, tt.max); err == nil {
				t.Fatal("Split accepted it")
			}
			if _, err := ReadFrame(bufio.NewReader(bytes.NewReader(tt.buf)), tt.max); err == nil {
				t.Fatal("ReadFrame accepted it")
			}
		})
	}
	_, _, err := Split([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, DefaultMaxFrame)
	if !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("err = %v, want ErrFrameTooLarge", err)
	}
}

func TestReadFrameTruncated(t *testing.T) {
	frame := AppendFrame(nil, []byte("hello"))
	for cut := 1; cut < len(frame); cut++ {
		_, err := ReadFrame(bufio.NewReader(bytes.NewReader(frame[:cut])), DefaultMaxFrame)
		if err != io.ErrUnexpectedEOF {
			t.Fatalf("cut %d: err = %v, want io.ErrUnexpectedEOF", cut, err)
		}
	}
}

func TestMessageRoundTrip(t *testing.T) {
	msgs := []*MessageT{
		PutRequest("k", []byte("v a l")),
		PutRequest("empty", []byte{}),
		PutRequest("big", bytes.Repeat([]byte{7}, 70000)),
		GetRequest("k"),
		DelRequest("k"),
		Request(OpSize),
		{Opcode: OpGetTable + 1, CType: CtTable, Entries: []*EntryT{{Key: "a", Value: []byte("1")}}},
		{Opcode: OpStats + 1, CType: CtStats, Stats: &StatsT{Ops: 3, Clients: 2, Time: 99}},
		{Opcode: OpPut, CType: CtEntry, Entry: &EntryT{Key: "x"}, ClientId: 5, RequestId: 9},
		ErrorReply(),
	}
	var stream []byte
	for _, m := range msgs {
		var err error
		if stream, err = AppendMessage(stream, m); err != nil {
			t.Fatal(err)
		}
	}
	r := bufio.NewReader(bytes.NewReader(stream))
	for i, want := range msgs {
		got := new(MessageT)
		if err := ReadMessage(r, DefaultMaxFrame, got); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if !proto.Equal(got, want) {
			t.Fatalf("message %d: got %v, want %v", i, got, want)
		}
	}
}

func TestReplyOf(t *testing.T) {
	tests := []struct {
		op    MessageT_Opcode
		reply MessageT_Opcode
		ct    MessageT_CType
		ok    bool
	}{
		{OpPut, 11, CtNone, true},
		{OpGet, 21, CtValue, true},
		{OpDel, 31, CtNone, true},
		{OpSize, 41, CtResult, true},
		{OpGetKeys, 51, CtKeys, true},
		{OpGetTable, 61, CtTable, true},
		{OpStats, 71, CtStats, true},
		{OpError, OpBad, CtBad, false},
		{OpBad, OpBad, CtBad, false},
		{12, OpBad, CtBad, false},
	}
	for _, tt := range tests {
		reply, ct, ok := ReplyOf(tt.op)
		if reply != tt.reply || ct != tt.ct || ok != tt.ok {
			t.Errorf("ReplyOf(%v) = %v %v %v, want %v %v %v", tt.op, reply, ct, ok, tt.reply, tt.ct, tt.ok)
		}
	}
}

// FuzzSplit feeds arbitrary bytes to the frame decoder: it must never
// panic, never return a payload that is not inside its input, and agree
// with the streaming reader.
func FuzzSplit(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0, 0})
	f.Add(AppendFrame(nil, []byte("abc")))
	f.Add(AppendFrame(AppendFrame(nil, []byte("a")), []byte("bc")))
	f.Add([]byte{0xff, 0xff, 0, 1, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, buf []byte) {
		const max = 1 << 16
		rest := buf
		r := bufio.NewReader(bytes.NewReader(buf))
		for {
			p, n, err := Split(rest, max)
			if err != nil || n == 0 {
				if err != nil && n != 0 {
					t.Fatalf("error %v with n=%d", err, n)
				}
				_, rerr := ReadFrame(r, max)
				if rerr == nil {
					t.Fatalf("ReadFrame read a frame Split did not (split err %v)", err)
				}
				return
			}
			if n > len(rest) || len(p) > n {
				t.Fatalf("n=%d payload %d of %d bytes", n, len(p), len(rest))
			}
			rp, rerr := ReadFrame(r, max)
			if rerr != nil || !bytes.Equal(rp, p) {
				t.Fatalf("ReadFrame disagrees: %v", rerr)
			}
			rest = rest[n:]
		}
	})
}

// FuzzMessage checks that whatever protobuf decodes re-encodes to a
// message that decodes to the same thing.
func FuzzMessage(f *testing.F) {
	for _, m := range []*MessageT{PutRequest("k", []byte("v")), GetRequest("k"), Request(OpStats)} {
		b, _ := proto.Marshal(m)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m := new(MessageT)
		if proto.Unmarshal(b, m) != nil {
			return
		}
		frame, err := AppendMessage(nil, m)
		if err != nil {
			t.Fatal(err)
		}
		back := new(MessageT)
		if err := ReadMessage(bufio.NewReader(bytes.NewReader(frame)), DefaultMaxFrame, back); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(m, back) {
			t.Fatalf("%v != %v", m, back)
		}
	})
}
