package perf

import (
	"errors"
	"fmt"
	"strconv"
)

// RESP reply types, as the first byte of a RESP2 reply says.
const (
	RESPSimple  = '+' // simple string: Str
	RESPError   = '-' // error: Str is the message
	RESPInteger = ':' // integer: Int
	RESPBulk    = '$' // bulk string: Str, or Null when Len is -1
	RESPArray   = '*' // array of Len replies (-1: null array)
)

// MaxRESPBulk is the largest bulk string or array ParseRESP accepts, as
// Redis's own default proto-max-bulk-len.
const MaxRESPBulk = 512 << 20

// maxRESPDepth bounds the nesting of arrays.
const maxRESPDepth = 16

// ErrRESP reports bytes that are not a RESP2 reply.
var ErrRESP = errors.New("resp: malformed reply")

// RESPReply is one parsed RESP2 reply. Str is a sub-slice of the parsed
// buffer, valid only as long as it is.
type RESPReply struct {
	// Type is one of RESPSimple, RESPError, RESPInteger, RESPBulk and
	// RESPArray.
	Type byte
	// Int is the value of an integer.
	Int int64
	// Len is the length of a bulk string or the number of elements of an
	// array, -1 for a null one.
	Len int
	// Str is the text of a simple string or error, or the content of a
	// bulk string. The elements of an array are not kept.
	Str []byte
}

// Null reports whether r is a null bulk string or array, as GET answers
// for a missing key.
func (r RESPReply) Null() bool { return (r.Type == RESPBulk || r.Type == RESPArray) && r.Len < 0 }

// ParseRESP parses the RESP2 reply at the start of buf. It returns the
// reply and the number of bytes it takes. When buf holds only the
// beginning of a reply, n is 0 and err nil: read more. Any error means
// the stream cannot be parsed further. ParseRESP does not allocate.
func ParseRESP(buf []byte) (r RESPReply, n int, err error) {
	return parseRESP(buf, 0)
}

func parseRESP(buf []byte, depth int) (r RESPReply, n int, err error) {
	if len(buf) == 0 {
		return r, 0, nil
	}
	r.Type = buf[0]
	line, n, err := respLine(buf)
	if n == 0 || err != nil {
		return RESPReply{}, 0, err
	}
	switch r.Type {
	case RESPSimple, RESPError:
		r.Str = line
		return r, n, nil
	case RESPInteger:
		if r.Int, err = respInt(line); err != nil {
			return RESPReply{}, 0, err
		}
		return r, n, nil
	case RESPBulk:
		l, err := respLen(line)
		if err != nil {
			return RESPReply{}, 0, err
		}
		r.Len = l
		if l < 0 {
			return r, n, nil
		}
		end := n + l + 2
		if len(buf) < end {
			// Check what has arrived of the trailer, so that garbage is
			// reported as soon as it is seen.
			if len(buf) > n+l && buf[n+l] != '\r' {
				return RESPReply{}, 0, fmt.Errorf("%w: bulk string not followed by CRLF", ErrRESP)
			}
			return RESPReply{}, 0, nil
		}
		if buf[end-2] != '\r' || buf[end-1] != '\n' {
			return RESPReply{}, 0, fmt.Errorf("%w: bulk string not followed by CRLF", ErrRESP)
		}
		r.Str = buf[n : n+l]
		return r, end, nil
	case RESPArray:
		l, err := respLen(line)
		if err != nil {
			return RESPReply{}, 0, err
		}
		r.Len = l
		if depth >= maxRESPDepth && l > 0 {
			return RESPReply{}, 0, fmt.Errorf("%w: arrays nested more than %d deep", ErrRESP, maxRESPDepth)
		}
		for i := 0; i < l; i++ {
			_, m, err := parseRESP(buf[n:], depth+1)
			if m == 0 || err != nil {
				return RESPReply{}, 0, err
			}
			n += m
		}
		return r, n, nil
	}
	return RESPReply{}, 0, fmt.Errorf("%w: unknown type byte %q", ErrRESP, r.Type)
}

// respLine returns the text of the line that starts buf after its type
// byte, and the length of the line with its CRLF; n is 0 while the CRLF
// has not arrived.
func respLine(buf []byte) (line []byte, n int, err error) {
	for i := 1; i < len(buf); i++ {
		switch buf[i] {
		case '\r':
			if i+1 == len(buf) {
				return nil, 0, nil
			}
			if buf[i+1] != '\n' {
				return nil, 0, fmt.Errorf("%w: CR not followed by LF", ErrRESP)
			}
			return buf[1:i], i + 2, nil
		case '\n':
			return nil, 0, fmt.Errorf("%w: LF without CR", ErrRESP)
		}
	}
	return nil, 0, nil
}

// respInt parses a canonical decimal integer: no sign but a leading '-',
// no leading zeros, no "-0".
func respInt(b []byte) (int64, error) {
	neg := len(b) > 0 && b[0] == '-'
	d := b
	if neg {
		d = b[1:]
	}
	if len(d) == 0 || len(d) > 19 || d[0] == '0' && (len(d) > 1 || neg) {
		return 0, fmt.Errorf("%w: bad integer %q", ErrRESP, b)
	}
	var v uint64
	for _, c := range d {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%w: bad integer %q", ErrRESP, b)
		}
		v = v*10 + uint64(c-'0')
	}
	if v > 1<<63-1 && !(neg && v == 1<<63) {
		return 0, fmt.Errorf("%w: integer %q out of range", ErrRESP, b)
	}
	if neg {
		return -int64(v), nil
	}
	return int64(v), nil
}

// respLen parses the length of a bulk string or array: -1 (null) or 0 to
// MaxRESPBulk.
func respLen(b []byte) (int, error) {
	v, err := respInt(b)
	if err != nil {
		return 0, err
	}
	if v < -1 || v > MaxRESPBulk {
		return 0, fmt.Errorf("%w: length %d out of range", ErrRESP, v)
	}
	return int(v), nil
}

// AppendRESPCommand appends a command, an array of bulk strings, to dst.
func AppendRESPCommand(dst []byte, args ...[]byte) []byte {
	dst = appendRESPHeader(dst, RESPArray, len(args))
	for _, a := range args {
		dst = appendRESPBulk(dst, a)
	}
	return dst
}

// AppendRESP appends r, encoded, to dst. An array is encoded as its header
// only (its elements are not kept in a RESPReply).
func AppendRESP(dst []byte, r RESPReply) []byte {
	switch r.Type {
	case RESPSimple, RESPError:
		dst = append(dst, r.Type)
		dst = append(dst, r.Str...)
		return append(dst, '\r', '\n')
	case RESPInteger:
		dst = append(dst, RESPInteger)
		dst = strconv.AppendInt(dst, r.Int, 10)
		return append(dst, '\r', '\n')
	case RESPBulk:
		if r.Len < 0 {
			return append(dst, "$-1\r\n"...)
		}
		return appendRESPBulk(dst, r.Str)
	case RESPArray:
		return appendRESPHeader(dst, RESPArray, r.Len)
	}
	return dst
}

func appendRESPHeader(dst []byte, typ byte, n int) []byte {
	dst = append(dst, typ)
	dst = strconv.AppendInt(dst, int64(n), 10)
	return append(dst, '\r', '\n')
}

func appendRESPBulk(dst, b []byte) []byte {
	dst = appendRESPHeader(dst, RESPBulk, len(b))
	dst = append(dst, b...)
	return append(dst, '\r', '\n')
}
