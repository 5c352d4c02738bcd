package wal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"slices"
	"strings"

	"github.com/chaintable/chaintable/codec"
	"github.com/chaintable/chaintable/diskfs"
)

// CorruptError reports damage found in a segment anywhere but in the
// last record a crash may have torn.
type CorruptError struct {
	File   string // the segment
	Offset int64  // where the damaged record or header begins
	Reason string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("wal: %s: damaged at offset %d: %s", e.File, e.Offset, e.Reason)
}

// parseHeader checks a segment's header and returns its first sequence
// number and the crc its records chain from.
func parseHeader(data []byte) (first uint64, prev uint32, reason string) {
	if len(data) < headerSize {
		return 0, 0, fmt.Sprintf("the header is cut short (%d of %d bytes)", len(data), headerSize)
	}
	if !bytes.Equal(data[:len(magic)], magic[:]) {
		return 0, 0, fmt.Sprintf("not a segment of this format (it begins %q)", data[:len(magic)])
	}
	if got, want := binary.LittleEndian.Uint32(data[20:]), crc32.Checksum(data[:20], crcTable); got != want {
		return 0, 0, fmt.Sprintf("header checksum %08x, want %08x", got, want)
	}
	return binary.LittleEndian.Uint64(data[8:]), binary.LittleEndian.Uint32(data[16:]), ""
}

// scanner walks the records of a segment's content.
type scanner struct {
	data []byte
	off  int    // where the next record begins
	crc  uint32 // the crc of the record before it
	// dataAt, if set, tells where data may lie past an offset (see
	// diskfs.Mapping.DataAt), so that a preallocated tail is known to be
	// zeros without reading it.
	dataAt func(off int) (start, end int)
}

// damage describes a record that does not decode: where it begins, how
// far its bytes reach (as its length says, within the file), and why.
type damage struct {
	off, end int
	reason   string
}

// next returns the next record's payload, or nil at the end of the
// records: the end of the file, or preallocated space (zeros).
func (s *scanner) next() ([]byte, *damage) {
	rest := s.data[s.off:]
	// Only where a frame is cut short or has length 0 may the records
	// end: the rest must then be zeros.
	if (len(rest) < frameSize || binary.LittleEndian.Uint32(rest) == 0) && s.zerosFrom(s.off) {
		return nil, nil
	}
	if len(rest) < frameSize {
		return nil, &damage{s.off, len(s.data), fmt.Sprintf("a record's frame cut short (%d of %d bytes)", len(rest), frameSize)}
	}
	n := int(binary.LittleEndian.Uint32(rest))
	switch {
	case n == 0:
		return nil, &damage{s.off, s.off + frameSize, "a record of length 0 followed by data"}
	case n > maxRecord:
		return nil, &damage{s.off, s.off + frameSize, fmt.Sprintf("a record length of %d, more than the limit %d", n, maxRecord)}
	case n > len(rest)-frameSize:
		return nil, &damage{s.off, len(s.data), fmt.Sprintf("a record of %d bytes cut short at %d", n, len(rest)-frameSize)}
	}
	payload := rest[frameSize : frameSize+n]
	crc := crc32.Update(s.crc, crcTable, payload)
	if want := binary.LittleEndian.Uint32(rest[4:]); crc != want {
		return nil, &damage{s.off, s.off + frameSize + n, fmt.Sprintf("record checksum %08x, want %08x", crc, want)}
	}
	s.off += frameSize + n
	s.crc = crc
	return payload, nil
}

// torn reports whether d, in the last segment, is what a crash while
// writing leaves: nothing but zeros (space never written) after the
// damaged record, or a sector within it that the disk never wrote: all
// zeros from the record's start or the sector's, whichever is later, to
// the sector's end. Either way the damage lies past the last sync, whose
// data is all on disk, so nothing after it was ever synced.
func (s *scanner) torn(d *damage) bool {
	if s.zerosFrom(d.end) {
		return true
	}
	for sec := d.off / sectorSize * sectorSize; sec < d.end && sec+sectorSize <= len(s.data); sec += sectorSize {
		if allZero(s.data[max(sec, d.off) : sec+sectorSize]) {
			return true
		}
	}
	return false
}

// zerosFrom reports whether the content from off on is all zeros,
// reading only what may not be a hole.
func (s *scanner) zerosFrom(off int) bool {
	for off < len(s.data) {
		start, end := off, len(s.data)
		if s.dataAt != nil {
			start, end = s.dataAt(off)
			if start >= len(s.data) {
				return true
			}
			// An answer that makes no sense reads everything from off.
			if start < off || end <= start || end > len(s.data) {
				start, end = off, len(s.data)
			}
		}
		if !allZero(s.data[start:end]) {
			return false
		}
		off = end
	}
	return true
}

func allZero(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// segmentScan is what scanSegment learned of a segment.
type segmentScan struct {
	next    uint64 // the sequence number after its last record
	crc     uint32 // its last record's crc
	end     int    // where its records end
	damaged *damage
}

// errStop, from scanSegment's visit, ends the scan early, without error.
var errStop = errors.New("wal: stop scanning")

// content is a segment's bytes: mapped where the file system maps files
// lazily (only the pages read come from the disk, and space preallocated
// but never written is known to be zeros without reading it), read into
// memory otherwise.
type content struct {
	data []byte
	m    diskfs.Mapping // nil when read
}

func readSegment(fsys diskfs.FS, name string) (content, error) {
	if lm, ok := fsys.(diskfs.LazyMapper); ok {
		m, err := lm.MapLazy(name)
		if err != nil {
			return content{}, fmt.Errorf("wal: %w", err)
		}
		return content{data: m.Bytes(), m: m}, nil
	}
	data, err := fsys.ReadFile(name)
	if err != nil {
		return content{}, fmt.Errorf("wal: %w", err)
	}
	return content{data: data}, nil
}

// read runs f, which reads c: a page of a mapping that the disk fails
// to give is an error of the segment named name, not a crash.
func (c content) read(name string, f func() error) error {
	if c.m == nil {
		return f()
	}
	var ferr error
	if err := diskfs.Guard(c.data, func() error { ferr = f(); return nil }); err != nil {
		return fmt.Errorf("wal: %s: %w", name, err)
	}
	return ferr
}

// close unmaps c; nothing read from it may be used after.
func (c content) close() {
	if c.m != nil {
		c.m.Close() // a failed unmap leaves the mapping, which is only memory
	}
}

// scanner returns a scanner of c's records, which begin after the header
// and chain from crc.
func (c content) scanner(crc uint32) scanner {
	s := scanner{data: c.data, off: headerSize, crc: crc}
	if c.m != nil {
		s.dataAt = c.m.DataAt
	}
	return s
}

// scanSegment checks the segment sg, whose content is c, and its records,
// calling visit for each; it stops at damage, which it returns in the
// result, or at an error from visit (errStop: without error). The record
// visit gets, and its key and value, are valid only during the call.
func scanSegment(sg segment, c content, visit func(w *codec.WriteT) error) (segmentScan, error) {
	first, prev, reason := parseHeader(c.data)
	if reason != "" {
		return segmentScan{}, &CorruptError{File: sg.name, Offset: 0, Reason: reason}
	}
	if first != sg.first {
		return segmentScan{}, &CorruptError{File: sg.name, Offset: 0, Reason: fmt.Sprintf("the header says the segment starts at %d", first)}
	}
	s := c.scanner(prev)
	var w codec.WriteT
	for seq := first; ; seq++ {
		off := s.off
		payload, d := s.next()
		if payload == nil {
			return segmentScan{next: seq, crc: s.crc, end: s.off, damaged: d}, nil
		}
		if err := codec.UnmarshalWrite(payload, &w); err != nil {
			return segmentScan{}, &CorruptError{File: sg.name, Offset: int64(off), Reason: err.Error()}
		}
		if w.Seq != seq {
			return segmentScan{}, &CorruptError{File: sg.name, Offset: int64(off), Reason: fmt.Sprintf("a record of seq %d where %d belongs", w.Seq, seq)}
		}
		if visit != nil {
			if err := visit(&w); err == errStop {
				return segmentScan{next: seq + 1, crc: s.crc, end: s.off}, nil
			} else if err != nil {
				return segmentScan{}, err
			}
		}
	}
}

// Open opens the log in dir for appending, after checking every record.
// A torn record at the end of the last segment, from a crash while it was
// written, is truncated (with a log line); any other damage is a
// *CorruptError, which names the file and offset. A dir without a log
// is an error that wraps fs.ErrNotExist. Replay the records with
// ReadFrom, or open with OpenReplay.
func Open(fsys diskfs.FS, dir string, opts Options) (*WAL, error) {
	return open(fsys, dir, 0, opts, nil)
}

// Replay is what OpenReplay hands the records to. The record each gets,
// and its key and value, are valid only during the call: they may lie in
// a mapping of the file.
type Replay struct {
	// Check, if set, sees each record to be replayed as the log is
	// checked, before Write gets any (to size what the replay fills).
	Check func(w *codec.WriteT)
	// Write gets each record to be replayed, in order, once the whole
	// log has been checked. An error from it stops the replay.
	Write func(w *codec.WriteT) error
}

// OpenReplay opens the log in dir for appending, as Open does, and hands
// r the records from sequence number from on: the replay of a restart
// whose snapshot holds the writes before from. Every record from the
// start of the segment that holds from is checked before r.Write gets
// any; the segments whose records all precede from are neither read nor
// checked (ReadFrom checks what it reads of them, for a successor). A
// log that no longer holds from is an error that wraps ErrReleased; one
// that ends before from hands over nothing. An error from r.Write is
// returned as it is.
func OpenReplay(fsys diskfs.FS, dir string, from uint64, opts Options, r Replay) (*WAL, error) {
	return open(fsys, dir, from, opts, &r)
}

// open is Open, and with r OpenReplay from from.
func open(fsys diskfs.FS, dir string, from uint64, opts Options, r *Replay) (*WAL, error) {
	opts = opts.withDefaults()
	segs, err := listSegments(fsys, dir)
	if err != nil {
		return nil, err
	}
	if len(segs) == 0 {
		return nil, fmt.Errorf("wal: no log in %s: %w", dir, fs.ErrNotExist)
	}
	// The check starts with the segment that holds from (or would hold
	// it, at the end of the log).
	start := 0
	var check func(w *codec.WriteT) error
	if r != nil {
		if from < segs[0].first {
			return nil, fmt.Errorf("%w: replaying %s from %d, before the oldest record kept, %d", ErrReleased, dir, from, segs[0].first)
		}
		for start+1 < len(segs) && segs[start+1].first <= from {
			start++
		}
		if r.Check != nil {
			check = func(w *codec.WriteT) error {
				if w.Seq >= from {
					r.Check(w)
				}
				return nil
			}
		}
	}
	// Every segment checked stays open for the replay.
	checked := make([]checkedSegment, 0, len(segs)-start)
	defer func() {
		for _, cs := range checked {
			cs.c.close()
		}
	}()
	var prevCRC uint32
	var next uint64
	var tail segmentScan
	for i := start; i < len(segs); i++ {
		sg := segs[i]
		c, err := readSegment(fsys, sg.name)
		if err != nil {
			return nil, err
		}
		checked = append(checked, checkedSegment{sg: sg, c: c})
		err = c.read(sg.name, func() error {
			if i > start {
				if sg.first != next {
					return &CorruptError{File: sg.name, Reason: fmt.Sprintf("the log before it ends at %d: records are missing", next-1)}
				}
				if _, prev, reason := parseHeader(c.data); reason == "" && prev != prevCRC {
					return &CorruptError{File: sg.name, Reason: fmt.Sprintf("it chains from crc %08x, the segment before ends with %08x", prev, prevCRC)}
				}
			}
			sc, err := scanSegment(sg, c, check)
			if err != nil {
				return err
			}
			if d := sc.damaged; d != nil {
				s := c.scanner(0)
				if i < len(segs)-1 || !s.torn(d) {
					return &CorruptError{File: sg.name, Offset: int64(d.off), Reason: d.reason}
				}
				opts.Logger.Warn("wal: truncating a torn record at the end of the log",
					"file", sg.name, "offset", d.off, "reason", d.reason, "bytes", len(c.data)-d.off)
			}
			next, prevCRC, tail = sc.next, sc.crc, sc
			checked[len(checked)-1].scan = sc
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	if r != nil && r.Write != nil {
		for _, cs := range checked {
			if err := cs.replay(from, r.Write); err != nil {
				return nil, err
			}
		}
	}

	last := segs[len(segs)-1]
	f, err := fsys.OpenWrite(last.name)
	if err != nil {
		return nil, fmt.Errorf("wal: %w", err)
	}
	w := &WAL{fsys: fsys, dir: dir, opts: opts, segs: segs, tail: f,
		flushed: int64(tail.end), crc: prevCRC, last: next - 1, synced: next - 1}
	if err := w.resetTail(tail.damaged != nil); err != nil {
		f.Close()
		return nil, err
	}
	return w, nil
}

// checkedSegment is a segment open checks, and what it found.
type checkedSegment struct {
	sg   segment
	c    content
	scan segmentScan
}

// replay hands write the records of the checked segment from seq from
// on. They were checked: it only finds and decodes them.
func (cs checkedSegment) replay(from uint64, write func(*codec.WriteT) error) error {
	return cs.c.read(cs.sg.name, func() error {
		data := cs.c.data[:cs.scan.end]
		changed := func(off int) error {
			return &CorruptError{File: cs.sg.name, Offset: int64(off), Reason: "the segment changed while it was replayed"}
		}
		var w codec.WriteT
		for seq, off := cs.sg.first, headerSize; seq < cs.scan.next; seq++ {
			if len(data)-off < frameSize {
				return changed(off)
			}
			n := int(binary.LittleEndian.Uint32(data[off:]))
			if n > len(data)-off-frameSize {
				return changed(off)
			}
			payload := data[off+frameSize : off+frameSize+n]
			if off += frameSize + n; seq < from {
				continue
			}
			if err := codec.UnmarshalWrite(payload, &w); err != nil || w.Seq != seq {
				return changed(off - frameSize - n)
			}
			if err := write(&w); err != nil {
				return err
			}
		}
		return nil
	})
}

// resetTail makes the tail's space after its records zeros and the tail
// durable: what Open read may have been in the operating system's cache
// only, from before a crash of the process.
func (w *WAL) resetTail(truncate bool) error {
	name := w.segs[len(w.segs)-1].name
	if truncate {
		if err := w.tail.Truncate(w.flushed); err != nil {
			return fmt.Errorf("wal: truncating %s: %w", name, err)
		}
	}
	if !w.opts.NoPreallocate {
		if err := w.tail.Allocate(w.opts.SegmentSize); err != nil {
			return fmt.Errorf("wal: %w", err)
		}
	}
	if err := w.tail.Sync(); err != nil {
		return fmt.Errorf("wal: %w", err)
	}
	return nil
}

// Reader streams records out of a log, in order.
type Reader struct {
	fsys diskfs.FS
	segs []segment // the segments still to read, the current one first
	next uint64    // the sequence number of the next record to return
	last uint64    // the last record to return
	recs []*codec.WriteT
}

// ReadFrom returns a Reader of the records from seq to the last one
// appended when it is called: the replay after Open, or the writes a
// lagging successor lacks. A seq whose records were released is
// ErrReleased. ReadFrom writes out buffered records first, so that the
// Reader can find them in the files.
func (w *WAL) ReadFrom(seq uint64) (*Reader, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return nil, w.err
	}
	if seq < w.segs[0].first {
		return nil, fmt.Errorf("%w: %d is before the oldest record kept, %d", ErrReleased, seq, w.segs[0].first)
	}
	if seq > w.last+1 {
		return nil, fmt.Errorf("wal: reading from %d: the last record is %d", seq, w.last)
	}
	if err := w.flush(); err != nil {
		return nil, err
	}
	i := len(w.segs) - 1
	for i > 0 && w.segs[i].first > seq {
		i--
	}
	return &Reader{fsys: w.fsys, segs: slices.Clone(w.segs[i:]), next: seq, last: w.last}, nil
}

// Next returns the next record, or io.EOF after the last. A segment
// deleted by ReleaseBefore meanwhile is ErrReleased. The record is the
// caller's.
func (r *Reader) Next() (*codec.WriteT, error) {
	for len(r.recs) == 0 {
		if r.next > r.last {
			return nil, io.EOF
		}
		if len(r.segs) == 0 {
			return nil, fmt.Errorf("wal: reading %d: the log ends before it", r.next)
		}
		if err := r.load(); err != nil {
			return nil, err
		}
	}
	w := r.recs[0]
	r.recs = r.recs[1:]
	r.next++
	return w, nil
}

// load decodes the records of the current segment from r.next on, up to
// r.last: it reads nothing after r.last, which may be being written.
func (r *Reader) load() error {
	sg := r.segs[0]
	r.segs = r.segs[1:]
	c, err := readSegment(r.fsys, sg.name)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %s was deleted while it was read", ErrReleased, sg.name)
	}
	if err != nil {
		return err
	}
	defer c.close()
	err = c.read(sg.name, func() error {
		sc, err := scanSegment(sg, c, func(w *codec.WriteT) error {
			if w.Seq >= r.next {
				r.recs = append(r.recs, &codec.WriteT{Seq: w.Seq, Op: w.Op, Key: strings.Clone(w.Key), Value: bytes.Clone(w.Value),
					ClientId: w.ClientId, RequestId: w.RequestId, Found: w.Found, FirstUnacked: w.FirstUnacked,
					ExpireSeq: w.ExpireSeq, Epoch: w.Epoch})
			}
			if w.Seq >= r.last {
				return errStop
			}
			return nil
		})
		if d := sc.damaged; err == nil && d != nil {
			// Damage before the last record asked for: every record up
			// to it was whole when ReadFrom was called.
			return &CorruptError{File: sg.name, Offset: int64(d.off), Reason: d.reason}
		}
		return err
	})
	if err != nil {
		return err
	}
	if len(r.recs) > 0 && r.recs[0].Seq != r.next {
		return fmt.Errorf("wal: reading %s: it starts at %d, not %d", sg.name, r.recs[0].Seq, r.next)
	}
	return nil
}
