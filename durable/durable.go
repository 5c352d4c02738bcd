// Package durable keeps a chain node's data dir: the node's identity, its
// write-ahead log (package wal) and the snapshots of its table (package
// snap). It is the chain.Log of a node started with --data-dir: it logs
// every write the node applies, tells the node what reached the disk,
// saves a snapshot now and then and releases the log before it, and at
// start hands the node back its state.
//
// A data dir holds:
//
//	id          the node's identity in the holders record (chain.Holders)
//	log/        the log's segments and the snapshots
//	incomplete  present while a snapshot from the predecessor is being
//	            installed: the rest of the dir is then not a state the
//	            node may lead with, and is discarded at start
package durable

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"iter"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/chaintable/chaintable/chain"
	"github.com/chaintable/chaintable/codec"
	"github.com/chaintable/chaintable/diskfs"
	"github.com/chaintable/chaintable/snap"
	"github.com/chaintable/chaintable/srv"
	"github.com/chaintable/chaintable/wal"
)

// DefaultSnapshotEvery is how many writes the log takes between two
// periodic snapshots, unless Options say otherwise.
const DefaultSnapshotEvery = 1 << 20

// Options tune a Log; the zero value is the default.
type Options struct {
	// Mode is how writes are made durable (--fsync).
	Mode wal.Mode
	// SnapshotEvery is how many writes go to the log between snapshots;
	// 0 means DefaultSnapshotEvery.
	SnapshotEvery int
	// WAL tunes the log's segments.
	WAL wal.Options
	// Logger receives notices; nil means slog.Default().
	Logger *slog.Logger
}

// Node is what a Log reports to: a chain.Node.
type Node interface {
	SetDurable(seq uint64, err error)
	// Applied is the last write in the node's table; the node logs it
	// before it applies another.
	Applied() uint64
}

// Log is a node's data dir open for use. It implements chain.Log.
type Log struct {
	fsys   diskfs.FS
	dir    string
	logDir string
	opts   Options
	log    *slog.Logger
	table  *srv.Table
	id     string
	unlock func() error // the data dir's lock, held until Close

	// mu guards w and s against the goroutines that save snapshots; the
	// node calls Append, SnapshotBegun and SnapshotInstalled in order.
	mu sync.Mutex
	w  *wal.WAL
	s  *wal.Syncer

	gen      atomic.Uint64 // bumped whenever the log starts over: older syncers' news is stale
	hold     atomic.Bool   // a snapshot install is not yet saved: report nothing durable
	appended atomic.Uint64 // the last write appended
	since    int           // writes appended since the last snapshot began
	// pending is a snapshot installed from the predecessor whose table
	// may hold writes the log has not yet appended: it is saved once the
	// log has them (see SnapshotInstalled). Guarded by the node, as since.
	pending *installed
	saving  sync.WaitGroup
	busy    atomic.Bool // a snapshot is being saved

	node    atomic.Pointer[Node]
	durable atomic.Uint64 // the latest news from the current syncer
	failed  atomic.Pointer[error]
	kick    chan struct{}
	quit    chan struct{}
	done    chan struct{}

	snapshotsSaved atomic.Uint64
}

// Open opens the data dir dir, making it if need be, with its identity.
// The node's state is read by Recover. table is the node's table, which
// snapshots save.
func Open(fsys diskfs.FS, dir string, table *srv.Table, opts Options) (*Log, error) {
	if opts.SnapshotEvery <= 0 {
		opts.SnapshotEvery = DefaultSnapshotEvery
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	opts.WAL.Logger = opts.Logger
	l := &Log{fsys: fsys, dir: dir, logDir: filepath.Join(dir, "log"), opts: opts, log: opts.Logger, table: table,
		kick: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
	for _, d := range []string{dir, l.logDir} {
		if err := fsys.MkdirAll(d); err != nil {
			return nil, fmt.Errorf("data dir %s: %w", dir, err)
		}
	}
	// Two processes on one data dir would each take the other's log for
	// theirs, and both would pass recovery.
	if lk, ok := fsys.(diskfs.Locker); ok {
		unlock, err := lk.Lock(dir)
		if err != nil {
			return nil, fmt.Errorf("data dir %s: %w", dir, err)
		}
		l.unlock = unlock
	}
	id, err := l.identity()
	if err != nil {
		l.release()
		return nil, err
	}
	l.id = id
	return l, nil
}

// release gives up the data dir's lock, if the Log took one.
func (l *Log) release() error {
	if l.unlock == nil {
		return nil
	}
	err := l.unlock()
	l.unlock = nil
	return err
}

// ID returns the node's identity for the holders record: the same for as
// long as the data dir lives.
func (l *Log) ID() string { return l.id }

// SnapshotsSaved returns how many snapshots the Log saved.
func (l *Log) SnapshotsSaved() uint64 { return l.snapshotsSaved.Load() }

// identity reads the node's identity from the data dir, or makes one.
func (l *Log) identity() (string, error) {
	name := filepath.Join(l.dir, "id")
	b, err := l.fsys.ReadFile(name)
	if err == nil {
		id := strings.TrimSpace(string(b))
		if id == "" || strings.ContainsAny(id, " \t\n") {
			return "", fmt.Errorf("data dir %s: %s holds %q, not a node identity", l.dir, name, b)
		}
		return id, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("data dir %s: %w", l.dir, err)
	}
	var r [8]byte
	rand.Read(r[:])
	id := hex.EncodeToString(r[:])
	if err := l.writeFile(name, []byte(id+"\n")); err != nil {
		return "", err
	}
	return id, nil
}

// writeFile makes the file name with data, durably: written as a
// temporary file, synced, renamed, and the directory synced.
func (l *Log) writeFile(name string, data []byte) error {
	tmp := name + ".tmp"
	f, err := l.fsys.Create(tmp)
	if err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	_, err = f.WriteAt(data, 0)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = l.fsys.Rename(tmp, name)
	}
	if err == nil {
		err = l.fsys.SyncDir(filepath.Dir(name))
	}
	if err != nil {
		return fmt.Errorf("data dir: writing %s: %w", name, err)
	}
	return nil
}

func (l *Log) incompleteName() string { return filepath.Join(l.dir, "incomplete") }

// Recover hands r the state the data dir holds (see chain.Log.Recover)
// and opens the log for appending.
func (l *Log) Recover(r chain.Recovery) (whole bool, err error) {
	whole = true
	if _, err := l.fsys.ReadFile(l.incompleteName()); err == nil {
		l.log.Warn("the node stopped while it installed a snapshot from its predecessor: starting empty", "dir", l.dir)
		if err := l.clearLog(); err != nil {
			return false, err
		}
		whole = false
	}
	var dedup []*codec.DedupT
	seq, epoch, err := snap.Load(l.fsys, l.logDir, snap.Handler{
		Size: r.Reserve,
		Entry: func(key string, value []byte) error {
			r.Entry(key, value)
			return nil
		},
		Dedup: func(d *codec.DedupT) error {
			dedup = append(dedup, d)
			return nil
		},
	}, l.log)
	if err != nil && !errors.Is(err, snap.ErrNoSnapshot) {
		return false, fmt.Errorf("data dir %s: %w", l.dir, err)
	}
	r.Snapshot(chain.Point{Seq: seq, Epoch: epoch}, dedup)
	// The log after the snapshot, checked, then replayed into a table
	// sized for the keys it adds.
	keys := newKeyEstimate()
	sized := false
	w, err := wal.OpenReplay(l.fsys, l.logDir, seq+1, l.opts.WAL, wal.Replay{
		Check: keys.add,
		Write: func(w *codec.WriteT) error {
			if !sized {
				sized = true
				l.reserve(r, keys)
			}
			return r.Write(w)
		},
	})
	if errors.Is(err, fs.ErrNotExist) {
		w, err = wal.Create(l.fsys, l.logDir, seq+1, l.opts.WAL)
	}
	if err != nil {
		return false, fmt.Errorf("data dir %s: replaying the log from %d: %w", l.dir, seq+1, err)
	}
	l.appended.Store(w.LastSeq())
	l.startSyncer(w)
	go l.report()
	return whole, nil
}

// reserve sizes the table for the keys the log's puts add to what the
// snapshot holds, at least the log's distinct put keys less the keys the
// table holds: the table ends with more keys than either. Beyond that the
// table grows as puts need, so a log of puts to keys the snapshot holds
// reserves nothing.
func (l *Log) reserve(r chain.Recovery, keys *keyEstimate) {
	add := keys.keys() - l.table.Size()
	if add <= 0 || r.Reserve == nil {
		return
	}
	r.Reserve(add, int(int64(keys.bytes)*int64(add)/int64(keys.puts)))
}

// clearLog removes the log and snapshots.
func (l *Log) clearLog() error {
	names, err := l.fsys.ReadDir(l.logDir)
	if err != nil {
		return fmt.Errorf("data dir %s: %w", l.dir, err)
	}
	for _, name := range names {
		if err := l.fsys.Remove(filepath.Join(l.logDir, name)); err != nil {
			return fmt.Errorf("data dir %s: %w", l.dir, err)
		}
	}
	if err := l.fsys.SyncDir(l.logDir); err != nil {
		return fmt.Errorf("data dir %s: %w", l.dir, err)
	}
	return nil
}

// startSyncer makes w the log, under a new generation. Called with mu
// held, or before the Log is shared.
func (l *Log) startSyncer(w *wal.WAL) {
	gen := l.gen.Add(1)
	l.durable.Store(w.SyncedSeq())
	l.w = w
	l.s = wal.NewSyncer(w, l.opts.Mode, func(durable uint64, err error) {
		if l.gen.Load() != gen {
			return
		}
		if err != nil {
			l.failed.CompareAndSwap(nil, &err)
		} else {
			l.durable.Store(durable)
		}
		l.poke()
	})
}

func (l *Log) poke() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// Start makes the Log report to n.
func (l *Log) Start(n Node) {
	l.node.Store(&n)
	l.poke()
}

// report tells the node what is durable, on its own goroutine: the
// syncer's notify may run under the node's lock.
func (l *Log) report() {
	defer close(l.done)
	// A log started over (a snapshot installed) may be durable up to the
	// very seq last told of the old one: the node, which reset its own
	// mark, must be told again.
	var told, toldGen uint64
	for {
		select {
		case <-l.kick:
		case <-l.quit:
			return
		}
		np := l.node.Load()
		if np == nil {
			continue
		}
		if errp := l.failed.Load(); errp != nil {
			(*np).SetDurable(0, *errp)
			return
		}
		if l.hold.Load() {
			continue
		}
		if g, d := l.gen.Load(), l.durable.Load(); d != told || g != toldGen {
			told, toldGen = d, g
			(*np).SetDurable(d, nil)
		}
	}
}

// Append logs ws (see chain.Log.Append).
func (l *Log) Append(ws []*codec.WriteT) (snapshot bool) {
	l.mu.Lock()
	s := l.s
	l.mu.Unlock()
	if _, err := s.Append(ws); err != nil {
		return false // the syncer reported it
	}
	last := ws[len(ws)-1].Seq
	l.appended.Store(last)
	if p := l.pending; p != nil && last >= p.aheadTo {
		l.pending = nil
		l.saveInstalled(p)
	}
	l.since += len(ws)
	return l.since >= l.opts.SnapshotEvery && !l.hold.Load() && !l.busy.Load()
}

// SaveSnapshot saves the table as of write at in the background, then
// releases the log before it (see chain.Log.SaveSnapshot).
func (l *Log) SaveSnapshot(at chain.Point, dedup []*codec.DedupT) {
	if !l.busy.CompareAndSwap(false, true) {
		return
	}
	l.since = 0
	l.mu.Lock()
	w := l.w
	l.mu.Unlock()
	l.saving.Add(1)
	go func() {
		defer l.saving.Done()
		defer l.busy.Store(false)
		if err := l.save(at, dedup); err != nil {
			l.log.Warn("saving a snapshot", "seq", at.Seq, "err", err)
			return
		}
		if err := w.ReleaseBefore(at.Seq + 1); err != nil {
			l.log.Warn("releasing the log before a snapshot", "seq", at.Seq, "err", err)
		}
	}()
}

// save saves the table as of write at, with exactly-once records dedup.
// The table changes while it is read, so the snapshot may hold writes
// after seq, which replaying the log from seq+1 applies again, in order,
// to the same end. Those writes must be on disk in the log before the
// snapshot is: save waits, before the snapshot is complete, for every
// write the node applied by the end of the scan.
func (l *Log) save(at chain.Point, dedup []*codec.DedupT) error {
	l.mu.Lock()
	s := l.s
	l.mu.Unlock()
	var waitErr error
	entries := func(yield func(string, []byte) bool) {
		var buf []srv.Entry
		for i := range l.table.Stripes() {
			buf = l.table.AppendStripe(buf[:0], i)
			for _, e := range buf {
				if !yield(e.Key, e.Value) {
					return
				}
			}
		}
		// The entries may hold writes applied but not yet appended (the
		// node applies a write, then logs it): wait for all of them.
		upTo := l.appended.Load()
		if np := l.node.Load(); np != nil {
			upTo = max(upTo, (*np).Applied())
		}
		waitErr = s.Wait(upTo)
	}
	var records iter.Seq[*codec.DedupT] = func(yield func(*codec.DedupT) bool) {
		for _, d := range dedup {
			if !yield(d) {
				return
			}
		}
	}
	err := snap.Save(l.fsys, l.logDir, at.Seq, at.Epoch, entries, records)
	if err == nil && waitErr != nil {
		err = waitErr
	}
	if err == nil {
		l.snapshotsSaved.Add(1)
	}
	return err
}

// ReadFrom returns the logged writes from seq on (see chain.Log).
func (l *Log) ReadFrom(seq uint64) (chain.LogReader, error) {
	l.mu.Lock()
	w := l.w
	l.mu.Unlock()
	if err := w.Flush(); err != nil {
		return nil, err
	}
	return w.ReadFrom(seq)
}

// SnapshotBegun marks the data dir as not whole (see chain.Log).
func (l *Log) SnapshotBegun() {
	l.pending = nil
	l.saving.Wait()
	l.hold.Store(true)
	l.gen.Add(1)
	if err := l.writeFile(l.incompleteName(), nil); err != nil {
		l.failed.CompareAndSwap(nil, &err)
		l.poke()
	}
}

// installed is a snapshot from the predecessor, to be saved.
type installed struct {
	at      chain.Point
	aheadTo uint64
	dedup   []*codec.DedupT
	gen     uint64 // of the log it was installed in
}

// SnapshotInstalled starts the log over after write at and saves the
// table as of it, once the log holds write aheadTo; until it is saved,
// nothing is reported durable, and the data dir stays marked incomplete.
func (l *Log) SnapshotInstalled(at chain.Point, aheadTo uint64, dedup []*codec.DedupT) {
	l.pending = nil // a later install, or the table taken as it is, replaces it
	if l.failed.Load() != nil {
		// Starting over would delete the old log and snapshots, on a
		// disk that may not take the new ones, nor have the mark that
		// the dir holds no state to lead with (SnapshotBegun may have
		// failed writing it): the dir must stay as it was.
		return
	}
	l.saving.Wait()
	l.hold.Store(true)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.s.Close()
	l.w.Close()
	err := l.clearLog()
	var w *wal.WAL
	if err == nil {
		w, err = wal.Create(l.fsys, l.logDir, at.Seq+1, l.opts.WAL)
	}
	if err != nil {
		l.failed.CompareAndSwap(nil, &err)
		l.poke()
		return
	}
	l.startSyncer(w)
	l.appended.Store(at.Seq)
	l.since = 0
	p := &installed{at: at, aheadTo: aheadTo, dedup: dedup, gen: l.gen.Load()}
	if aheadTo > at.Seq {
		l.pending = p
		return
	}
	l.saveInstalled(p)
}

// saveInstalled saves the snapshot p, installed from the predecessor, in
// the background, and then lets the log report what is durable again.
func (l *Log) saveInstalled(p *installed) {
	l.saving.Add(1)
	l.busy.Store(true)
	go func() {
		defer l.saving.Done()
		defer l.busy.Store(false)
		err := l.save(p.at, p.dedup)
		if err == nil {
			err = l.fsys.Remove(l.incompleteName())
		}
		if err == nil {
			err = l.fsys.SyncDir(l.dir)
		}
		if err != nil {
			err = fmt.Errorf("saving the snapshot from the predecessor: %w", err)
			l.failed.CompareAndSwap(nil, &err)
		} else if l.gen.Load() == p.gen {
			l.hold.Store(false)
		}
		l.poke()
	}()
}

// Close stops the Log: it syncs what was appended and closes the files.
func (l *Log) Close() error {
	l.saving.Wait()
	close(l.quit)
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	err := l.s.Close()
	if cerr := l.w.Close(); err == nil {
		err = cerr
	}
	if cerr := l.release(); err == nil {
		err = cerr
	}
	return err
}

var _ chain.Log = (*Log)(nil)
