// Package snap writes a chain node's table snapshots to disk and loads
// the newest valid one: every key and value, the exactly-once records,
// and the sequence number the snapshot is as of with that write's epoch,
// in one CRC-protected
// file made atomically (a temporary file, synced, renamed, the directory
// synced). After loading one, a node replays its write-ahead log (package
// wal) from the snapshot's sequence number on.
package snap

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"iter"
	"log/slog"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"unsafe"

	"github.com/chaintable/chaintable/codec"
	"github.com/chaintable/chaintable/diskfs"
)

// The file format (see wal/DESIGN.md): a header, records, a trailer.
const (
	suffix       = ".snap"
	tmpSuffix    = ".tmp"
	headerSize   = 24 // magic, seq, epoch
	headerSizeV2 = 16 // magic, seq: no epoch

	kindEntry   = 1
	kindDedup   = 2
	kindTrailer = 0xff

	trailerSize = 1 + 8 + 8 + 4 // kind, entries, dedups, crc
)

// magic opens every snapshot; its last byte is the format's version.
// Version 2 differs only in its header, which lacks the epoch: Load reads
// it as of epoch 0, unknown.
var (
	magic   = [8]byte{'c', 't', 's', 'n', 'a', 'p', 0, 3}
	magicV2 = [8]byte{'c', 't', 's', 'n', 'a', 'p', 0, 2}
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Keep is how many snapshots Save leaves in the directory: the newest,
// and older ones to fall back on should it be damaged.
const Keep = 2

// ErrNoSnapshot is returned by Load when the directory holds no valid
// snapshot. It wraps fs.ErrNotExist.
var ErrNoSnapshot = fmt.Errorf("snap: no valid snapshot: %w", fs.ErrNotExist)

// fileName returns the name of the snapshot as of seq.
func fileName(seq uint64) string { return fmt.Sprintf("%016x%s", seq, suffix) }

// Save writes a snapshot as of write seq, whose epoch is epoch, of
// entries (each key and its value) and dedup (the exactly-once records) to dir, atomically: a crash leaves
// either the whole snapshot or none. It then deletes all but the Keep
// newest snapshots. Either iterator may be nil, for none. entries may be produced a piece at a time, say one
// table stripe after another; Save reads each value before asking for
// the next.
func Save(fsys diskfs.FS, dir string, seq, epoch uint64, entries iter.Seq2[string, []byte], dedup iter.Seq[*codec.DedupT]) error {
	if err := fsys.MkdirAll(dir); err != nil {
		return fmt.Errorf("snap: %w", err)
	}
	name := filepath.Join(dir, fileName(seq))
	tmp := name + tmpSuffix
	f, err := fsys.Create(tmp)
	if err != nil {
		return fmt.Errorf("snap: %w", err)
	}
	err = write(f, seq, epoch, entries, dedup)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = fsys.Rename(tmp, name)
	}
	if err == nil {
		err = fsys.SyncDir(dir)
	}
	if err != nil {
		fsys.Remove(tmp) // best effort: Load ignores temporary files anyway
		return fmt.Errorf("snap: writing %s: %w", name, err)
	}
	return prune(fsys, dir)
}

// offsetWriter writes a File from its start on.
type offsetWriter struct {
	f   diskfs.File
	off int64
}

func (w *offsetWriter) Write(p []byte) (int, error) {
	n, err := w.f.WriteAt(p, w.off)
	w.off += int64(n)
	return n, err
}

// write writes the snapshot's bytes to f.
func write(f diskfs.File, seq, epoch uint64, entries iter.Seq2[string, []byte], dedup iter.Seq[*codec.DedupT]) error {
	bw := bufio.NewWriterSize(&offsetWriter{f: f}, 1<<20)
	var crc uint32
	put := func(b []byte) {
		crc = crc32.Update(crc, crcTable, b)
		bw.Write(b) // a failed Write is remembered until Flush
	}
	rec := append([]byte(nil), magic[:]...)
	rec = binary.LittleEndian.AppendUint64(rec, seq)
	put(binary.LittleEndian.AppendUint64(rec, epoch))
	var nEntries, nDedup uint64
	if entries != nil {
		for k, v := range entries {
			rec = appendEntry(rec[:0], k, v)
			put(rec)
			nEntries++
		}
	}
	if dedup != nil {
		for d := range dedup {
			rec = appendDedup(rec[:0], d)
			put(rec)
			nDedup++
		}
	}
	rec = append(rec[:0], kindTrailer)
	rec = binary.LittleEndian.AppendUint64(rec, nEntries)
	put(binary.LittleEndian.AppendUint64(rec, nDedup))
	bw.Write(binary.LittleEndian.AppendUint32(rec[:0], crc))
	return bw.Flush()
}

func appendEntry(dst []byte, key string, value []byte) []byte {
	dst = append(dst, kindEntry)
	dst = binary.AppendUvarint(dst, uint64(len(key)))
	dst = append(dst, key...)
	dst = binary.AppendUvarint(dst, uint64(len(value)))
	return append(dst, value...)
}

func appendDedup(dst []byte, d *codec.DedupT) []byte {
	dst = append(dst, kindDedup)
	dst = binary.AppendUvarint(dst, d.ClientId)
	dst = binary.AppendUvarint(dst, d.RequestId)
	dst = binary.AppendUvarint(dst, d.Seq)
	found := byte(0)
	if d.Found {
		found = 1
	}
	dst = append(dst, found)
	// Without them a restored record refuses its own retries (the digest)
	// and takes a late copy of a write its client moved past (the window).
	dst = binary.AppendUvarint(dst, d.Digest)
	return binary.AppendUvarint(dst, d.FirstUnacked)
}

// Handler receives a snapshot's contents from Load; a nil func skips
// what it would receive.
type Handler struct {
	// Size, if set, is called once, before the first entry, with the
	// number of entries and the bytes their keys and values take in
	// all, so that the receiver can make room for them at once
	// (srv.Table.Reserve).
	Size func(entries, bytes int)
	// Entry is called for each key and value. Both are the snapshot's
	// own memory (its file mapped, see Load), never copied on the way,
	// and valid only during the call: a receiver that keeps either must
	// copy it (srv.Table.Put does).
	Entry func(key string, value []byte) error
	// Dedup is called for each exactly-once record.
	Dedup func(d *codec.DedupT) error
}

// contents is what a snapshot holds besides its records.
type contents struct {
	seq     uint64
	epoch   uint64
	current bool // of this format's version, not an older one's
	entries int  // entry records
	bytes   int  // bytes of their keys and values
}

// decode checks that b is a whole snapshot and, if so and h is not nil,
// passes its contents to h (all but Size, which Load calls). The crc is
// checked before anything reaches h.
func decode(b []byte, h *Handler) (contents, error) {
	var c contents
	if len(b) < headerSizeV2+trailerSize {
		return c, fmt.Errorf("%d bytes, too short for a snapshot", len(b))
	}
	header := headerSize
	switch [8]byte(b[:8]) {
	case magic:
		c.current = true
	case magicV2:
		header = headerSizeV2
	default:
		return c, fmt.Errorf("not a snapshot of this format (it begins %q)", b[:8])
	}
	if len(b) < header+trailerSize {
		return c, fmt.Errorf("%d bytes, too short for a snapshot", len(b))
	}
	body := b[:len(b)-4]
	if got, want := crc32.Checksum(body, crcTable), binary.LittleEndian.Uint32(b[len(b)-4:]); got != want {
		return c, fmt.Errorf("checksum %08x, want %08x", got, want)
	}
	c.seq = binary.LittleEndian.Uint64(b[8:])
	if c.current {
		c.epoch = binary.LittleEndian.Uint64(b[16:])
	}
	trailer := body[len(body)-trailerSize+4:]
	if trailer[0] != kindTrailer {
		return c, errors.New("the trailer is missing")
	}
	wantEntries, wantDedup := binary.LittleEndian.Uint64(trailer[1:]), binary.LittleEndian.Uint64(trailer[9:])
	var nEntries, nDedup uint64
	recs := body[header : len(body)-trailerSize+4]
	for off := 0; off < len(recs); {
		rest := recs[off:]
		var n int
		var err error
		switch rest[0] {
		case kindEntry:
			if nDedup > 0 {
				return c, fmt.Errorf("offset %d: an entry after the exactly-once records", header+off)
			}
			var key, value []byte
			if key, n, err = field(rest, 1); err == nil {
				var m int
				value, m, err = field(rest, n)
				n = m
			}
			if err == nil && h != nil && h.Entry != nil {
				// The string is b's memory, lent for the call (see
				// Handler.Entry): no copy of a million keys on a load.
				err = h.Entry(unsafe.String(unsafe.SliceData(key), len(key)), value)
			}
			nEntries++
			c.bytes += len(key) + len(value)
		case kindDedup:
			var d codec.DedupT
			n, err = dedupRecord(rest, &d)
			if err == nil && h != nil && h.Dedup != nil {
				err = h.Dedup(&d)
			}
			nDedup++
		default:
			return c, fmt.Errorf("offset %d: a record of unknown kind %d", header+off, rest[0])
		}
		if err != nil {
			return c, fmt.Errorf("offset %d: %w", header+off, err)
		}
		off = n + off
	}
	if nEntries != wantEntries || nDedup != wantDedup {
		return c, fmt.Errorf("%d entries and %d exactly-once records, the trailer says %d and %d", nEntries, nDedup, wantEntries, wantDedup)
	}
	c.entries = int(nEntries)
	return c, nil
}

// errShort is a record cut short.
var errShort = errors.New("a record cut short")

// field decodes the length-prefixed bytes at b[at:] and returns them and
// the offset after them.
func field(b []byte, at int) ([]byte, int, error) {
	l, n := binary.Uvarint(b[at:])
	if n <= 0 {
		return nil, 0, errShort
	}
	at += n
	if l > uint64(len(b)-at) {
		return nil, 0, errShort
	}
	return b[at : at+int(l)], at + int(l), nil
}

// dedupRecord decodes the dedup record that b begins with into d and
// returns its length.
func dedupRecord(b []byte, d *codec.DedupT) (int, error) {
	at := 1
	for _, v := range []*uint64{&d.ClientId, &d.RequestId, &d.Seq} {
		x, n := binary.Uvarint(b[at:])
		if n <= 0 {
			return 0, errShort
		}
		*v, at = x, at+n
	}
	if at >= len(b) || b[at] > 1 {
		return 0, errShort
	}
	d.Found = b[at] == 1
	at++
	for _, v := range []*uint64{&d.Digest, &d.FirstUnacked} {
		x, n := binary.Uvarint(b[at:])
		if n <= 0 {
			return 0, errShort
		}
		*v, at = x, at+n
	}
	return at, nil
}

// snapshot is one snapshot file in a directory.
type snapshot struct {
	seq  uint64
	name string
}

// list returns dir's snapshots, newest first, and its temporary files.
func list(fsys diskfs.FS, dir string) (snaps []snapshot, tmps []string, err error) {
	names, err := fsys.ReadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("snap: %w", err)
	}
	for _, name := range names {
		if strings.HasSuffix(name, suffix+tmpSuffix) {
			tmps = append(tmps, filepath.Join(dir, name))
			continue
		}
		hex, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		seq, err := strconv.ParseUint(hex, 16, 64)
		if err != nil || len(hex) != 16 {
			continue // not ours
		}
		snaps = append(snaps, snapshot{seq: seq, name: filepath.Join(dir, name)})
	}
	slices.SortFunc(snaps, func(a, b snapshot) int {
		switch {
		case a.seq > b.seq:
			return -1
		case a.seq < b.seq:
			return 1
		}
		return 0
	})
	return snaps, tmps, nil
}

// prune deletes all but the Keep newest snapshots of dir, and temporary
// files a crash left.
func prune(fsys diskfs.FS, dir string) error {
	snaps, tmps, err := list(fsys, dir)
	if err != nil {
		return err
	}
	if len(snaps) > Keep {
		for _, s := range snaps[Keep:] {
			tmps = append(tmps, s.name)
		}
	}
	if len(tmps) == 0 {
		return nil
	}
	for _, name := range tmps {
		if err := fsys.Remove(name); err != nil {
			return fmt.Errorf("snap: pruning: %w", err)
		}
	}
	if err := fsys.SyncDir(dir); err != nil {
		return fmt.Errorf("snap: pruning: %w", err)
	}
	return nil
}

// Load finds the newest valid snapshot in dir, passes its contents to h
// and returns its seq and epoch. A newer snapshot that is damaged (torn by a crash
// or corrupt) is skipped with a log line to logger (nil means
// slog.Default()); nothing of it reaches h. With no valid snapshot, or
// no dir, it returns ErrNoSnapshot. An error from h stops Load and is
// returned, wrapped.
//
// On a file system that maps files (diskfs.Mapper, as diskfs.OS does),
// the snapshot is read through a read-only mapping rather than into a
// buffer of its size, and h gets keys and values in the mapping itself.
func Load(fsys diskfs.FS, dir string, h Handler, logger *slog.Logger) (seq, epoch uint64, err error) {
	if logger == nil {
		logger = slog.Default()
	}
	snaps, _, err := list(fsys, dir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, 0, ErrNoSnapshot
	}
	if err != nil {
		return 0, 0, err
	}
	for _, s := range snaps {
		c, ok, err := loadFile(fsys, s, &h, logger)
		if err != nil || ok {
			return c.seq, c.epoch, err
		}
	}
	return 0, 0, ErrNoSnapshot
}

// loadFile loads the snapshot s into h, or reports (ok false) that it is
// damaged, with a log line, and h got nothing of it.
func loadFile(fsys diskfs.FS, s snapshot, h *Handler, logger *slog.Logger) (c contents, ok bool, err error) {
	b, release, err := read(fsys, s.name)
	if err != nil {
		return c, false, fmt.Errorf("snap: %w", err)
	}
	defer release()
	c, err = decodeGuarded(b, nil)
	if err == nil && c.seq != s.seq {
		err = fmt.Errorf("it says it is as of %d", c.seq)
	}
	if err != nil {
		logger.Warn("snap: skipping a damaged snapshot", "file", s.name, "err", err)
		return contents{}, false, nil
	}
	if h.Size != nil {
		h.Size(c.entries, c.bytes)
	}
	if _, err := decodeGuarded(b, h); err != nil {
		return contents{}, false, fmt.Errorf("snap: loading %s: %w", s.name, err)
	}
	return c, true, nil
}

// read returns the content of the file name, mapped when fsys maps
// files, and the function that releases it.
func read(fsys diskfs.FS, name string) ([]byte, func(), error) {
	if m, ok := fsys.(diskfs.Mapper); ok {
		b, unmap, err := m.MapFile(name)
		if err != nil {
			return nil, nil, err
		}
		// An unmap that fails leaves the mapping, which is only memory.
		return b, func() { unmap() }, nil
	}
	b, err := fsys.ReadFile(name)
	return b, func() {}, err
}

// decodeGuarded is decode, but a fault reading b, which a mapped file
// whose page cannot be read from the disk raises, is returned as an
// error instead of crashing the process (diskfs.Guard).
func decodeGuarded(b []byte, h *Handler) (c contents, err error) {
	if gerr := diskfs.Guard(b, func() error { c, err = decode(b, h); return nil }); gerr != nil {
		return contents{}, gerr
	}
	return c, err
}
