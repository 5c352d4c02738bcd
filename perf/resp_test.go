package perf

import (
	"bytes"
	"errors"
	"testing"
)

func TestParseRESP(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want RESPReply
		n    int // 0: incomplete
		bad  bool
	}{
		{name: "ok", in: "+OK\r\n", want: RESPReply{Type: RESPSimple, Str: []byte("OK")}, n: 5},
		{name: "empty simple", in: "+\r\n", want: RESPReply{Type: RESPSimple, Str: []byte{}}, n: 3},
		{name: "error", in: "-ERR wrong\r\n", want: RESPReply{Type: RESPError, Str: []byte("ERR wrong")}, n: 12},
		{name: "int", in: ":1\r\n", want: RESPReply{Type: RESPInteger, Int: 1}, n: 4},
		{name: "zero", in: ":0\r\n", want: RESPReply{Type: RESPInteger}, n: 4},
		{name: "negative", in: ":-42\r\n", want: RESPReply{Type: RESPInteger, Int: -42}, n: 6},
		{name: "min int", in: ":-9223372036854775808\r\n", want: RESPReply{Type: RESPInteger, Int: -1 << 63}, n: 23},
		{name: "max int", in: ":9223372036854775807\r\n", want: RESPReply{Type: RESPInteger, Int: 1<<63 - 1}, n: 22},
		{name: "bulk", in: "$5\r\nhello\r\n", want: RESPReply{Type: RESPBulk, Len: 5, Str: []byte("hello")}, n: 11},
		{name: "bulk with CRLF inside", in: "$4\r\na\r\nb\r\n", want: RESPReply{Type: RESPBulk, Len: 4, Str: []byte("a\r\nb")}, n: 10},
		{name: "empty bulk", in: "$0\r\n\r\n", want: RESPReply{Type: RESPBulk, Len: 0, Str: []byte{}}, n: 6},
		{name: "null bulk", in: "$-1\r\n", want: RESPReply{Type: RESPBulk, Len: -1}, n: 5},
		{name: "array", in: "*2\r\n$1\r\na\r\n:7\r\n", want: RESPReply{Type: RESPArray, Len: 2}, n: 15},
		{name: "nested", in: "*1\r\n*1\r\n+x\r\n", want: RESPReply{Type: RESPArray, Len: 1}, n: 12},
		{name: "null array", in: "*-1\r\n", want: RESPReply{Type: RESPArray, Len: -1}, n: 5},
		{name: "trailing data", in: "+OK\r\n+OK\r\n", want: RESPReply{Type: RESPSimple, Str: []byte("OK")}, n: 5},

		{name: "nothing", in: ""},
		{name: "type only", in: "+"},
		{name: "no LF yet", in: "+OK\r"},
		{name: "bulk header", in: "$5\r\n"},
		{name: "bulk body", in: "$5\r\nhel"},
		{name: "bulk no CRLF", in: "$5\r\nhello"},
		{name: "bulk CR only", in: "$5\r\nhello\r"},
		{name: "array part", in: "*2\r\n:1\r\n"},

		{name: "unknown type", in: "!3\r\n", bad: true},
		{name: "CR without LF", in: "+O\rK\r\n", bad: true},
		{name: "LF alone", in: "+O\nK\r\n", bad: true},
		{name: "bad int", in: ":1x\r\n", bad: true},
		{name: "empty int", in: ":\r\n", bad: true},
		{name: "plus int", in: ":+1\r\n", bad: true},
		{name: "leading zero", in: ":01\r\n", bad: true},
		{name: "minus zero", in: ":-0\r\n", bad: true},
		{name: "int overflow", in: ":9223372036854775808\r\n", bad: true},
		{name: "bulk -2", in: "$-2\r\n", bad: true},
		{name: "bulk too long", in: "$999999999999\r\n", bad: true},
		{name: "bulk bad trailer", in: "$2\r\nabXY", bad: true},
		{name: "bulk bad trailer early", in: "$2\r\nabX", bad: true},
		{name: "array bad element", in: "*1\r\n?\r\n", bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, n, err := ParseRESP([]byte(tt.in))
			if tt.bad {
				if !errors.Is(err, ErrRESP) {
					t.Fatalf("ParseRESP(%q) = %+v, %d, %v; want ErrRESP", tt.in, got, n, err)
				}
				return
			}
			if err != nil || n != tt.n {
				t.Fatalf("ParseRESP(%q) n=%d err=%v, want n=%d", tt.in, n, err, tt.n)
			}
			if n == 0 {
				return
			}
			if got.Type != tt.want.Type || got.Int != tt.want.Int || got.Len != tt.want.Len || !bytes.Equal(got.Str, tt.want.Str) {
				t.Errorf("ParseRESP(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
			if got.Null() != (tt.want.Len < 0 && (tt.want.Type == RESPBulk || tt.want.Type == RESPArray)) {
				t.Errorf("Null() = %v", got.Null())
			}
		})
	}
}

func TestRESPRoundTrip(t *testing.T) {
	replies := []RESPReply{
		{Type: RESPSimple, Str: []byte("OK")},
		{Type: RESPError, Str: []byte("READONLY You can't write against a read only replica.")},
		{Type: RESPInteger, Int: 0},
		{Type: RESPInteger, Int: -1},
		{Type: RESPInteger, Int: 1<<63 - 1},
		{Type: RESPBulk, Len: 3, Str: []byte("a\r\n")},
		{Type: RESPBulk, Len: 0, Str: []byte{}},
		{Type: RESPBulk, Len: -1},
		{Type: RESPArray, Len: 0},
		{Type: RESPArray, Len: -1},
	}
	var stream []byte
	for _, r := range replies {
		stream = AppendRESP(stream, r)
	}
	for i, want := range replies {
		got, n, err := ParseRESP(stream)
		if err != nil || n == 0 {
			t.Fatalf("reply %d: n=%d err=%v", i, n, err)
		}
		if got.Type != want.Type || got.Int != want.Int || got.Len != want.Len || !bytes.Equal(got.Str, want.Str) {
			t.Errorf("reply %d: got %+v, want %+v", i, got, want)
		}
		stream = stream[n:]
	}
	if len(stream) != 0 {
		t.Errorf("%d bytes left", len(stream))
	}
}

func TestAppendRESPCommand(t *testing.T) {
	got := string(AppendRESPCommand(nil, []byte("SET"), []byte("key:1"), []byte("")))
	want := "*3\r\n$3\r\nSET\r\n$5\r\nkey:1\r\n$0\r\n\r\n"
	if got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	// A command parses as an array of that many elements.
	r, n, err := ParseRESP([]byte(got))
	if err != nil || n != len(got) || r.Type != RESPArray || r.Len != 3 {
		t.Errorf("ParseRESP(command) = %+v, %d, %v", r, n, err)
	}
}

// FuzzRESP checks that the reply parser never panics, never claims more
// bytes than it has, agrees with itself on the exact reply, finds every
// prefix of a reply incomplete, and that a parsed string reply encodes back
// to the same bytes.
func FuzzRESP(f *testing.F) {
	for _, s := range []string{
		"+OK\r\n", "-ERR x\r\n", ":12\r\n", ":-3\r\n", "$3\r\nabc\r\n", "$-1\r\n",
		"*2\r\n$1\r\na\r\n:1\r\n", "*-1\r\n", "*1\r\n*1\r\n*0\r\n", "$2\r\na\r\n\r\n",
		"+OK\r\n:1\r\n", ":01\r\n", "$5\r\nab", "\r\n", "*3\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, buf []byte) {
		r, n, err := ParseRESP(buf)
		if n < 0 || n > len(buf) {
			t.Fatalf("n = %d for %d bytes", n, len(buf))
		}
		if err != nil {
			if !errors.Is(err, ErrRESP) || n != 0 {
				t.Fatalf("error %v with n = %d", err, n)
			}
			return
		}
		if n == 0 {
			return
		}
		exact := buf[:n:n]
		r2, n2, err2 := ParseRESP(exact)
		if err2 != nil || n2 != n || r2.Type != r.Type || r2.Int != r.Int || r2.Len != r.Len || !bytes.Equal(r2.Str, r.Str) {
			t.Fatalf("reparse of %q: %+v %d %v, first %+v %d", exact, r2, n2, err2, r, n)
		}
		if n <= 256 {
			for k := 0; k < n; k++ {
				if _, m, err := ParseRESP(exact[:k]); m != 0 || err != nil {
					t.Fatalf("prefix %q of %q: n=%d err=%v, want incomplete", exact[:k], exact, m, err)
				}
			}
		}
		if r.Type != RESPArray {
			if enc := AppendRESP(nil, r); !bytes.Equal(enc, exact) {
				t.Fatalf("%+v encodes as %q, parsed from %q", r, enc, exact)
			}
		}
	})
}
