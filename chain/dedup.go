package chain

import (
	"errors"
	"fmt"
	"hash/crc32"
	"slices"
	"time"

	"github.com/chaintable/chaintable/codec"
)

// Exactly-once writes, in the manner of RIFL and Raft's client sessions.
// A client numbers its writes 1, 2, ... and tells with each one the first
// request id it may still send (first_unacked): every id below was
// answered, or given up. It never sends an id dedupWindow or more above
// it, so a ring of dedupWindow outcomes per client holds every outcome the
// client may still ask for, and an outcome below first_unacked may go.
// What a node records comes only from the write stream (the head's
// outcome, the client's first_unacked, the expiry point the head chose),
// so every node records the same, and a new head answers retries as the
// old one would have.

// Errors of the exactly-once rules. Each maps to a codec.Status.
var (
	ErrTooOld         = errors.New("chain: retried write too old to know its outcome")
	ErrIDReused       = errors.New("chain: request id already used by another write of the client")
	ErrSessionExpired = errors.New("chain: the client's exactly-once records expired")
	ErrOutOfWindow    = errors.New("chain: request id outside the client's window")
)

// dedupWindow is how many writes a client may have in flight: it sends
// ids in [first_unacked, first_unacked+dedupWindow) only.
const dedupWindow = codec.DedupWindow

// DefaultClientExpiry is how long a node keeps the records of a client
// that wrote nothing, unless configured otherwise: far longer than any
// client goes on retrying a write.
const DefaultClientExpiry = 10 * time.Minute

// clientLog is what a node remembers of one client. The ring holds
// outcomes by value: recording one costs no allocation.
type clientLog struct {
	firstUnacked uint64 // the client sends no request id below this again
	lastSeq      uint64 // sequence number of the client's latest write
	ring         [dedupWindow]outcome
}

// outcome is the result of one client write. Sequence numbers start at 1,
// so seq 0 marks an empty slot.
type outcome struct {
	requestID, seq, digest uint64
	found                  bool
}

// seqAt says that write seq was applied by time t.
type seqAt struct {
	t   time.Time
	seq uint64
}

// firstUnacked returns the first request id the client of w may still
// send. A client that does not say is taken to keep dedupWindow writes in
// flight at most, the rule before the field existed.
func firstUnacked(w *codec.WriteT) uint64 {
	if w.FirstUnacked != 0 {
		return w.FirstUnacked
	}
	if w.RequestId >= dedupWindow {
		return w.RequestId - dedupWindow + 1
	}
	return 1
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// digest identifies what a write does, so that a request id reused for
// another write is told apart from a retry. It is the same on every node.
func digest(w *codec.WriteT) uint64 {
	k := crc32.Update(uint32(w.Op), castagnoli, []byte(w.Key))
	return uint64(k)<<32 | uint64(crc32.Update(0, castagnoli, w.Value))
}

// dedupCheck looks up a client write at the head: dup reports a write
// already applied, with its outcome; an error, a write to refuse; neither,
// a new write to apply.
func (m *Machine) dedupCheck(w *codec.WriteT) (o outcome, dup bool, err error) {
	first := firstUnacked(w)
	if w.RequestId == 0 || w.RequestId < first || w.RequestId >= first+dedupWindow {
		return o, false, fmt.Errorf("%w: request %d with first unacknowledged %d (client %d)", ErrOutOfWindow, w.RequestId, first, w.ClientId)
	}
	log := m.dedup[w.ClientId]
	if log == nil {
		if first > 1 {
			// The client had writes answered, and so records here once:
			// this one may be a retry whose outcome went with them.
			return o, false, fmt.Errorf("%w: client %d, request %d", ErrSessionExpired, w.ClientId, w.RequestId)
		}
		return o, false, nil
	}
	if w.RequestId < log.firstUnacked {
		return o, false, fmt.Errorf("%w: client %d, request %d, first unacknowledged %d", ErrTooOld, w.ClientId, w.RequestId, log.firstUnacked)
	}
	switch o = log.ring[w.RequestId%dedupWindow]; {
	case o.seq == 0 || o.requestID < w.RequestId:
		return o, false, nil // a slot of an id the client is done with
	case o.requestID > w.RequestId:
		return o, false, fmt.Errorf("%w: client %d, request %d after %d", ErrTooOld, w.ClientId, w.RequestId, o.requestID)
	case o.digest != digest(w):
		return o, false, fmt.Errorf("%w: client %d, request %d", ErrIDReused, w.ClientId, w.RequestId)
	}
	return o, true, nil
}

// record remembers the outcome of a client write, as the head found it.
func (m *Machine) record(w *codec.WriteT) {
	log := m.clientLog(w.ClientId)
	log.firstUnacked = max(log.firstUnacked, firstUnacked(w))
	log.lastSeq = max(log.lastSeq, w.Seq)
	log.ring[w.RequestId%dedupWindow] = outcome{requestID: w.RequestId, seq: w.Seq, digest: digest(w), found: w.Op != codec.OpDel || w.Found}
}

func (m *Machine) clientLog(id uint64) *clientLog {
	log := m.dedup[id]
	if log == nil {
		log = new(clientLog)
		m.dedup[id] = log
	}
	return log
}

// expireSeq returns, at the head, a sequence number up to which every
// write was applied clientExpiry ago or earlier, when that is news: the
// next write carries it, and every node then forgets the clients whose
// latest write is no later. The head samples its sequence number at its
// first write a sixteenth of the expiry or more after the last sample. A
// sample says only that the writes up to it were applied by then, and a
// new head has none older than its own: records live at least the expiry,
// under steady writes at most a sixteenth more.
func (m *Machine) expireSeq() uint64 {
	if n := len(m.seqTimes); n == 0 || m.now.Sub(m.seqTimes[n-1].t) >= m.clientExpiry/16 {
		m.seqTimes = append(m.seqTimes, seqAt{t: m.now, seq: m.applied})
	}
	var cut uint64
	i := 0
	for ; i < len(m.seqTimes) && m.now.Sub(m.seqTimes[i].t) >= m.clientExpiry; i++ {
		cut = m.seqTimes[i].seq
	}
	m.seqTimes = slices.Delete(m.seqTimes, 0, i)
	if cut <= m.expiredTo {
		return 0
	}
	return cut
}

// forgetIdleClients drops the records of clients whose latest write has
// a sequence number of upTo or less.
func (m *Machine) forgetIdleClients(upTo uint64) {
	m.expiredTo = upTo
	for id, log := range m.dedup {
		if log.lastSeq <= upTo {
			delete(m.dedup, id)
		}
	}
}

// DedupRecords returns the exactly-once records, for a snapshot: for each
// client a record of the client itself, then the outcomes it may still
// ask for.
func (m *Machine) DedupRecords() []*codec.DedupT {
	var recs []*codec.DedupT
	for id, log := range m.dedup {
		recs = append(recs, &codec.DedupT{ClientId: id, Seq: log.lastSeq, FirstUnacked: log.firstUnacked})
		for _, o := range log.ring {
			if o.seq != 0 && o.requestID >= log.firstUnacked {
				recs = append(recs, &codec.DedupT{ClientId: id, RequestId: o.requestID, Seq: o.seq, Found: o.found, Digest: o.digest})
			}
		}
	}
	return recs
}

// installDedup takes the exactly-once records of a snapshot.
func (m *Machine) installDedup(recs []*codec.DedupT) {
	for _, rec := range recs {
		if rec.GetClientId() == 0 || rec.GetSeq() == 0 {
			continue // no write has sequence number 0: nothing to remember
		}
		log := m.clientLog(rec.GetClientId())
		log.lastSeq = max(log.lastSeq, rec.GetSeq())
		log.firstUnacked = max(log.firstUnacked, rec.GetFirstUnacked())
		if id := rec.GetRequestId(); id != 0 {
			log.ring[id%dedupWindow] = outcome{requestID: id, seq: rec.GetSeq(), digest: rec.GetDigest(), found: rec.GetFound()}
		}
	}
}
