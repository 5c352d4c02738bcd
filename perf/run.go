package perf

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/chaintable/chaintable/zkwatch"
)

// preloadDepth is the least pipeline depth of the preload.
const preloadDepth = 32

// Run runs the load cfg describes and returns its measurements. It
// returns an error, and no Result, when the run cannot start: a bad
// Config, a server it cannot connect to, a chain it cannot find, or a
// preload that failed. Failures during the run are counted in the Result.
// When ctx ends, the connections stop after the batch they have in flight
// and Run returns what was measured, with Interrupted set.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	res := &Result{
		System:    cfg.Target.System(),
		Target:    cfg.Target.Kind.String(),
		Addr:      cfg.Target.Addr,
		RedisWait: cfg.Target.RedisWait,
	}
	writeAddr, readAddrs := cfg.Target.Addr, []string{cfg.Target.Addr}
	if cfg.Target.Kind == Chain {
		members, err := resolveChain(ctx, cfg)
		if err != nil {
			return nil, err
		}
		res.Head, res.Tail = members[0], members[len(members)-1]
		writeAddr, readAddrs = res.Head, members
		if cfg.Target.ReadTail {
			readAddrs = []string{res.Tail}
		}
		res.Readers = readAddrs
	}

	workers, err := dialWorkers(ctx, cfg, writeAddr, readAddrs)
	defer func() {
		for _, w := range workers {
			w.close()
		}
	}()
	if err != nil {
		return nil, err
	}

	if cfg.Preload {
		pre := &phase{name: res.System + " preload", limit: int64(cfg.Keys), sequential: true}
		proto := newProtocol(cfg.Target.Kind, cfg.ValueSize, 0)
		elapsed := runPhase(ctx, cfg, workers, pre, proto, false)
		st := collect(workers)
		res.Preload = &Preload{
			Keys:       int64(cfg.Keys),
			ElapsedSec: elapsed.Seconds(),
			OpsPerSec:  float64(st.requests()) / elapsed.Seconds(),
		}
		if st.errs > 0 {
			return nil, fmt.Errorf("preload of %s: %d of %d puts failed: %s", res.System, st.errs, st.requests(), reasonList(st.reasons))
		}
		if int(st.requests()) < cfg.Keys {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("preload of %s interrupted", res.System)
			}
			return nil, fmt.Errorf("preload of %s: only %d of %d keys written", res.System, st.requests(), cfg.Keys)
		}
		for _, w := range workers {
			w.reset()
		}
	}

	ph := &phase{name: res.System + " " + cfg.Workload.String(), limit: cfg.Requests, duration: cfg.Duration}
	proto := newProtocol(cfg.Target.Kind, cfg.ValueSize, cfg.Target.RedisWait)
	cpuBefore, err := sampleCPU(cfg.Target.PIDs)
	if err != nil {
		return nil, err
	}
	elapsed := runPhase(ctx, cfg, workers, ph, proto, true)
	st := collect(workers)
	if len(cfg.Target.PIDs) > 0 {
		cpuAfter, err := sampleCPU(cfg.Target.PIDs)
		if err != nil {
			return nil, err
		}
		res.ServerCPU = newServerCPU(cfg.Target.PIDs, cpuBefore, cpuAfter, st.requests())
	}

	res.Requests, res.OK, res.Misses, res.Errors = st.requests(), st.ok, st.misses, st.errs
	if len(st.reasons) > 0 {
		res.ErrorReasons = st.reasons
	}
	res.Elapsed = elapsed
	res.ElapsedSec = elapsed.Seconds()
	if elapsed > 0 {
		res.OpsPerSec = float64(res.Requests) / elapsed.Seconds()
	}
	res.Hist = st.hist
	res.Latency = latencyOf(st.hist)
	res.Interrupted = ctx.Err() != nil
	return res, nil
}

// resolveChain finds the chain's members in ZooKeeper, head first.
func resolveChain(ctx context.Context, cfg Config) (members []string, err error) {
	zc, err := zkwatch.Dial(cfg.Target.Addr, zkwatch.Options{
		ConnectTimeout: cfg.Timeout,
		Logger:         slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return nil, err
	}
	defer zc.Close()
	w, err := zc.Watch()
	if err != nil {
		return nil, fmt.Errorf("reading the chain from ZooKeeper at %s: %w", cfg.Target.Addr, err)
	}
	defer w.Close()
	want := max(1, cfg.Target.ChainMembers)
	timer := time.NewTimer(cfg.Timeout)
	defer timer.Stop()
	v := w.View()
	for len(v.Members) < want {
		select {
		case nv, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("lost ZooKeeper at %s while waiting for the chain", cfg.Target.Addr)
			}
			v = nv
		case <-timer.C:
			return nil, fmt.Errorf("the chain in ZooKeeper at %s has %d members after %s, want at least %d", cfg.Target.Addr, len(v.Members), cfg.Timeout, want)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	for _, m := range v.Members {
		members = append(members, m.Addr)
	}
	return members, nil
}

// link is one connection of a worker.
type link struct {
	addr string
	nc   net.Conn
	r    *bufio.Reader
	out  []byte // the batch being built
	ops  []Op   // the operation of each request in out
}

// worker drives one connection (or one head/tail pair) in a closed loop.
type worker struct {
	cfg    *Config
	wl, rl *link   // where writes and reads go
	links  []*link // the distinct links, read link first
	rng    *rand.Rand
	zipf   *rand.Zipf
	key    []byte
	dead   bool
	strict bool // a miss is an error
	stats
}

// stats are the counts of one worker, or of all after collect.
type stats struct {
	ok, misses, errs int64
	reasons          map[string]int64
	hist             *hdrhistogram.Histogram
}

func (s *stats) requests() int64 { return s.ok + s.misses + s.errs }

func (s *stats) fail(reason string, n int64) {
	if s.reasons == nil {
		s.reasons = make(map[string]int64)
	}
	s.reasons[reason] += n
	s.errs += n
}

// maxLatency is the largest latency the histograms track; larger ones are
// recorded as it.
func maxLatency(cfg *Config) int64 { return int64(2*max(cfg.Timeout, time.Second)) + 1 }

func newHist(cfg *Config) *hdrhistogram.Histogram { return hdrhistogram.New(1, maxLatency(cfg), 3) }

// dialWorkers connects cfg.Conns workers; worker i reads from
// readAddrs[i mod len(readAddrs)].
func dialWorkers(ctx context.Context, cfg Config, writeAddr string, readAddrs []string) ([]*worker, error) {
	needWrite := cfg.Workload.HasWrites() || cfg.Preload
	needRead := cfg.Workload.HasReads()
	bufSize := 64<<10 + cfg.ValueSize
	d := net.Dialer{Timeout: cfg.Timeout}
	dial := func(addr, role string) (*link, error) {
		nc, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("cannot connect to %s at %s: %w", role, addr, err)
		}
		return &link{addr: addr, nc: nc, r: bufio.NewReaderSize(nc, bufSize)}, nil
	}
	writeRole, readRole := cfg.Target.System()+" server", cfg.Target.System()+" server"
	if cfg.Target.Kind == Chain {
		writeRole, readRole = "chain head", "chain member"
	}
	workers := make([]*worker, 0, cfg.Conns)
	for i := 0; i < cfg.Conns; i++ {
		w := &worker{
			cfg:    &cfg,
			rng:    rand.New(rand.NewPCG(cfg.Seed, uint64(i))),
			key:    make([]byte, 0, 32),
			strict: cfg.strictMisses(),
		}
		w.hist = newHist(&cfg)
		if cfg.Dist == Zipf {
			w.zipf = rand.NewZipf(w.rng, cfg.ZipfS, 1, uint64(cfg.Keys-1))
		}
		workers = append(workers, w)
		var err error
		readAddr := readAddrs[i%len(readAddrs)]
		if needRead {
			if w.rl, err = dial(readAddr, readRole); err != nil {
				return workers, err
			}
			w.links = append(w.links, w.rl)
		}
		if needWrite {
			if w.rl != nil && readAddr == writeAddr {
				w.wl = w.rl
			} else {
				if w.wl, err = dial(writeAddr, writeRole); err != nil {
					return workers, err
				}
				w.links = append(w.links, w.wl)
			}
		}
	}
	return workers, nil
}

func (w *worker) close() {
	for _, l := range w.links {
		l.nc.Close()
	}
}

// reset forgets the counts of a phase.
func (w *worker) reset() {
	w.stats = stats{hist: w.hist}
	w.hist.Reset()
}

// phase is one part of a run that the workers share: the preload or the
// measured load.
type phase struct {
	name       string
	limit      int64         // requests in all; 0 for no limit
	duration   time.Duration // 0 for no limit
	sequential bool          // put every key once, in order (the preload)
	issued     atomic.Int64
	done       atomic.Int64
	stop       atomic.Bool
}

// claim takes the next batch of at most p requests; n is 0 when the phase
// is over. start is the number of requests claimed before.
func (ph *phase) claim(p int) (start int64, n int) {
	if ph.stop.Load() {
		return 0, 0
	}
	if ph.limit == 0 {
		return 0, p
	}
	start = ph.issued.Add(int64(p)) - int64(p)
	if start >= ph.limit {
		return 0, 0
	}
	return start, int(min(int64(p), ph.limit-start))
}

// runPhase runs ph on every worker and returns how long it took.
func runPhase(ctx context.Context, cfg Config, workers []*worker, ph *phase, proto protocol, record bool) time.Duration {
	depth := cfg.Pipeline
	if ph.sequential {
		depth = max(depth, preloadDepth)
	}
	stopCtx := context.AfterFunc(ctx, func() { ph.stop.Store(true) })
	defer stopCtx()
	start := time.Now()
	if ph.duration > 0 {
		t := time.AfterFunc(ph.duration, func() { ph.stop.Store(true) })
		defer t.Stop()
	}
	var stopProgress func()
	if cfg.Progress != nil {
		stopProgress = showProgress(cfg.Progress, ph, start)
	}
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.run(ph, proto, depth, record)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if stopProgress != nil {
		stopProgress()
	}
	return elapsed
}

// run sends batches until the phase is over or the connection fails.
func (w *worker) run(ph *phase, proto protocol, depth int, record bool) {
	keys := uint64(w.cfg.Keys)
	mix := w.cfg.Workload.Mix
	for !w.dead {
		start, n := ph.claim(depth)
		if n == 0 {
			return
		}
		for i := 0; i < n; i++ {
			var op Op
			var k uint64
			switch {
			case ph.sequential:
				op, k = OpPut, uint64(start)+uint64(i)
			case mix:
				op = w.cfg.Workload.Pick(w.rng.Float64())
			default:
				op = w.cfg.Workload.Op
			}
			if !ph.sequential {
				if w.zipf != nil {
					k = w.zipf.Uint64()
				} else {
					k = w.rng.Uint64N(keys)
				}
			}
			l := w.rl
			if op != OpGet {
				l = w.wl
			}
			w.key = appendKey(w.key[:0], k)
			l.out = proto.appendRequest(l.out, op, w.key)
			l.ops = append(l.ops, op)
		}
		w.exchange(proto, record)
		ph.done.Add(int64(n))
	}
}

// exchange sends the batch built in the links and reads its replies.
func (w *worker) exchange(proto protocol, record bool) {
	defer func() {
		for _, l := range w.links {
			l.out, l.ops = l.out[:0], l.ops[:0]
		}
	}()
	deadline := time.Now().Add(w.cfg.Timeout)
	for _, l := range w.links {
		if len(l.ops) > 0 {
			l.nc.SetDeadline(deadline)
		}
	}
	sent := time.Now()
	for _, l := range w.links {
		if len(l.out) == 0 {
			continue
		}
		if _, err := l.nc.Write(l.out); err != nil {
			w.broken(l, err, 0)
			return
		}
	}
	maxLat := maxLatency(w.cfg)
	for _, l := range w.links {
		for i, op := range l.ops {
			out, reason, err := readReply(l, proto, op)
			if err != nil {
				w.broken(l, err, i)
				return
			}
			if record {
				w.hist.RecordValue(min(int64(time.Since(sent)), maxLat))
			}
			switch {
			case out == outOK:
				w.ok++
			case out == outMiss && !w.strict:
				w.misses++
			case out == outMiss:
				w.fail(op.String()+": key missing although preloaded", 1)
			default:
				w.fail(reason, 1)
			}
		}
	}
}

// broken counts the requests of the batch that got no reply as errors,
// from the answered-th request of link l on, and stops the worker.
func (w *worker) broken(l *link, err error, answered int) {
	var lost int64
	seen := false
	for _, m := range w.links {
		switch {
		case m == l:
			lost += int64(len(m.ops) - answered)
			seen = true
		case seen:
			lost += int64(len(m.ops))
		}
	}
	w.fail(connReason(l.addr, err), lost)
	w.dead = true
	w.close()
}

// connReason describes a connection failure in words that do not depend
// on the connection, so that all of them count under one reason.
func connReason(addr string, err error) string {
	var ne net.Error
	var errno syscall.Errno
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
		return "no reply from " + addr + " within the timeout"
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed by " + addr
	case errors.Is(err, errReplyTooLarge):
		return "reply from " + addr + " larger than the read buffer"
	case errors.As(err, &errno):
		return "connection to " + addr + ": " + errno.Error()
	}
	return "connection to " + addr + ": " + err.Error()
}

var errReplyTooLarge = errors.New("reply larger than the read buffer")

// readReply reads and validates the reply to op.
func readReply(l *link, proto protocol, op Op) (outcome, string, error) {
	need := 1
	for {
		if _, err := l.r.Peek(need); err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				return outErr, "", errReplyTooLarge
			}
			if err == io.EOF && l.r.Buffered() > 0 {
				err = io.ErrUnexpectedEOF
			}
			return outErr, "", err
		}
		buf, _ := l.r.Peek(l.r.Buffered())
		n, out, reason, err := proto.parseReply(buf, op)
		if err != nil {
			return outErr, "", err
		}
		if n > 0 {
			l.r.Discard(n)
			return out, reason, nil
		}
		need = len(buf) + 1
	}
}

// collect sums the workers' counts and merges their histograms.
func collect(workers []*worker) stats {
	var st stats
	for _, w := range workers {
		st.ok += w.ok
		st.misses += w.misses
		st.errs += w.errs
		st.reasons = addReasons(st.reasons, w.reasons)
		if st.hist == nil {
			st.hist = newHist(w.cfg)
		}
		st.hist.Merge(w.hist)
	}
	return st
}

// reasonList lists error reasons, most frequent first.
func reasonList(reasons map[string]int64) string {
	keys := make([]string, 0, len(reasons))
	for r := range reasons {
		keys = append(keys, r)
	}
	sort.Slice(keys, func(i, j int) bool {
		if reasons[keys[i]] != reasons[keys[j]] {
			return reasons[keys[i]] > reasons[keys[j]]
		}
		return keys[i] < keys[j]
	})
	var b strings.Builder
	for i, r := range keys {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s (%d)", r, reasons[r])
	}
	return b.String()
}

// showProgress writes a progress line for ph about twice a second until
// the returned function is called, which erases it.
func showProgress(out io.Writer, ph *phase, start time.Time) func() {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		width := 0
		for {
			select {
			case <-t.C:
			case <-stop:
				fmt.Fprintf(out, "\r%*s\r", width, "")
				return
			}
			el := time.Since(start)
			n := ph.done.Load()
			var line string
			if ph.limit > 0 {
				line = fmt.Sprintf("%s: %d/%d requests", ph.name, n, ph.limit)
			} else {
				line = fmt.Sprintf("%s: %d requests", ph.name, n)
			}
			line += fmt.Sprintf(", %.0f ops/s, %.1fs", float64(n)/el.Seconds(), el.Seconds())
			if ph.duration > 0 {
				line += "/" + ph.duration.String()
			}
			if len(line) < width {
				line += strings.Repeat(" ", width-len(line))
			}
			width = len(line)
			fmt.Fprint(out, "\r"+line)
		}
	}()
	return func() {
		close(stop)
		<-done
	}
}
