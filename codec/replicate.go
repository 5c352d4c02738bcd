package codec

import (
	"bytes"
	"encoding/binary"
	"slices"
	"unicode/utf8"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// Replication frames carry every write of a chain once per hop, so the
// chain encodes and decodes them by hand: protobuf's reflection and its
// size pass cost more than the writes' own bytes. The bytes are the same
// as proto's, and anything beyond the fields below goes through proto.

// Field numbers of message_t's replication fields, and of write_t.
const (
	fieldFrom       = 13
	fieldTo         = 14
	fieldWrites     = 16
	fieldLive       = 18
	fieldLeaseGrant = 24
	fieldLeaseTerm  = 27

	fieldWriteSeq       = 1
	fieldWriteOp        = 2
	fieldWriteKey       = 3
	fieldWriteValue     = 4
	fieldWriteClientID  = 5
	fieldWriteRequestID = 6
	fieldWriteFound     = 7
	fieldWriteFirst     = 8
	fieldWriteExpire    = 9
	fieldWriteEpoch     = 20
)

// AppendReplicate appends to dst the framed bytes that AppendMessage makes
// of MessageT{Opcode: OP_REPLICATE, From: from, To: to, Writes: writes,
// Live: live, LeaseGrant: grant.ID, LeaseTermUs: grant.TermUS}, without
// reflection. Unknown fields of the writes are not sent.
//
// It encodes in one pass: the frame's length and each write's are written
// once known, into the room kept for their usual size (two bytes of
// header, one byte of length), and the bytes after them move only when
// they need more (a frame of 64 KiB or more, a write of 128 bytes or
// more). With the rest inlined, sizing every write first took 61% of the
// encoding's time (CPU profile of BenchmarkReplicate).
func AppendReplicate(dst []byte, from, to string, writes []*WriteT, live bool, grant Grant) []byte {
	frame := len(dst)
	dst = append(dst, 0, 0)
	dst = appendVarint(dst, fieldOpcode, uint64(MessageT_OP_REPLICATE))
	dst = appendString(dst, fieldFrom, from)
	dst = appendString(dst, fieldTo, to)
	for _, w := range writes {
		dst = appendTag(dst, fieldWrites, protowire.BytesType)
		at := len(dst)
		dst = AppendWrite(append(dst, 0), w)
		dst = putLength(dst, at)
	}
	if live {
		dst = appendTag(dst, fieldLive, protowire.VarintType)
		dst = append(dst, 1)
	}
	dst = appendVarint(dst, fieldLeaseGrant, grant.ID)
	dst = appendVarint(dst, fieldLeaseTerm, grant.TermUS)
	return putHeader(dst, frame)
}

// putLength writes at dst[at], the one byte kept for it, the length of
// the field that follows as a varint, moving the field if that takes more.
func putLength(dst []byte, at int) []byte {
	n := uint64(len(dst) - at - 1)
	if n < 0x80 {
		dst[at] = byte(n)
		return dst
	}
	var b [binary.MaxVarintLen64]byte // a protobuf varint is a uvarint
	return slices.Replace(dst, at, at+1, b[:binary.PutUvarint(b[:], n)]...)
}

// putHeader writes at dst[frame:], the two bytes kept for it, the header
// of the frame of the payload that follows, moving the payload if the
// header takes more.
func putHeader(dst []byte, frame int) []byte {
	n := len(dst) - frame - 2
	if n < extendedMarker {
		binary.BigEndian.PutUint16(dst[frame:], uint16(n))
		return dst
	}
	var h [6]byte
	return slices.Replace(dst, frame, frame+2, AppendHeader(h[:0], n)...)
}

// Grant is the read lease a REPLICATE frame grants: the successor's ask
// it answers, and how long from that ask the lease holds, in microseconds.
// The zero Grant grants nothing.
type Grant struct {
	ID, TermUS uint64
}

func writeSize(w *WriteT) int {
	return sizeVarint(fieldWriteSeq, w.Seq) + sizeVarint(fieldWriteOp, uint64(int64(w.Op))) +
		sizeString(fieldWriteKey, w.Key) + sizeString(fieldWriteValue, w.Value) +
		sizeVarint(fieldWriteClientID, w.ClientId) + sizeVarint(fieldWriteRequestID, w.RequestId) +
		sizeVarint(fieldWriteFound, boolVarint(w.Found)) + sizeVarint(fieldWriteFirst, w.FirstUnacked) +
		sizeVarint(fieldWriteExpire, w.ExpireSeq) + sizeVarint(fieldWriteEpoch, w.Epoch)
}

func boolVarint(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// sizeVarint and sizeString give the size of a proto3 field, which is
// left out when it holds its zero value. String and bytes fields share
// sizeString and appendString, which take either without converting: a
// conversion would copy every value.
func sizeVarint(num protowire.Number, v uint64) int {
	if v == 0 {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeVarint(v)
}

func sizeString[S string | []byte](num protowire.Number, s S) int {
	if len(s) == 0 {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeBytes(len(s))
}

func appendVarint(dst []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return dst
	}
	return appendUvarint(appendTag(dst, num, protowire.VarintType), v)
}

func appendString[S string | []byte](dst []byte, num protowire.Number, s S) []byte {
	if len(s) == 0 {
		return dst
	}
	dst = appendUvarint(appendTag(dst, num, protowire.BytesType), uint64(len(s)))
	return append(dst, s...)
}

// appendTag appends a field's tag as protowire.AppendTag does.
func appendTag(dst []byte, num protowire.Number, typ protowire.Type) []byte {
	return appendUvarint(dst, protowire.EncodeTag(num, typ))
}

// appendUvarint appends v as protowire.AppendVarint does, without a call
// for the one-byte values that most tags and fields of a write hold:
// encoding a frame made those calls most of its time.
func appendUvarint(dst []byte, v uint64) []byte {
	for v >= 0x80 {
		dst = append(dst, byte(v)|0x80)
		v >>= 7
	}
	return append(dst, byte(v))
}

// replicatePrefix is the opcode field of a REPLICATE message.
var replicatePrefix = protowire.AppendVarint(protowire.AppendTag(nil, fieldOpcode, protowire.VarintType), uint64(MessageT_OP_REPLICATE))

// Unmarshal decodes payload into m, as proto.Unmarshal does. Replication
// messages are decoded by hand; anything else, or anything unusual in
// one, by proto.
func Unmarshal(payload []byte, m *MessageT) error {
	if unmarshalReplicate(payload, m) {
		return nil
	}
	return proto.Unmarshal(payload, m)
}

// unmarshalReplicate decodes a REPLICATE message made only of the fields
// that AppendReplicate writes into m, and reports whether it did. It
// accepts nothing that proto would decode differently: on false, m is to
// be decoded by proto.
func unmarshalReplicate(payload []byte, m *MessageT) bool {
	// Every encoder of REPLICATE, this one and proto's, writes the opcode
	// first; anything else goes to proto without a second scan.
	if !bytes.HasPrefix(payload, replicatePrefix) {
		return false
	}
	m.Reset()
	// One allocation for the frame's writes, one for their pointers, and
	// one for their keys and values, which point into a copy of the
	// payload (payload itself belongs to the caller), rather than one per
	// write.
	payload = bytes.Clone(payload)
	writes := make([]WriteT, countWrites(payload))
	m.Writes = make([]*WriteT, 0, len(writes))
	var op uint64
	for b := payload; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch {
		case typ == protowire.VarintType && (num == fieldOpcode || num == fieldLive || num == fieldLeaseGrant || num == fieldLeaseTerm):
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return false
			}
			b = b[n:]
			switch num {
			case fieldOpcode:
				op = v
			case fieldLive:
				m.Live = v != 0
			case fieldLeaseGrant:
				m.LeaseGrant = v
			default:
				m.LeaseTermUs = v
			}
		case typ == protowire.BytesType && (num == fieldFrom || num == fieldTo || num == fieldWrites):
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return false
			}
			b = b[n:]
			switch num {
			case fieldWrites:
				i := len(m.Writes)
				if i == len(writes) || !unmarshalWrite(v, &writes[i]) {
					return false
				}
				m.Writes = append(m.Writes, &writes[i])
			case fieldFrom, fieldTo:
				if !utf8.Valid(v) {
					return false
				}
				if num == fieldFrom {
					m.From = string(v)
				} else {
					m.To = string(v)
				}
			}
		default:
			return false
		}
	}
	// An opcode proto would truncate to the same int32 is left to proto.
	if op != uint64(MessageT_OP_REPLICATE) {
		m.Reset()
		return false
	}
	if len(m.Writes) == 0 {
		m.Writes = nil // as proto leaves it
	}
	m.Opcode = MessageT_OP_REPLICATE
	return true
}

// countWrites returns how many writes fields payload holds, as far as it
// can be parsed.
func countWrites(payload []byte) int {
	count := 0
	for b := payload; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			break
		}
		b = b[n:]
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			break
		}
		b = b[n:]
		if num == fieldWrites && typ == protowire.BytesType {
			count++
		}
	}
	return count
}

// unmarshalWrite decodes a write_t into w, as proto would, and reports
// whether it could. w's key and value are b's memory.
func unmarshalWrite(b []byte, w *WriteT) bool {
	var key, value []byte
	haveKey := false
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch {
		case typ == protowire.VarintType && (num >= fieldWriteSeq && num <= fieldWriteExpire || num == fieldWriteEpoch) && num != fieldWriteKey && num != fieldWriteValue:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return false
			}
			b = b[n:]
			switch num {
			case fieldWriteSeq:
				w.Seq = v
			case fieldWriteOp:
				w.Op = MessageT_Opcode(int32(v))
			case fieldWriteClientID:
				w.ClientId = v
			case fieldWriteRequestID:
				w.RequestId = v
			case fieldWriteFound:
				w.Found = v != 0
			case fieldWriteFirst:
				w.FirstUnacked = v
			case fieldWriteEpoch:
				w.Epoch = v
			default:
				w.ExpireSeq = v
			}
		case typ == protowire.BytesType && (num == fieldWriteKey || num == fieldWriteValue):
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return false
			}
			b = b[n:]
			if num == fieldWriteKey {
				if !utf8.Valid(v) {
					return false
				}
				key, haveKey = v, true
			} else {
				value = v
			}
		default:
			return false
		}
	}
	if haveKey {
		w.Key = unsafe.String(unsafe.SliceData(key), len(key))
	}
	if value != nil {
		w.Value = value[:len(value):len(value)]
	}
	return true
}
