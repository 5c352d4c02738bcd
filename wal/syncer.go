package wal

import (
	"cmp"
	"errors"
	"fmt"
	"sync"

	"github.com/chaintable/chaintable/codec"
)

// Mode says when a Syncer makes appended writes durable: the values of
// table_server's --fsync flag.
type Mode int

const (
	// Batch is group commit: one fsync at a time runs in the background
	// and covers every write appended before it began, so the writes
	// that arrive while one runs share the next.
	Batch Mode = iota
	// Always fsyncs within every Append, before it returns.
	Always
	// None never fsyncs: Append hands the writes to the operating
	// system, which writes them out when it will.
	None
)

var modeNames = [...]string{Batch: "batch", Always: "always", None: "none"}

// String returns the mode's flag value.
func (m Mode) String() string {
	if m < 0 || int(m) >= len(modeNames) {
		return fmt.Sprintf("Mode(%d)", int(m))
	}
	return modeNames[m]
}

// ParseMode returns the Mode named s: "always", "batch" or "none".
func ParseMode(s string) (Mode, error) {
	for m, name := range modeNames {
		if s == name {
			return Mode(m), nil
		}
	}
	return 0, fmt.Errorf("wal: fsync mode %q: want always, batch or none", s)
}

// Syncer appends to a WAL and makes the writes durable as its Mode says.
// Appenders learn that their writes are durable from Wait, which blocks,
// or from the notify function, which lets an event loop wait without
// blocking. Its methods are safe for concurrent use.
type Syncer struct {
	w      *WAL
	mode   Mode
	notify func(durable uint64, err error)
	kick   chan struct{} // Batch: there is something to sync
	done   chan struct{} // Batch: the sync loop has ended

	mu       sync.Mutex
	cond     *sync.Cond // signalled when durable or err changes
	appended uint64     // the last seq appended through the Syncer
	durable  uint64     // the last seq durable as the mode promises
	err      error      // sticky: a failed write or sync, or Close
	closed   bool

	notifyMu sync.Mutex
	notified uint64 // the last seq passed to notify
}

// NewSyncer returns a Syncer over w in mode m. notify, if not nil, is
// called whenever more writes have become durable (with the last one's
// seq) or the log has failed (with the error); under Batch it runs on
// the Syncer's goroutine, under Always and None within Append, and must
// not call the Syncer. Close stops the Syncer.
func NewSyncer(w *WAL, m Mode, notify func(durable uint64, err error)) *Syncer {
	last := w.LastSeq()
	s := &Syncer{w: w, mode: m, notify: notify, appended: last, durable: w.SyncedSeq()}
	s.cond = sync.NewCond(&s.mu)
	if m == Batch {
		s.kick = make(chan struct{}, 1)
		s.done = make(chan struct{})
		go s.loop()
	}
	return s
}

// Append appends ws to the log and returns the last one's seq. Under
// Always they are durable when it returns; under Batch, when Wait(seq)
// returns nil or notify reports seq; under None they are with the
// operating system when it returns, and Wait does not wait.
func (s *Syncer) Append(ws []*codec.WriteT) (uint64, error) {
	if len(ws) == 0 {
		return s.w.LastSeq(), nil
	}
	s.mu.Lock()
	err := s.err
	s.mu.Unlock()
	if err != nil {
		return 0, err
	}
	if err := s.w.Append(ws); err != nil {
		return 0, s.failed(err)
	}
	seq := ws[len(ws)-1].Seq
	s.mu.Lock()
	if s.err != nil || s.closed {
		defer s.mu.Unlock()
		return 0, cmp.Or(s.err, errClosed)
	}
	s.appended = max(s.appended, seq)
	if s.mode == Batch {
		// Under mu, which Close holds to close kick.
		select {
		case s.kick <- struct{}{}:
		default: // a kick is pending already
		}
	}
	s.mu.Unlock()
	switch s.mode {
	case Batch:
		return seq, nil
	case Always:
		if err := s.w.Sync(); err != nil {
			return 0, s.failed(err)
		}
	default:
		if err := s.w.Flush(); err != nil {
			return 0, s.failed(err)
		}
	}
	s.advance(seq)
	return seq, nil
}

// loop runs Batch's fsyncs, one after another while there is something
// new to sync.
func (s *Syncer) loop() {
	defer close(s.done)
	for range s.kick {
		s.mu.Lock()
		pending, stopped := s.appended > s.durable, s.err != nil
		s.mu.Unlock()
		if stopped {
			return
		}
		if !pending {
			continue
		}
		// Sync covers what was appended before it began, which
		// SyncedSeq then reports.
		if err := s.w.Sync(); err != nil {
			s.failed(err)
			return
		}
		s.advance(s.w.SyncedSeq())
	}
}

// advance records that the writes up to seq are durable.
func (s *Syncer) advance(seq uint64) {
	s.mu.Lock()
	if seq <= s.durable {
		s.mu.Unlock()
		return
	}
	s.durable = seq
	s.cond.Broadcast()
	s.mu.Unlock()
	if s.notify == nil {
		return
	}
	// Concurrent Appends (under Always and None) advance concurrently:
	// notify hears of each seq in order, skipping any overtaken.
	s.notifyMu.Lock()
	defer s.notifyMu.Unlock()
	if seq > s.notified {
		s.notified = seq
		s.notify(seq, nil)
	}
}

// failed makes err the Syncer's sticky error, tells the waiters, and
// returns it.
func (s *Syncer) failed(err error) error {
	s.mu.Lock()
	first := s.err == nil
	if first {
		s.err = err
		s.cond.Broadcast()
	}
	err = s.err
	s.mu.Unlock()
	if first && s.notify != nil {
		s.notify(0, err)
	}
	return err
}

// Wait blocks until the write seq is durable, as the mode promises, and
// returns nil then, or the error that means it never will be.
func (s *Syncer) Wait(seq uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.durable < seq && s.err == nil {
		s.cond.Wait()
	}
	if s.durable >= seq {
		return nil
	}
	return s.err
}

// Durable returns the seq of the last write durable as the mode promises.
func (s *Syncer) Durable() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.durable
}

// errClosed is the Syncer's sticky error once it is closed.
var errClosed = errors.New("wal: the syncer is closed")

// Close stops the Syncer, syncs what was appended (under every mode),
// and wakes its waiters. It does not close the WAL, which is to be
// closed after it.
func (s *Syncer) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errClosed
	}
	s.closed = true
	if s.mode == Batch {
		close(s.kick) // under mu, which Append holds to send on it
	}
	s.mu.Unlock()
	if s.mode == Batch {
		<-s.done
	}
	err := s.w.Sync()
	if err == nil {
		s.advance(s.w.SyncedSeq())
	}
	s.mu.Lock()
	if s.err == nil {
		s.err = errClosed
		s.cond.Broadcast()
	}
	s.mu.Unlock()
	return err
}
