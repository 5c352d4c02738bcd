package perf

import (
	"bytes"
	"fmt"
	"strconv"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/chaintable/chaintable/codec"
)

// outcome is what one reply says about its request.
type outcome uint8

const (
	outOK   outcome = iota
	outMiss         // a get or del of a missing key
	outErr          // anything else that is not success
)

// A protocol encodes requests and validates replies of one wire format.
// Its methods do not allocate on success.
type protocol interface {
	// appendRequest appends the request(s) for one op on key to dst.
	appendRequest(dst []byte, op Op, key []byte) []byte
	// parseReply parses the reply to op at the start of buf and returns
	// the bytes it takes (0 with a nil error while it is incomplete) and
	// what it says; reason explains an outErr. A non-nil error means the
	// stream is broken.
	parseReply(buf []byte, op Op) (n int, out outcome, reason string, err error)
}

// newProtocol returns the protocol of a target. wait is the replica count
// of a Redis WAIT after every write, 0 for none.
func newProtocol(kind Kind, valueSize, wait int) protocol {
	value := make([]byte, valueSize)
	fillValue(value)
	if kind == Redis {
		return newRESPProtocol(value, wait)
	}
	return &tableProtocol{value: value, maxFrame: codec.DefaultMaxFrame}
}

// fillValue fills v with printable bytes, the same for every run.
func fillValue(v []byte) {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	for i := range v {
		v[i] = alphabet[(i*7+3)%len(alphabet)]
	}
}

// appendKey appends the name of key i to dst.
func appendKey(dst []byte, i uint64) []byte {
	dst = append(dst, KeyPrefix...)
	return strconv.AppendUint(dst, i, 10)
}

// tableProtocol is the table service's format: frames of protobuf
// message_t, encoded by hand exactly as proto.Marshal would.
type tableProtocol struct {
	value    []byte
	maxFrame int
}

// Field numbers of message_t and entry_t used here.
const (
	fieldOpcode = 1
	fieldCType  = 2
	fieldEntry  = 3
	fieldKey    = 4
	fieldValue  = 5
	fieldStatus = 12

	fieldEntryKey   = 1
	fieldEntryValue = 2
)

func (p *tableProtocol) appendRequest(dst []byte, op Op, key []byte) []byte {
	opcode, ctype := uint64(codec.OpDel), uint64(codec.CtKey)
	switch op {
	case OpPut:
		opcode, ctype = uint64(codec.OpPut), uint64(codec.CtEntry)
	case OpGet:
		opcode = uint64(codec.OpGet)
	}
	size := 1 + protowire.SizeVarint(opcode) + 1 + protowire.SizeVarint(ctype)
	entry := 0
	if op == OpPut {
		entry = 1 + protowire.SizeBytes(len(key))
		if len(p.value) > 0 {
			entry += 1 + protowire.SizeBytes(len(p.value))
		}
		size += 1 + protowire.SizeBytes(entry)
	} else {
		size += 1 + protowire.SizeBytes(len(key))
	}
	dst = codec.AppendHeader(dst, size)
	dst = protowire.AppendTag(dst, fieldOpcode, protowire.VarintType)
	dst = protowire.AppendVarint(dst, opcode)
	dst = protowire.AppendTag(dst, fieldCType, protowire.VarintType)
	dst = protowire.AppendVarint(dst, ctype)
	if op != OpPut {
		dst = protowire.AppendTag(dst, fieldKey, protowire.BytesType)
		return protowire.AppendBytes(dst, key)
	}
	dst = protowire.AppendTag(dst, fieldEntry, protowire.BytesType)
	dst = protowire.AppendVarint(dst, uint64(entry))
	dst = protowire.AppendTag(dst, fieldEntryKey, protowire.BytesType)
	dst = protowire.AppendBytes(dst, key)
	if len(p.value) > 0 {
		dst = protowire.AppendTag(dst, fieldEntryValue, protowire.BytesType)
		dst = protowire.AppendBytes(dst, p.value)
	}
	return dst
}

func (p *tableProtocol) parseReply(buf []byte, op Op) (int, outcome, string, error) {
	payload, n, err := codec.Split(buf, p.maxFrame)
	if n == 0 || err != nil {
		return 0, outErr, "", err
	}
	m, err := scanReply(payload)
	if err != nil {
		return 0, outErr, "", err
	}
	out, reason := p.judge(m, op)
	return n, out, reason, nil
}

// judge tells what the reply m says about a request op.
func (p *tableProtocol) judge(m replyFields, op Op) (outcome, string) {
	if m.opcode == codec.OpError {
		// Course servers say nothing more than OP_ERROR for a missing
		// key: no status is taken for NOT_FOUND.
		missing := m.status == codec.Status_STATUS_NOT_FOUND || m.status == codec.Status_STATUS_OK
		if missing && (op == OpGet || op == OpDel) {
			return outMiss, ""
		}
		return outErr, op.String() + ": OP_ERROR " + m.status.String()
	}
	var want codec.MessageT_Opcode
	switch op {
	case OpPut:
		want = codec.OpPut
	case OpGet:
		want = codec.OpGet
	default:
		want = codec.OpDel
	}
	rop, rct, _ := codec.ReplyOf(want)
	if m.opcode != rop || m.ctype != rct {
		return outErr, fmt.Sprintf("%v: reply %v/%v, want %v/%v", op, m.opcode, m.ctype, rop, rct)
	}
	if op == OpGet && m.valueLen != len(p.value) {
		return outErr, fmt.Sprintf("get: value of %d bytes, want %d", m.valueLen, len(p.value))
	}
	return outOK, ""
}

// replyFields are the fields of a reply that validation looks at.
type replyFields struct {
	opcode   codec.MessageT_Opcode
	ctype    codec.MessageT_CType
	status   codec.Status
	valueLen int
}

// scanReply reads the fields of a message_t that validation needs,
// without allocating.
func scanReply(b []byte) (replyFields, error) {
	var m replyFields
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return m, fmt.Errorf("bad reply: %w", protowire.ParseError(n))
		}
		b = b[n:]
		switch {
		case typ == protowire.VarintType && (num == fieldOpcode || num == fieldCType || num == fieldStatus):
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return m, fmt.Errorf("bad reply: %w", protowire.ParseError(n))
			}
			b = b[n:]
			switch num {
			case fieldOpcode:
				m.opcode = codec.MessageT_Opcode(int32(v))
			case fieldCType:
				m.ctype = codec.MessageT_CType(int32(v))
			default:
				m.status = codec.Status(int32(v))
			}
		case typ == protowire.BytesType && num == fieldValue:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return m, fmt.Errorf("bad reply: %w", protowire.ParseError(n))
			}
			m.valueLen = len(v)
			b = b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return m, fmt.Errorf("bad reply: %w", protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
	return m, nil
}

// respProtocol speaks RESP2 to Redis: SET, GET, DEL, and WAIT after each
// write when wait > 0.
type respProtocol struct {
	valueSize int
	wait      int64
	setTail   []byte // the value argument of SET, encoded
	waitCmd   []byte // WAIT <wait> 0, encoded
}

func newRESPProtocol(value []byte, wait int) *respProtocol {
	p := &respProtocol{valueSize: len(value), wait: int64(wait), setTail: appendRESPBulk(nil, value)}
	if wait > 0 {
		p.waitCmd = AppendRESPCommand(nil, []byte("WAIT"), strconv.AppendInt(nil, int64(wait), 10), []byte("0"))
	}
	return p
}

func (p *respProtocol) appendRequest(dst []byte, op Op, key []byte) []byte {
	switch op {
	case OpPut:
		dst = append(dst, "*3\r\n$3\r\nSET\r\n"...)
		dst = appendRESPBulk(dst, key)
		dst = append(dst, p.setTail...)
	case OpGet:
		dst = append(dst, "*2\r\n$3\r\nGET\r\n"...)
		return appendRESPBulk(dst, key)
	default:
		dst = append(dst, "*2\r\n$3\r\nDEL\r\n"...)
		dst = appendRESPBulk(dst, key)
	}
	return append(dst, p.waitCmd...)
}

var respOK = []byte("OK")

func (p *respProtocol) parseReply(buf []byte, op Op) (int, outcome, string, error) {
	r, n, err := ParseRESP(buf)
	if n == 0 || err != nil {
		return 0, outErr, "", err
	}
	var wr RESPReply
	if p.wait > 0 && op != OpGet {
		var m int
		wr, m, err = ParseRESP(buf[n:])
		if m == 0 || err != nil {
			return 0, outErr, "", err
		}
		n += m
	}
	if r.Type == RESPError {
		return n, outErr, op.String() + ": redis error " + string(firstWord(r.Str)), nil
	}
	out := outOK
	switch op {
	case OpPut:
		if r.Type != RESPSimple || !bytes.Equal(r.Str, respOK) {
			return n, outErr, "put: unexpected reply to SET", nil
		}
	case OpGet:
		switch {
		case r.Type != RESPBulk:
			return n, outErr, "get: unexpected reply to GET", nil
		case r.Null():
			out = outMiss
		case r.Len != p.valueSize:
			return n, outErr, fmt.Sprintf("get: value of %d bytes, want %d", r.Len, p.valueSize), nil
		}
	default:
		switch {
		case r.Type != RESPInteger || r.Int < 0 || r.Int > 1:
			return n, outErr, "del: unexpected reply to DEL", nil
		case r.Int == 0:
			out = outMiss
		}
	}
	if p.wait > 0 && op != OpGet {
		switch {
		case wr.Type == RESPError:
			return n, outErr, "wait: redis error " + string(firstWord(wr.Str)), nil
		case wr.Type != RESPInteger:
			return n, outErr, "wait: unexpected reply to WAIT", nil
		case wr.Int < p.wait:
			return n, outErr, fmt.Sprintf("wait: %d replicas acknowledged, want %d", wr.Int, p.wait), nil
		}
	}
	return n, out, "", nil
}

// firstWord returns the error code that starts a Redis error message.
func firstWord(b []byte) []byte {
	if i := bytes.IndexByte(b, ' '); i >= 0 {
		return b[:i]
	}
	if len(b) > 40 {
		return b[:40]
	}
	return b
}
