package codec

import (
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers of message_t that the allocation-free paths read or write.
const (
	fieldOpcode = 1
	fieldCType  = 2
	fieldKey    = 4
	fieldValue  = 5
)

// ScanGet reports whether payload is a plain get request (opcode OP_GET,
// a content type the server accepts for it, a key, and no other field),
// and returns its key as a sub-slice of payload. Gets are the hot path of
// a read-heavy load: this lets a server answer them without decoding into
// a MessageT. Anything else, including a malformed get, returns ok false
// and should be decoded with proto.Unmarshal.
//
// Like proto.Unmarshal, a field that appears twice counts with its last
// value, and an invalid UTF-8 key is refused.
func ScanGet(payload []byte) (key []byte, ok bool) {
	var op, ct uint64
	for len(payload) > 0 {
		num, typ, n := protowire.ConsumeTag(payload)
		if n < 0 {
			return nil, false
		}
		payload = payload[n:]
		switch {
		case (num == fieldOpcode || num == fieldCType) && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(payload)
			if n < 0 {
				return nil, false
			}
			if num == fieldOpcode {
				op = v
			} else {
				ct = v
			}
			payload = payload[n:]
		case num == fieldKey && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(payload)
			if n < 0 {
				return nil, false
			}
			key = v
			payload = payload[n:]
		default:
			return nil, false
		}
	}
	switch MessageT_CType(ct) {
	case CtKey, CtNone, CtBad:
	default:
		return nil, false
	}
	if MessageT_Opcode(op) != OpGet || len(key) == 0 || !utf8.Valid(key) {
		return nil, false
	}
	return key, true
}

// AppendValueReply appends the framed reply to a successful get of a key
// holding value: the bytes proto would produce for
// MessageT{Opcode: OP_GET+1, CType: CT_VALUE, Value: value}.
func AppendValueReply(dst, value []byte) []byte {
	size := 4 // opcode and c_type: a one-byte tag and a one-byte varint each
	if len(value) > 0 {
		size += protowire.SizeTag(fieldValue) + protowire.SizeBytes(len(value))
	}
	dst = AppendHeader(dst, size)
	dst = append(dst, fieldOpcode<<3|byte(protowire.VarintType), byte(OpGet+1), fieldCType<<3|byte(protowire.VarintType), byte(CtValue))
	if len(value) > 0 {
		dst = protowire.AppendTag(dst, fieldValue, protowire.BytesType)
		dst = protowire.AppendBytes(dst, value)
	}
	return dst
}
