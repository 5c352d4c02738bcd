package perf

import (
	"bytes"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/chaintable/chaintable/codec"
)

// The hand-written encoder must produce what the generated code does.
func TestTableRequestEncoding(t *testing.T) {
	for _, size := range []int{0, 1, 32, 200, 70000} {
		p := newProtocol(Direct, size, 0).(*tableProtocol)
		for _, k := range []uint64{0, 7, 123456789} {
			key := appendKey(nil, k)
			for _, tc := range []struct {
				op   Op
				want *codec.MessageT
			}{
				{OpPut, codec.PutRequest(string(key), p.value)},
				{OpGet, codec.GetRequest(string(key))},
				{OpDel, codec.DelRequest(string(key))},
			} {
				want, err := codec.AppendMessage([]byte("prefix"), tc.want)
				if err != nil {
					t.Fatal(err)
				}
				got := p.appendRequest([]byte("prefix"), tc.op, key)
				if !bytes.Equal(got, want) {
					t.Errorf("%v %s with %d-byte value:\n got %x\nwant %x", tc.op, key, size, got, want)
				}
			}
		}
	}
}

func frame(t *testing.T, m *codec.MessageT) []byte {
	t.Helper()
	b, err := codec.AppendMessage(nil, m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestTableReplies(t *testing.T) {
	p := newProtocol(Direct, 4, 0)
	errReply := func(s codec.Status) *codec.MessageT {
		return &codec.MessageT{Opcode: codec.OpError, CType: codec.CtNone, Status: s}
	}
	tests := []struct {
		name   string
		op     Op
		reply  *codec.MessageT
		out    outcome
		reason string
	}{
		{"put ok", OpPut, &codec.MessageT{Opcode: codec.OpPut + 1, CType: codec.CtNone}, outOK, ""},
		{"del ok", OpDel, &codec.MessageT{Opcode: codec.OpDel + 1, CType: codec.CtNone}, outOK, ""},
		{"get ok", OpGet, &codec.MessageT{Opcode: codec.OpGet + 1, CType: codec.CtValue, Value: []byte("abcd")}, outOK, ""},
		{"get with unknown fields", OpGet, &codec.MessageT{Opcode: codec.OpGet + 1, CType: codec.CtValue, Value: []byte("abcd"), From: "x", Seq: 9, Keys: []string{"a"}}, outOK, ""},
		{"get short value", OpGet, &codec.MessageT{Opcode: codec.OpGet + 1, CType: codec.CtValue, Value: []byte("ab")}, outErr, "value of 2 bytes, want 4"},
		{"get wrong ctype", OpGet, &codec.MessageT{Opcode: codec.OpGet + 1, CType: codec.CtNone}, outErr, "get: reply 21/CT_NONE, want 21/CT_VALUE"},
		{"put answered as get", OpPut, &codec.MessageT{Opcode: codec.OpGet + 1, CType: codec.CtValue}, outErr, "put: reply"},
		{"get missing", OpGet, errReply(codec.Status_STATUS_NOT_FOUND), outMiss, ""},
		{"del missing", OpDel, errReply(codec.Status_STATUS_NOT_FOUND), outMiss, ""},
		{"get missing, course server", OpGet, errReply(codec.Status_STATUS_OK), outMiss, ""},
		{"put error", OpPut, errReply(codec.Status_STATUS_OK), outErr, "put: OP_ERROR STATUS_OK"},
		{"not head", OpPut, errReply(codec.Status_STATUS_NOT_HEAD), outErr, "put: OP_ERROR STATUS_NOT_HEAD"},
		{"not tail", OpGet, errReply(codec.Status_STATUS_NOT_TAIL), outErr, "get: OP_ERROR STATUS_NOT_TAIL"},
		{"unavailable", OpDel, errReply(codec.Status_STATUS_UNAVAILABLE), outErr, "del: OP_ERROR STATUS_UNAVAILABLE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := frame(t, tt.reply)
			n, out, reason, err := p.parseReply(append(b, 0, 1, 2), tt.op)
			if err != nil || n != len(b) {
				t.Fatalf("n=%d err=%v, want n=%d", n, err, len(b))
			}
			if out != tt.out || !strings.Contains(reason, tt.reason) || (tt.reason == "") != (reason == "") {
				t.Errorf("outcome %v %q, want %v %q", out, reason, tt.out, tt.reason)
			}
			for k := 0; k < len(b); k++ {
				if n, _, _, err := p.parseReply(b[:k], tt.op); n != 0 || err != nil {
					t.Fatalf("prefix of %d bytes: n=%d err=%v", k, n, err)
				}
			}
		})
	}
}

func TestTableBadReplies(t *testing.T) {
	p := newProtocol(Direct, 4, 0)
	for name, b := range map[string][]byte{
		"truncated varint": {0, 2, 0x08, 0x80},
		"bad tag":          {0, 1, 0x00},
		"short value":      {0, 3, 0x2a, 0x05, 'a'},
		"wrong wire type":  {0, 2, 0x0d, 0x01}, // field 1 as fixed32
	} {
		if _, _, _, err := p.parseReply(b, OpGet); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	// A frame beyond the limit is an error, not a wait for more.
	if _, _, _, err := p.parseReply([]byte{0xff, 0xff, 0x7f, 0xff, 0xff, 0xff}, OpGet); err == nil {
		t.Error("huge frame: no error")
	}
}

func TestRESPRequests(t *testing.T) {
	p := newProtocol(Redis, 3, 0)
	key := []byte("key:5")
	for _, tc := range []struct {
		op   Op
		want [][]byte
	}{
		{OpPut, [][]byte{[]byte("SET"), key, []byte("dlq")}},
		{OpGet, [][]byte{[]byte("GET"), key}},
		{OpDel, [][]byte{[]byte("DEL"), key}},
	} {
		got := p.appendRequest(nil, tc.op, key)
		want := AppendRESPCommand(nil, tc.want...)
		if tc.op == OpPut {
			// The value is fillValue's, whatever it is.
			v := make([]byte, 3)
			fillValue(v)
			want = AppendRESPCommand(nil, []byte("SET"), key, v)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%v: %q, want %q", tc.op, got, want)
		}
	}
	w := newProtocol(Redis, 3, 2)
	got := string(w.appendRequest(nil, OpDel, key))
	if want := "*2\r\n$3\r\nDEL\r\n$5\r\nkey:5\r\n*3\r\n$4\r\nWAIT\r\n$1\r\n2\r\n$1\r\n0\r\n"; got != want {
		t.Errorf("DEL with WAIT: %q, want %q", got, want)
	}
	if got := string(w.appendRequest(nil, OpGet, key)); strings.Contains(got, "WAIT") {
		t.Errorf("GET with WAIT: %q", got)
	}
}

func TestRESPReplies(t *testing.T) {
	tests := []struct {
		name   string
		wait   int
		op     Op
		in     string
		out    outcome
		reason string
	}{
		{"set", 0, OpPut, "+OK\r\n", outOK, ""},
		{"set error", 0, OpPut, "-OOM no memory\r\n", outErr, "put: redis error OOM"},
		{"set odd", 0, OpPut, "+QUEUED\r\n", outErr, "unexpected reply to SET"},
		{"get", 0, OpGet, "$3\r\nabc\r\n", outOK, ""},
		{"get miss", 0, OpGet, "$-1\r\n", outMiss, ""},
		{"get short", 0, OpGet, "$2\r\nab\r\n", outErr, "value of 2 bytes, want 3"},
		{"get int", 0, OpGet, ":1\r\n", outErr, "unexpected reply to GET"},
		{"del", 0, OpDel, ":1\r\n", outOK, ""},
		{"del miss", 0, OpDel, ":0\r\n", outMiss, ""},
		{"del odd", 0, OpDel, ":2\r\n", outErr, "unexpected reply to DEL"},
		{"set wait", 2, OpPut, "+OK\r\n:2\r\n", outOK, ""},
		{"set wait more", 2, OpPut, "+OK\r\n:3\r\n", outOK, ""},
		{"set wait short", 2, OpPut, "+OK\r\n:1\r\n", outErr, "wait: 1 replicas acknowledged, want 2"},
		{"set wait error", 2, OpPut, "+OK\r\n-ERR WAIT cannot be used\r\n", outErr, "wait: redis error ERR"},
		{"del miss wait", 1, OpDel, ":0\r\n:1\r\n", outMiss, ""},
		{"get no wait", 2, OpGet, "$3\r\nabc\r\n", outOK, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newProtocol(Redis, 3, tt.wait)
			n, out, reason, err := p.parseReply([]byte(tt.in+"+EXTRA\r\n"), tt.op)
			if err != nil || n != len(tt.in) {
				t.Fatalf("n=%d err=%v, want n=%d", n, err, len(tt.in))
			}
			if out != tt.out || !strings.Contains(reason, tt.reason) || (tt.reason == "") != (reason == "") {
				t.Errorf("outcome %v %q, want %v %q", out, reason, tt.out, tt.reason)
			}
			for k := 0; k < len(tt.in); k++ {
				if n, _, _, err := p.parseReply([]byte(tt.in[:k]), tt.op); n != 0 || err != nil {
					t.Fatalf("prefix %q: n=%d err=%v", tt.in[:k], n, err)
				}
			}
		})
	}
}

// Encoding requests and validating replies must not allocate.
func TestNoAllocs(t *testing.T) {
	for _, kind := range []Kind{Direct, Redis} {
		p := newProtocol(kind, 32, 1)
		var replies [3][]byte
		if kind == Redis {
			v := make([]byte, 32)
			replies = [3][]byte{[]byte("+OK\r\n:1\r\n"), AppendRESP(nil, RESPReply{Type: RESPBulk, Len: 32, Str: v}), []byte(":0\r\n:1\r\n")}
		} else {
			replies = [3][]byte{
				frame(t, &codec.MessageT{Opcode: codec.OpPut + 1, CType: codec.CtNone}),
				frame(t, &codec.MessageT{Opcode: codec.OpGet + 1, CType: codec.CtValue, Value: make([]byte, 32)}),
				frame(t, &codec.MessageT{Opcode: codec.OpError, Status: codec.Status_STATUS_NOT_FOUND}),
			}
		}
		buf := make([]byte, 0, 4096)
		key := make([]byte, 0, 32)
		i := uint64(0)
		allocs := testing.AllocsPerRun(1000, func() {
			i++
			buf = buf[:0]
			for j, op := range []Op{OpPut, OpGet, OpDel} {
				key = appendKey(key[:0], i)
				buf = p.appendRequest(buf, op, key)
				if _, out, _, err := p.parseReply(replies[j], op); err != nil || out == outErr {
					t.Fatalf("%v: %v %v", op, out, err)
				}
			}
		})
		if allocs != 0 {
			t.Errorf("%v: %v allocations per 3 requests", kind, allocs)
		}
	}
}

// scanReply must agree with proto.Unmarshal on the fields it reads.
func TestScanReplyAgrees(t *testing.T) {
	m := &codec.MessageT{Opcode: codec.OpError, CType: codec.CtNone, Status: codec.Status_STATUS_TOO_OLD,
		Value: []byte("xyz"), Entries: []*codec.EntryT{{Key: "a"}}, Committed: 1 << 40}
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	f, err := scanReply(b)
	if err != nil {
		t.Fatal(err)
	}
	if f.opcode != m.Opcode || f.ctype != m.CType || f.status != m.Status || f.valueLen != len(m.Value) {
		t.Errorf("scanReply = %+v, message %v", f, m)
	}
}
