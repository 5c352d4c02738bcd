package wal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"log/slog"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/chaintable/chaintable/codec"
	"github.com/chaintable/chaintable/diskfs"
)

// The layout of a segment (see DESIGN.md).
const (
	headerSize = 24      // magic, first seq, previous crc, header crc
	frameSize  = 8       // a record's length and crc
	maxRecord  = 1 << 24 // the longest payload a record may have
	sectorSize = 512     // the unit a disk writes whole or not at all
	segSuffix  = ".wal"
	tmpSuffix  = ".tmp"
)

// magic opens every segment; its last byte is the format's version.
var magic = [8]byte{'c', 't', 'w', 'a', 'l', 0, 0, 1}

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// DefaultSegmentSize is the size at which a segment is closed and the
// next one begun, unless Options say otherwise.
const DefaultSegmentSize = 64 << 20

// ErrReleased is returned by ReadFrom for a sequence number whose
// records ReleaseBefore has deleted: the reader needs a snapshot.
var ErrReleased = errors.New("wal: the records asked for were released")

// Options tune a WAL; the zero value is the default.
type Options struct {
	// SegmentSize is the size at which a segment is closed and the next
	// begun; 0 means DefaultSegmentSize.
	SegmentSize int64
	// NoPreallocate leaves segments to grow as records arrive instead
	// of reserving SegmentSize bytes when they are made. Preallocated
	// segments make each fdatasync cheaper (see DESIGN.md).
	NoPreallocate bool
	// Logger receives the log's notices, such as a torn record it
	// truncated; nil means slog.Default().
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.SegmentSize <= 0 {
		o.SegmentSize = DefaultSegmentSize
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// segment is one segment file: the sequence number of its first record,
// which names it.
type segment struct {
	first uint64
	name  string
}

// WAL is a write-ahead log open for appending. Its methods are safe for
// concurrent use. Once a write or a sync of its files fails, it accepts
// nothing more: every later call returns that error, since what reached
// the disk is then unknown.
type WAL struct {
	fsys diskfs.FS
	dir  string
	opts Options

	// syncMu serializes Sync, so that mu is free while the disk works.
	syncMu sync.Mutex

	mu      sync.Mutex
	segs    []segment     // oldest first; the last is the tail
	tail    diskfs.File   // the last segment, open for writing
	retired []diskfs.File // former tails, closed by the next Sync
	flushed int64         // bytes of tail written to the file
	buf     []byte        // encoded records after flushed, not yet written
	crc     uint32        // the crc of the last record
	last    uint64        // the last record's sequence number
	synced  uint64        // the last record known to be on disk
	err     error         // sticky: the log is broken
}

// segmentName returns the file name of the segment that starts at seq.
func segmentName(seq uint64) string { return fmt.Sprintf("%016x%s", seq, segSuffix) }

// Create makes a new, empty log in dir (made if need be), whose first
// record will have sequence number first, which must be at least 1. It
// fails if dir already holds a log.
func Create(fsys diskfs.FS, dir string, first uint64, opts Options) (*WAL, error) {
	if first == 0 {
		return nil, fmt.Errorf("wal: creating a log in %s: sequence numbers start at 1", dir)
	}
	if err := fsys.MkdirAll(dir); err != nil {
		return nil, fmt.Errorf("wal: creating a log in %s: %w", dir, err)
	}
	segs, err := listSegments(fsys, dir)
	if err != nil {
		return nil, err
	}
	if len(segs) > 0 {
		return nil, fmt.Errorf("wal: creating a log in %s: %w", dir, fs.ErrExist)
	}
	w := &WAL{fsys: fsys, dir: dir, opts: opts.withDefaults(), last: first - 1, synced: first - 1}
	if err := w.startSegment(first, 0); err != nil {
		return nil, err
	}
	return w, nil
}

// listSegments returns dir's segments, oldest first, and removes the
// temporary files a crash while making one may have left.
func listSegments(fsys diskfs.FS, dir string) ([]segment, error) {
	names, err := fsys.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("wal: reading %s: %w", dir, err)
	}
	var segs []segment
	removed := false
	for _, name := range names {
		if strings.HasSuffix(name, segSuffix+tmpSuffix) {
			if err := fsys.Remove(filepath.Join(dir, name)); err != nil {
				return nil, fmt.Errorf("wal: removing a leftover: %w", err)
			}
			removed = true
			continue
		}
		hex, ok := strings.CutSuffix(name, segSuffix)
		if !ok {
			continue
		}
		first, err := strconv.ParseUint(hex, 16, 64)
		if err != nil || len(hex) != 16 || first == 0 {
			return nil, fmt.Errorf("wal: %s: not a segment name", filepath.Join(dir, name))
		}
		segs = append(segs, segment{first: first, name: filepath.Join(dir, name)})
	}
	if removed {
		if err := fsys.SyncDir(dir); err != nil {
			return nil, fmt.Errorf("wal: %w", err)
		}
	}
	slices.SortFunc(segs, func(a, b segment) int { return cmpUint(a.first, b.first) })
	return segs, nil
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// startSegment makes the segment that starts at first, its records'
// crc chained from prev, and makes it the tail. The segment appears
// under its name only once its header is on disk, so a crash leaves
// either a whole header or a temporary file, which Open removes.
func (w *WAL) startSegment(first uint64, prev uint32) error {
	name := filepath.Join(w.dir, segmentName(first))
	tmp := name + tmpSuffix
	f, err := w.fsys.Create(tmp)
	if err != nil {
		return fmt.Errorf("wal: %w", err)
	}
	err = w.writeHeader(f, first, prev)
	if err == nil {
		err = w.fsys.Rename(tmp, name)
	}
	if err == nil {
		err = w.fsys.SyncDir(w.dir)
	}
	if err != nil {
		f.Close()
		return fmt.Errorf("wal: making segment %s: %w", name, err)
	}
	w.segs = append(w.segs, segment{first: first, name: name})
	w.tail, w.flushed, w.crc = f, headerSize, prev
	return nil
}

func (w *WAL) writeHeader(f diskfs.File, first uint64, prev uint32) error {
	hdr := appendHeader(nil, first, prev)
	if _, err := f.WriteAt(hdr, 0); err != nil {
		return err
	}
	if !w.opts.NoPreallocate {
		if err := f.Allocate(w.opts.SegmentSize); err != nil {
			return err
		}
	}
	return f.Sync()
}

func appendHeader(dst []byte, first uint64, prev uint32) []byte {
	dst = append(dst, magic[:]...)
	dst = binary.LittleEndian.AppendUint64(dst, first)
	dst = binary.LittleEndian.AppendUint32(dst, prev)
	return binary.LittleEndian.AppendUint32(dst, crc32.Checksum(dst[len(dst)-20:], crcTable))
}

// Append adds ws to the log, in order; their sequence numbers must
// follow LastSeq one by one. It buffers them: they reach the disk with
// the next Sync (or Flush, or when enough are buffered), and survive a
// crash only once a Sync that began after Append returned has returned.
// Writes out of sequence are refused whole, with nothing appended.
func (w *WAL) Append(ws []*codec.WriteT) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	for i, wr := range ws {
		if want := w.last + 1 + uint64(i); wr.Seq != want {
			return fmt.Errorf("wal: appending write %d of %d: sequence number %d, want %d", i+1, len(ws), wr.Seq, want)
		}
		if len(wr.Key)+len(wr.Value)+codec.MaxWriteOverhead <= maxRecord {
			continue // surely small enough, without sizing it
		}
		if n := codec.WriteSize(wr); n > maxRecord {
			return fmt.Errorf("wal: appending write %d (seq %d): %d bytes, more than the limit %d", i+1, wr.Seq, n, maxRecord)
		}
	}
	for _, wr := range ws {
		start := len(w.buf)
		w.buf = append(w.buf, make([]byte, frameSize)...)
		w.buf = codec.AppendWrite(w.buf, wr)
		payload := w.buf[start+frameSize:]
		crc := crc32.Update(w.crc, crcTable, payload)
		binary.LittleEndian.PutUint32(w.buf[start:], uint32(len(payload)))
		binary.LittleEndian.PutUint32(w.buf[start+4:], crc)
		if w.flushed > headerSize || start > 0 {
			if end := w.flushed + int64(len(w.buf)); end > w.opts.SegmentSize {
				// The record goes to a new segment, which a record
				// larger than a segment has to itself.
				rec := bytes.Clone(w.buf[start:])
				w.buf = w.buf[:start]
				if err := w.cut(); err != nil {
					return err
				}
				w.buf = append(w.buf, rec...)
			}
		}
		w.crc, w.last = crc, wr.Seq
	}
	if len(w.buf) >= flushSize {
		return w.flush()
	}
	return nil
}

// flushSize is how many buffered bytes Append writes out without waiting
// for a Sync.
const flushSize = 1 << 20

// fail makes err the log's sticky error and returns it.
func (w *WAL) fail(err error) error {
	w.err = fmt.Errorf("%w (the log accepts no more writes)", err)
	return w.err
}

// flush writes the buffer to the tail. w.mu is held.
func (w *WAL) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	if _, err := w.tail.WriteAt(w.buf, w.flushed); err != nil {
		return w.fail(fmt.Errorf("wal: writing %s at offset %d: %w", w.segs[len(w.segs)-1].name, w.flushed, err))
	}
	w.flushed += int64(len(w.buf))
	w.buf = w.buf[:0]
	return nil
}

// cut ends the tail, which then holds exactly its records, all on disk,
// and starts the next segment. w.mu is held.
func (w *WAL) cut() error {
	if err := w.flush(); err != nil {
		return err
	}
	name := w.segs[len(w.segs)-1].name
	if err := w.tail.Truncate(w.flushed); err != nil {
		return w.fail(fmt.Errorf("wal: truncating %s: %w", name, err))
	}
	if err := w.tail.Sync(); err != nil {
		return w.fail(fmt.Errorf("wal: %w", err))
	}
	w.retired = append(w.retired, w.tail)
	if err := w.startSegment(w.last+1, w.crc); err != nil {
		return w.fail(err)
	}
	return nil
}

// Flush writes the buffered records to the operating system, without
// waiting for the disk: after Flush they survive the process's crash,
// though not the machine's.
func (w *WAL) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	return w.flush()
}

// Sync makes every record appended before it was called durable. Appends
// may go on while it waits for the disk; concurrent Syncs run one at a
// time, and one that finds nothing new to sync returns at once.
func (w *WAL) Sync() error {
	w.syncMu.Lock()
	defer w.syncMu.Unlock()
	w.mu.Lock()
	if w.err != nil {
		defer w.mu.Unlock()
		return w.err
	}
	if err := w.flush(); err != nil {
		w.mu.Unlock()
		return err
	}
	tail, name, last, retired := w.tail, w.segs[len(w.segs)-1].name, w.last, w.retired
	w.retired = nil
	already := w.synced >= last
	w.mu.Unlock()

	var err error
	if !already {
		err = tail.Sync()
	}
	for _, f := range retired {
		f.Close() // synced when it was retired
	}

	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		return w.fail(fmt.Errorf("wal: syncing %s: %w", name, err))
	}
	if w.err != nil {
		return w.err
	}
	w.synced = max(w.synced, last)
	return nil
}

// LastSeq returns the sequence number of the last record appended, or
// one less than the first record's when there is none.
func (w *WAL) LastSeq() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last
}

// SyncedSeq returns the sequence number of the last record known to be
// durable.
func (w *WAL) SyncedSeq() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.synced
}

// FirstSeq returns the sequence number of the oldest record the log
// still holds (or would hold, when it holds none): ReadFrom serves any
// from there on.
func (w *WAL) FirstSeq() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.segs[0].first
}

// ReleaseBefore deletes the segments whose records all have sequence
// numbers below seq, the point of a snapshot that has made them
// unnecessary. The tail is never deleted.
func (w *WAL) ReleaseBefore(seq uint64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	n := 0
	for n+1 < len(w.segs) && w.segs[n+1].first <= seq {
		n++
	}
	if n == 0 {
		return nil
	}
	// Oldest first, so that a crash midway leaves the log contiguous.
	for i, sg := range w.segs[:n] {
		if err := w.fsys.Remove(sg.name); err != nil {
			w.segs = w.segs[i:]
			return fmt.Errorf("wal: releasing %s: %w", sg.name, err)
		}
	}
	w.segs = slices.Delete(w.segs, 0, n)
	if err := w.fsys.SyncDir(w.dir); err != nil {
		return fmt.Errorf("wal: releasing segments: %w", err)
	}
	return nil
}

// Close syncs the log and closes its files. The WAL is then unusable.
func (w *WAL) Close() error {
	err := w.Sync()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.tail == nil {
		return errors.New("wal: the log is already closed")
	}
	for _, f := range append(w.retired, w.tail) {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("wal: closing: %w", cerr)
		}
	}
	w.retired, w.tail = nil, nil
	if w.err == nil {
		w.err = errors.New("wal: the log is closed")
	}
	return err
}

// TruncateAfter deletes every record after seq, for a node that restarts
// and keeps only what it knows was committed; seq must not be below
// FirstSeq()-1. It is for recovery: call it before any Syncer runs on
// the log. A crash midway leaves the log longer than asked, never
// shorter, so a caller that decides again after restarting, and
// truncates again, loses nothing it kept.
func (w *WAL) TruncateAfter(seq uint64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	if seq >= w.last {
		return nil
	}
	if seq+1 < w.segs[0].first {
		return fmt.Errorf("%w: truncating after %d, before the oldest record kept, %d", ErrReleased, seq, w.segs[0].first)
	}
	if err := w.flush(); err != nil {
		return err
	}
	i := len(w.segs) - 1
	for w.segs[i].first > seq+1 {
		i--
	}
	// Newest first, so that a crash midway leaves a prefix of the log.
	if i < len(w.segs)-1 {
		w.retired = append(w.retired, w.tail)
		w.tail = nil
		for j := len(w.segs) - 1; j > i; j-- {
			if err := w.fsys.Remove(w.segs[j].name); err != nil {
				return w.fail(fmt.Errorf("wal: truncating: %w", err))
			}
		}
		if err := w.fsys.SyncDir(w.dir); err != nil {
			return w.fail(fmt.Errorf("wal: truncating: %w", err))
		}
	}
	sg := w.segs[i]
	data, err := w.fsys.ReadFile(sg.name)
	if err != nil {
		return w.fail(fmt.Errorf("wal: truncating: %w", err))
	}
	_, crc, _ := parseHeader(data)
	s := scanner{data: data, off: headerSize, crc: crc}
	for range seq + 1 - sg.first {
		if p, _ := s.next(); p == nil {
			return w.fail(&CorruptError{File: sg.name, Offset: int64(s.off), Reason: "the segment changed under the log"})
		}
	}
	if w.tail == nil {
		if w.tail, err = w.fsys.OpenWrite(sg.name); err != nil {
			return w.fail(fmt.Errorf("wal: truncating: %w", err))
		}
	}
	w.segs = w.segs[:i+1]
	w.flushed, w.crc, w.last, w.synced = int64(s.off), s.crc, seq, min(w.synced, seq)
	if err := w.resetTail(true); err != nil {
		return w.fail(err)
	}
	return nil
}
