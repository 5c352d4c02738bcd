package codec

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"google.golang.org/protobuf/proto"
)

// DefaultMaxFrame is the largest payload accepted unless configured
// otherwise: large enough for a 10 MB value or a big gettable, small enough
// that one connection cannot make a node allocate without bound.
const DefaultMaxFrame = 64 << 20

// extendedMarker in the uint16 length says that a uint32 length follows.
const extendedMarker = 0xFFFF

// ErrFrameTooLarge reports a frame whose declared payload exceeds the limit.
var ErrFrameTooLarge = errors.New("codec: frame exceeds maximum size")

// HeaderLen returns the length of the header that precedes a payload of n bytes.
func HeaderLen(n int) int {
	if n < extendedMarker {
		return 2
	}
	return 6
}

// AppendHeader appends the frame header for a payload of n bytes to dst.
func AppendHeader(dst []byte, n int) []byte {
	if n < extendedMarker {
		return binary.BigEndian.AppendUint16(dst, uint16(n))
	}
	dst = binary.BigEndian.AppendUint16(dst, extendedMarker)
	return binary.BigEndian.AppendUint32(dst, uint32(n))
}

// AppendFrame appends payload as one frame to dst.
func AppendFrame(dst, payload []byte) []byte {
	return append(AppendHeader(dst, len(payload)), payload...)
}

var marshalCached = proto.MarshalOptions{UseCachedSize: true}

// AppendMessage appends m, marshalled and framed, to dst.
func AppendMessage(dst []byte, m proto.Message) ([]byte, error) {
	n := proto.Size(m)
	dst = AppendHeader(dst, n)
	// proto.Size just cached every sub-message's size; reuse it.
	return marshalCached.MarshalAppend(dst, m)
}

// Split finds the first frame in buf. It returns the frame's payload (a
// sub-slice of buf) and the number of bytes the whole frame takes. When buf
// holds only the beginning of a frame, it returns n == 0 and a nil error:
// wait for more bytes. A frame declaring more than max payload bytes is an
// error, and nothing more can be read from that stream.
func Split(buf []byte, max int) (payload []byte, n int, err error) {
	size, hdr, err := ParseHeader(buf, max)
	if err != nil || hdr == 0 || len(buf)-hdr < size {
		return nil, 0, err
	}
	return buf[hdr : hdr+size], hdr + size, nil
}

// ParseHeader decodes the frame header at the start of buf: the payload
// size it declares and the header's length hdr, 0 when buf does not hold
// a whole header yet. A size over max is an error, as in Split.
func ParseHeader(buf []byte, max int) (size, hdr int, err error) {
	if len(buf) < 2 {
		return 0, 0, nil
	}
	size, hdr = int(binary.BigEndian.Uint16(buf)), 2
	if size == extendedMarker {
		if len(buf) < 6 {
			return 0, 0, nil
		}
		size, hdr = int(binary.BigEndian.Uint32(buf[2:])), 6
		if size < extendedMarker {
			// Only one encoding per length: a short payload in the long form
			// is not something any encoder produces, so treat it as garbage.
			return 0, 0, fmt.Errorf("codec: extended length %d below %d", size, extendedMarker)
		}
	}
	if size > max {
		return 0, 0, fmt.Errorf("%w: %d bytes declared, limit %d", ErrFrameTooLarge, size, max)
	}
	return size, hdr, nil
}

// ReadFrame reads one frame from r and returns a newly allocated payload.
// It returns io.EOF only when r ends cleanly between frames.
func ReadFrame(r *bufio.Reader, max int) ([]byte, error) {
	buf, err := r.Peek(2)
	if err != nil {
		if len(buf) == 0 && err == io.EOF {
			return nil, io.EOF
		}
		return nil, unexpected(err)
	}
	if binary.BigEndian.Uint16(buf) == extendedMarker {
		if buf, err = r.Peek(6); err != nil {
			return nil, unexpected(err)
		}
	}
	size, hdr, err := ParseHeader(buf, max)
	if err != nil {
		return nil, err
	}
	r.Discard(hdr)
	payload := make([]byte, size)
	if _, err := io.ReadFull(r, payload); err != nil {
		return nil, unexpected(err)
	}
	return payload, nil
}

// ReadMessage reads one frame from r and unmarshals it into m.
func ReadMessage(r *bufio.Reader, max int, m proto.Message) error {
	payload, err := ReadFrame(r, max)
	if err != nil {
		return err
	}
	if err := proto.Unmarshal(payload, m); err != nil {
		return fmt.Errorf("codec: bad message in %d-byte frame: %w", len(payload), err)
	}
	return nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
