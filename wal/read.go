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
	if allZero(rest) {
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
	if allZero(s.data[d.end:]) {
		return true
	}
	for sec := d.off / sectorSize * sectorSize; sec < d.end && sec+sectorSize <= len(s.data); sec += sectorSize {
		if allZero(s.data[max(sec, d.off) : sec+sectorSize]) {
			return true
		}
	}
	return false
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

// scanSegment checks the segment sg, whose content is data, and its
// records, calling visit for each; it stops at damage, which it returns
// in the result, or at an error from visit.
func scanSegment(sg segment, data []byte, visit func(w *codec.WriteT) error) (segmentScan, error) {
	first, prev, reason := parseHeader(data)
	if reason != "" {
		return segmentScan{}, &CorruptError{File: sg.name, Offset: 0, Reason: reason}
	}
	if first != sg.first {
		return segmentScan{}, &CorruptError{File: sg.name, Offset: 0, Reason: fmt.Sprintf("the header says the segment starts at %d", first)}
	}
	s := scanner{data: data, off: headerSize, crc: prev}
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
			if err := visit(&w); err != nil {
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
// ReadFrom.
func Open(fsys diskfs.FS, dir string, opts Options) (*WAL, error) {
	opts = opts.withDefaults()
	segs, err := listSegments(fsys, dir)
	if err != nil {
		return nil, err
	}
	if len(segs) == 0 {
		return nil, fmt.Errorf("wal: no log in %s: %w", dir, fs.ErrNotExist)
	}
	var prevCRC uint32
	var next uint64
	var tail segmentScan
	for i, sg := range segs {
		data, err := fsys.ReadFile(sg.name)
		if err != nil {
			return nil, fmt.Errorf("wal: %w", err)
		}
		if i > 0 {
			if sg.first != next {
				return nil, &CorruptError{File: sg.name, Reason: fmt.Sprintf("the log before it ends at %d: records are missing", next-1)}
			}
			if _, prev, reason := parseHeader(data); reason == "" && prev != prevCRC {
				return nil, &CorruptError{File: sg.name, Reason: fmt.Sprintf("it chains from crc %08x, the segment before ends with %08x", prev, prevCRC)}
			}
		}
		sc, err := scanSegment(sg, data, nil)
		if err != nil {
			return nil, err
		}
		if d := sc.damaged; d != nil {
			s := scanner{data: data}
			if i < len(segs)-1 || !s.torn(d) {
				return nil, &CorruptError{File: sg.name, Offset: int64(d.off), Reason: d.reason}
			}
			opts.Logger.Warn("wal: truncating a torn record at the end of the log",
				"file", sg.name, "offset", d.off, "reason", d.reason, "bytes", len(data)-d.off)
		}
		next, prevCRC, tail = sc.next, sc.crc, sc
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

// load decodes the records of the current segment from r.next on.
func (r *Reader) load() error {
	sg := r.segs[0]
	r.segs = r.segs[1:]
	data, err := r.fsys.ReadFile(sg.name)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %s was deleted while it was read", ErrReleased, sg.name)
	}
	if err != nil {
		return fmt.Errorf("wal: %w", err)
	}
	_, err = scanSegment(sg, data, func(w *codec.WriteT) error {
		if w.Seq >= r.next && w.Seq <= r.last {
			c := &codec.WriteT{Seq: w.Seq, Op: w.Op, Key: strings.Clone(w.Key), Value: bytes.Clone(w.Value),
				ClientId: w.ClientId, RequestId: w.RequestId, Found: w.Found, FirstUnacked: w.FirstUnacked,
				ExpireSeq: w.ExpireSeq, Epoch: w.Epoch}
			r.recs = append(r.recs, c)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(r.recs) > 0 && r.recs[0].Seq != r.next {
		return fmt.Errorf("wal: reading %s: it starts at %d, not %d", sg.name, r.recs[0].Seq, r.next)
	}
	return nil
}
