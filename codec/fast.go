package codec

import (
	"unicode/utf8"
	"unsafe"

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
			if n < 0 || !utf8.Valid(v) {
				return nil, false // proto checks every occurrence, not just the last
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
	if MessageT_Opcode(op) != OpGet || len(key) == 0 {
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

// Field numbers of the writes' fields, for ScanWrite.
const (
	fieldEntry     = 3
	fieldClientID  = 10
	fieldRequestID = 11
	fieldFirst     = 40
	fieldEntryKey  = 1
	fieldEntryVal  = 2
)

// WriteRequest is a put or del as ScanWrite finds it. Key and Value are
// sub-slices of the payload scanned: copy what must outlive it.
type WriteRequest struct {
	Op                                MessageT_Opcode // OpPut or OpDel
	Key, Value                        []byte
	ClientID, RequestID, FirstUnacked uint64
}

// ScanWrite reports whether payload is a plain put or del that the server
// accepts (see srv.Check) and fills w from it without allocating: writes
// are the other hot path. Anything else returns false, to be decoded with
// proto.Unmarshal and checked as usual.
func ScanWrite(payload []byte, w *WriteRequest) bool {
	var op, ct uint64
	var entry, key []byte // key stays nil unless the field is there
	haveEntry := false
	*w = WriteRequest{}
	for len(payload) > 0 {
		num, typ, n := protowire.ConsumeTag(payload)
		if n < 0 {
			return false
		}
		payload = payload[n:]
		switch {
		case typ == protowire.VarintType && (num == fieldOpcode || num == fieldCType || num == fieldClientID || num == fieldRequestID || num == fieldFirst):
			v, n := protowire.ConsumeVarint(payload)
			if n < 0 {
				return false
			}
			switch num {
			case fieldOpcode:
				op = v
			case fieldCType:
				ct = v
			case fieldClientID:
				w.ClientID = v
			case fieldRequestID:
				w.RequestID = v
			default:
				w.FirstUnacked = v
			}
			payload = payload[n:]
		case typ == protowire.BytesType && (num == fieldEntry || num == fieldKey):
			v, n := protowire.ConsumeBytes(payload)
			if n < 0 {
				return false
			}
			if num == fieldEntry {
				// Repeated occurrences of a message field merge; leave
				// that rare case to proto.
				if haveEntry {
					return false
				}
				entry, haveEntry = v, true
			} else {
				// Every occurrence must be valid UTF-8, as proto checks,
				// though only the last counts.
				if !utf8.Valid(v) {
					return false
				}
				key = v
			}
			payload = payload[n:]
		default:
			return false
		}
	}
	w.Op = MessageT_Opcode(op)
	switch w.Op {
	case OpPut:
		if (ct != uint64(CtEntry) && ct != uint64(CtNone) && ct != uint64(CtBad)) || !haveEntry || key != nil || !scanEntry(entry, w) {
			return false
		}
	case OpDel:
		if ct != uint64(CtKey) && ct != uint64(CtNone) && ct != uint64(CtBad) || haveEntry {
			return false
		}
		w.Key = key
	default:
		return false
	}
	return len(w.Key) > 0
}

// scanEntry reads an entry_t's key and value into w.
func scanEntry(b []byte, w *WriteRequest) bool {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || typ != protowire.BytesType || (num != fieldEntryKey && num != fieldEntryVal) {
			return false
		}
		b = b[n:]
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return false
		}
		if num == fieldEntryKey {
			if !utf8.Valid(v) {
				return false
			}
			w.Key = v
		} else {
			w.Value = v
		}
		b = b[n:]
	}
	return true
}

// CopyEntry copies key and value into dst, which must hold both, and
// returns the copies: what a chain node keeps of a write until its
// successors have it, in memory the caller hands out from larger blocks.
// dst is never to be written again. A nil value stays nil.
func CopyEntry(dst, key, value []byte) (string, []byte) {
	dst = dst[:len(key)+len(value)]
	copy(dst, key)
	copy(dst[len(key):], value)
	k := unsafe.String(unsafe.SliceData(dst), len(key))
	if value == nil {
		return k, nil
	}
	// The value's slice has no room to grow into whatever follows it.
	return k, dst[len(key):len(dst):len(dst)]
}
