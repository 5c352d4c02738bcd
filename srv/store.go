package srv

import (
	"errors"
	"fmt"
	"time"
	"unsafe"

	"github.com/chaintable/chaintable/codec"
)

// ErrBadRequest is the cause of every request that cannot be executed as
// sent: an unknown opcode, a content type that does not fit it, a missing
// key or entry.
var ErrBadRequest = errors.New("bad request")

// Store executes client requests against a table and keeps the statistics.
type Store struct {
	Table *Table
	Stats *Stats
	// MaxScan, when positive, is the most keys a getkeys or gettable
	// answers: one of a larger table is refused with STATUS_TOO_LARGE
	// rather than hold its event loop for as long as building the reply
	// takes. Zero means DefaultMaxScan; negative, no limit.
	MaxScan int
}

// DefaultMaxScan is the zero Store's MaxScan.
const DefaultMaxScan = 100_000

// NewStore returns a store over a new table with n stripes.
func NewStore(n int) (*Store, error) {
	t, err := NewTable(n)
	if err != nil {
		return nil, err
	}
	return &Store{Table: t, Stats: new(Stats)}, nil
}

// Check validates req. It is lenient where the course's own clients are
// known to be sloppy: a request may leave c_type unset (CT_BAD) or say
// CT_NONE as long as the field it needs is present.
func Check(req *codec.MessageT) error {
	ct := req.GetCType()
	switch op := req.GetOpcode(); op {
	case codec.OpPut:
		if ct != codec.CtEntry && ct != codec.CtNone && ct != codec.CtBad {
			return fmt.Errorf("%w: put with content type %v", ErrBadRequest, ct)
		}
		if req.GetEntry() == nil {
			return fmt.Errorf("%w: put without an entry", ErrBadRequest)
		}
		if req.GetEntry().GetKey() == "" {
			return fmt.Errorf("%w: put with an empty key", ErrBadRequest)
		}
	case codec.OpGet, codec.OpDel:
		if ct != codec.CtKey && ct != codec.CtNone && ct != codec.CtBad {
			return fmt.Errorf("%w: %v with content type %v", ErrBadRequest, op, ct)
		}
		if req.GetKey() == "" {
			return fmt.Errorf("%w: %v with an empty key", ErrBadRequest, op)
		}
	case codec.OpSize, codec.OpGetKeys, codec.OpGetTable, codec.OpStats:
		if ct != codec.CtNone && ct != codec.CtBad {
			return fmt.Errorf("%w: %v with content type %v", ErrBadRequest, op, ct)
		}
	default:
		return fmt.Errorf("%w: opcode %v", ErrBadRequest, op)
	}
	return nil
}

// Execute runs req, which must have passed Check, and fills reply, which
// must be empty. A get or del of a missing key is answered OP_ERROR, like
// every failure. Stats requests are not counted as operations, but every
// request is counted by outcome (see Stats.CountRequest).
func (s *Store) Execute(req, reply *codec.MessageT) {
	s.Stats.CountRequest(req.GetOpcode(), s.ExecuteUncounted(req, reply))
}

// ExecuteUncounted is Execute without counting the request: it returns
// the outcome for the caller to count once the request's outcome is
// decided, for a reply that may yet be dropped (a read held until the
// write it sees commits, say).
func (s *Store) ExecuteUncounted(req, reply *codec.MessageT) codec.Status {
	op := req.GetOpcode()
	if op == codec.OpStats {
		ops, micros, clients := s.Stats.Snapshot()
		setReply(reply, op)
		reply.Stats = &codec.StatsT{Ops: int32(ops), Time: micros, Clients: int32(clients)}
		return codec.Status_STATUS_OK
	}
	if codec.IsWrite(op) {
		w := codec.WriteOf(req)
		if !s.Apply(w.Op, w.Key, w.Value) {
			SetError(reply, codec.Status_STATUS_NOT_FOUND)
			return codec.Status_STATUS_NOT_FOUND
		}
		setReply(reply, op)
		return codec.Status_STATUS_OK
	}
	if (op == codec.OpGetKeys || op == codec.OpGetTable) && s.overScan() {
		// OP_ERROR, which a course client prints as an error: the least
		// wrong of the answers it understands, since a table is never
		// "not found".
		SetError(reply, codec.Status_STATUS_TOO_LARGE)
		return codec.Status_STATUS_TOO_LARGE
	}
	start := s.OpClock()
	ok := true
	switch op {
	case codec.OpGet:
		// A found empty value must still be a non-nil slice, or it would
		// be indistinguishable from a missing one.
		reply.Value, ok = s.Table.AppendValue(reply.Value[:0:0], req.GetKey())
	case codec.OpSize:
		reply.Result = int32(s.Table.Size())
	case codec.OpGetKeys:
		reply.Keys = s.Table.Keys()
	case codec.OpGetTable:
		entries := s.Table.Entries()
		reply.Entries = make([]*codec.EntryT, len(entries))
		for i, e := range entries {
			reply.Entries[i] = &codec.EntryT{Key: e.Key, Value: e.Value}
		}
	}
	s.RecordOps(1, s.OpClock()-start)
	if !ok {
		reply.Reset()
		SetError(reply, codec.Status_STATUS_NOT_FOUND)
		return codec.Status_STATUS_NOT_FOUND
	}
	setReply(reply, op)
	return codec.Status_STATUS_OK
}

// overScan reports whether the table has more keys than a getkeys or
// gettable may answer.
func (s *Store) overScan() bool {
	limit := s.MaxScan
	if limit == 0 {
		limit = DefaultMaxScan
	}
	return limit > 0 && s.Table.Size() > limit
}

// fail makes reply the OP_ERROR reply to a request of opcode op that
// says why, and counts it.
func (s *Store) fail(reply *codec.MessageT, op codec.MessageT_Opcode, why codec.Status) {
	s.Stats.CountRequest(op, why)
	SetError(reply, why)
}

func setReply(reply *codec.MessageT, op codec.MessageT_Opcode) {
	reply.Opcode, reply.CType, _ = codec.ReplyOf(op)
}

// SetError makes reply the OP_ERROR reply that says why.
func SetError(reply *codec.MessageT, why codec.Status) {
	reply.Opcode, reply.CType, reply.Status = codec.OpError, codec.CtNone, why
}

// Serve validates and executes every request at once: a Store is the
// Handler of a standalone node.
func (s *Store) Serve(_ *Conn, req, reply *codec.MessageT) bool {
	if err := Check(req); err != nil {
		s.fail(reply, req.GetOpcode(), codec.Status_STATUS_BAD_REQUEST)
		return true
	}
	s.Execute(req, reply)
	return true
}

// errorFrames holds the framed OP_ERROR reply for each status.
var errorFrames = func() map[codec.Status][]byte {
	frames := make(map[codec.Status][]byte)
	for st := range codec.Status_name {
		frames[codec.Status(st)] = mustFrame(&codec.MessageT{Opcode: codec.OpError, CType: codec.CtNone, Status: codec.Status(st)})
	}
	return frames
}()

// ErrorFrame returns the framed OP_ERROR reply that says why. The caller
// must not modify it.
func ErrorFrame(why codec.Status) []byte { return errorFrames[why] }

// writtenFrames holds the framed replies to a successful put and del.
var writtenFrames = map[codec.MessageT_Opcode][]byte{
	codec.OpPut: mustFrame(&codec.MessageT{Opcode: codec.OpPut + 1, CType: codec.CtNone}),
	codec.OpDel: mustFrame(&codec.MessageT{Opcode: codec.OpDel + 1, CType: codec.CtNone}),
}

// WrittenFrame returns the framed reply to a successful put or del (op).
// The caller must not modify it.
func WrittenFrame(op codec.MessageT_Opcode) []byte { return writtenFrames[op] }

// AppendGet appends the framed reply to a get of key to dst. It is the
// allocation-free equivalent of Execute for a get.
func (s *Store) AppendGet(dst, key []byte) []byte {
	start := s.OpClock()
	dst, ok := s.Table.AppendEncoded(dst, key, codec.AppendValueReply)
	s.RecordOps(1, s.OpClock()-start)
	if !ok {
		s.Stats.CountRequest(codec.OpGet, codec.Status_STATUS_NOT_FOUND)
		return append(dst, ErrorFrame(codec.Status_STATUS_NOT_FOUND)...)
	}
	s.Stats.CountRequest(codec.OpGet, codec.Status_STATUS_OK)
	return dst
}

// ServeGet answers a get at once: a Store is a GetServer.
func (s *Store) ServeGet(dst, key []byte) ([]byte, bool) { return s.AppendGet(dst, key), true }

// ServeWrite executes a plain put or del at once: a Store is a
// WriteServer.
func (s *Store) ServeWrite(c *Conn, w *codec.WriteRequest) {
	s.ServeWrites(c, unsafe.Slice(w, 1))
}

// ServeWrites executes plain puts and dels that came one after the other
// on c, in order, timed as one batch (see Stats.RecordOps): a Store is a
// WriteBatchServer. The batch's time includes counting and queueing each
// reply, a small part of it.
func (s *Store) ServeWrites(c *Conn, ws []codec.WriteRequest) {
	start := s.OpClock()
	for i := range ws {
		w := &ws[i]
		if !s.ApplyUntimed(w.Op, unsafe.String(unsafe.SliceData(w.Key), len(w.Key)), w.Value) {
			s.Stats.CountRequest(w.Op, codec.Status_STATUS_NOT_FOUND)
			c.AnswerFrame(ErrorFrame(codec.Status_STATUS_NOT_FOUND))
			continue
		}
		s.Stats.CountRequest(w.Op, codec.Status_STATUS_OK)
		c.AnswerFrame(WrittenFrame(w.Op))
	}
	s.RecordOps(len(ws), s.OpClock()-start)
}

// Apply executes a put or del and reports whether a deleted key was
// present. The table copies key and value. It counts as an operation in
// the statistics, timed on its own.
func (s *Store) Apply(op codec.MessageT_Opcode, key string, value []byte) (found bool) {
	start := s.OpClock()
	found = s.ApplyUntimed(op, key, value)
	s.RecordOps(1, s.OpClock()-start)
	return found
}

// ApplyUntimed is Apply without the statistics, for a caller that applies
// writes in batches: it records each batch with RecordOps, timed with two
// OpClock readings rather than two per write.
func (s *Store) ApplyUntimed(op codec.MessageT_Opcode, key string, value []byte) (found bool) {
	if op == codec.OpDel {
		return s.Table.Del(key)
	}
	s.Table.Put(key, value)
	return true
}

// OpClock reads the clock that times table operations: the monotonic
// clock alone, which costs half a time.Now.
func (s *Store) OpClock() time.Duration { return time.Since(clockBase) }

// RecordOps counts n table operations that took d together (see
// Stats.RecordOps).
func (s *Store) RecordOps(n int, d time.Duration) { s.Stats.RecordOps(n, d) }

// clockBase is OpClock's zero.
var clockBase = time.Now()

// Prefetch brings into the CPU's caches what writing each of n keys will
// read (see Table.Prefetch).
func (s *Store) Prefetch(n int, key func(i int) string) { s.Table.Prefetch(n, key) }

// Reset empties the table; the statistics stay.
func (s *Store) Reset() { s.Table.Clear() }
