package codec

import (
	"fmt"

	"google.golang.org/protobuf/proto"
)

// AppendWrite appends w's encoding to dst: the bytes proto.Marshal makes
// of it (without unknown fields), made by hand as the replication frames
// make them. The write-ahead log stores each write this way.
func AppendWrite(dst []byte, w *WriteT) []byte {
	dst = appendVarint(dst, fieldWriteSeq, w.Seq)
	dst = appendVarint(dst, fieldWriteOp, uint64(int64(w.Op)))
	dst = appendString(dst, fieldWriteKey, w.Key)
	dst = appendString(dst, fieldWriteValue, w.Value)
	dst = appendVarint(dst, fieldWriteClientID, w.ClientId)
	dst = appendVarint(dst, fieldWriteRequestID, w.RequestId)
	dst = appendVarint(dst, fieldWriteFound, boolVarint(w.Found))
	dst = appendVarint(dst, fieldWriteFirst, w.FirstUnacked)
	dst = appendVarint(dst, fieldWriteExpire, w.ExpireSeq)
	return appendVarint(dst, fieldWriteEpoch, w.Epoch)
}

// WriteSize returns the length of AppendWrite's encoding of w.
func WriteSize(w *WriteT) int { return writeSize(w) }

// MaxWriteOverhead bounds what AppendWrite's encoding of a write takes
// beyond its key and value: WriteSize(w) <= len(w.Key) + len(w.Value) +
// MaxWriteOverhead. A caller that limits sizes can so skip WriteSize for
// all but the largest writes. Seven varint fields of one-byte tags and
// one (the epoch) of a two-byte tag, each varint at most 10 bytes, and
// the key's and the value's one-byte tags and lengths.
const MaxWriteOverhead = 7*(1+10) + (2 + 10) + 2*(1+10)

// UnmarshalWrite decodes b, an encoded write_t, into w as proto.Unmarshal
// would. When it decodes by hand, which it does for anything AppendWrite
// made, w's key and value are b's memory: b must not change while w is in
// use.
func UnmarshalWrite(b []byte, w *WriteT) error {
	w.Reset()
	if unmarshalWrite(b, w) {
		return nil
	}
	w.Reset()
	if err := proto.Unmarshal(b, w); err != nil {
		return fmt.Errorf("codec: decoding a write: %w", err)
	}
	return nil
}
