package cluster

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chaintable/chaintable/cli"
	"github.com/chaintable/chaintable/codec"
)

// LoadOptions configure a Load. The zero value is ready to use.
type LoadOptions struct {
	// Clients is how many clients run at once, each with its own
	// cli.Client and ZooKeeper watch. Zero means 4.
	Clients int
	// Shared makes the clients goroutines of one program instead: they
	// share one cli.Client, its connections and its exactly-once ids.
	Shared bool
	// Keys is how many keys they share ("k0", "k1", …). Few keys make
	// clients contend, which is what finds ordering bugs. Zero means 5.
	Keys int
	// RetryFor and AttemptTimeout are the clients' cli.Options. Zero
	// means 20s and 1s.
	RetryFor       time.Duration
	AttemptTimeout time.Duration
	// MaxPause bounds the random pause of a client between operations,
	// which keeps histories to a size porcupine checks quickly. Zero means
	// 10ms; negative means no pause.
	MaxPause time.Duration
	// Seed seeds the clients' choices of operations; zero means a seed
	// from the clock. The seed in use is logged.
	Seed uint64
}

// Load is a bounded mixed workload of puts, gets and dels on a small set of
// keys, run by concurrent clients through the chain, recording every
// operation in a History. Every put writes a value never written before.
type Load struct {
	tb      testing.TB
	opts    LoadOptions
	zkAddr  string
	history *History
	keys    atomic.Pointer[[]string] // the clients' keys now

	usedMu sync.Mutex
	used   []string // every key the clients or Probes used, for ReadFinal

	clients []*cli.Client
	closers []func()
	ctx     context.Context
	cancel  context.CancelFunc
	stop    chan struct{}
	wg      sync.WaitGroup
	waits   atomic.Int64 // requests that had to wait for the chain
	probes  atomic.Int64 // requests sent by Probes
	audits  atomic.Int64 // Audits run

	once    sync.Once
	started int64
	stopped int64
}

// StartLoad connects opts.Clients clients to the chain registered in the
// ZooKeeper at zkAddr and starts them. Stop ends them; so does the end of
// the test.
func StartLoad(tb testing.TB, zkAddr string, opts LoadOptions) *Load {
	tb.Helper()
	if opts.Clients == 0 {
		opts.Clients = 4
	}
	if opts.Keys == 0 {
		opts.Keys = 5
	}
	if opts.RetryFor == 0 {
		opts.RetryFor = 20 * time.Second
	}
	if opts.AttemptTimeout == 0 {
		opts.AttemptTimeout = time.Second
	}
	if opts.MaxPause == 0 {
		opts.MaxPause = 10 * time.Millisecond
	}
	if opts.Seed == 0 {
		opts.Seed = uint64(time.Now().UnixNano())
	}
	tb.Logf("cluster: load of %d clients on %d keys, seed %d", opts.Clients, opts.Keys, opts.Seed)
	l := &Load{tb: tb, opts: opts, zkAddr: zkAddr, history: NewHistory(), stop: make(chan struct{})}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.Rekey("")
	tb.Cleanup(func() { l.halt(0) })
	// Each client watches the chain on a ZooKeeper session of its own, as
	// separate processes would; they connect at once, since each waits
	// zkSettle.
	l.clients = make([]*cli.Client, opts.Clients)
	l.closers = make([]func(), opts.Clients)
	errs := make([]error, opts.Clients)
	var wg sync.WaitGroup
	for i := range opts.Clients {
		if opts.Shared && i > 0 {
			continue
		}
		// Every other client reads at the tail, as the course's clients
		// do; the rest read at any member.
		readFrom := cli.ReadAny
		if i%2 == 1 {
			readFrom = cli.ReadTail
		}
		wg.Go(func() { l.clients[i], l.closers[i], errs[i] = l.dial(readFrom) })
	}
	wg.Wait()
	if opts.Shared {
		for i := range l.clients {
			l.clients[i] = l.clients[0]
		}
	}
	if err := errors.Join(errs...); err != nil {
		tb.Fatalf("cluster: clients: %v", err)
	}
	l.started = l.history.Now()
	for i, cl := range l.clients {
		l.wg.Add(1)
		go l.run(i, cl)
	}
	return l
}

// dial returns a client of the chain, with the Load's retries, and a
// function that closes it.
func (l *Load) dial(readFrom cli.ReadFrom) (*cli.Client, func(), error) {
	return dialClient(l.zkAddr, cli.Options{
		RetryFor:       l.opts.RetryFor,
		AttemptTimeout: l.opts.AttemptTimeout,
		OnWait:         func(error) { l.waits.Add(1) },
	}, readFrom)
}

// History returns the History the Load records into.
func (l *Load) History() *History { return l.history }

// Keys returns the keys the Load's clients use now.
func (l *Load) Keys() []string { return slices.Clone(*l.keys.Load()) }

// Rekey moves the clients to a fresh set of keys, prefix+"k0",
// prefix+"k1", …, and returns it; an operation under way finishes on its
// key. Giving each fault of a run keys of its own makes the operations on
// them a history of their own, which a Recorder judges on its own, while
// ReadFinal and Audit go on reading
// the keys of earlier faults, so that a write that a later fault loses
// still shows. The prefix must not have been used before.
func (l *Load) Rekey(prefix string) []string {
	keys := make([]string, l.opts.Keys)
	for i := range keys {
		keys[i] = fmt.Sprintf("%sk%d", prefix, i)
		l.addKey(keys[i])
	}
	l.keys.Store(&keys)
	return slices.Clone(keys)
}

// addKey adds key to those ReadFinal reads.
func (l *Load) addKey(key string) {
	l.usedMu.Lock()
	defer l.usedMu.Unlock()
	if !slices.Contains(l.used, key) {
		l.used = append(l.used, key)
	}
}

// usedKeys returns every key used so far.
func (l *Load) usedKeys() []string {
	l.usedMu.Lock()
	defer l.usedMu.Unlock()
	return slices.Clone(l.used)
}

// Waits returns how many requests had to wait for the chain (and were
// retried) so far.
func (l *Load) Waits() int64 { return l.waits.Load() }

// Stop stops the clients: each finishes the operation it is in, which its
// retries bound to RetryFor, and starts no other. It then closes them and
// returns the History.
func (l *Load) Stop() *History {
	l.halt(l.opts.RetryFor + 5*time.Second)
	return l.history
}

// Stats sums up the operations of the Load, from its start to its Stop.
func (l *Load) Stats() Stats {
	end := l.stopped
	if end == 0 {
		end = l.history.Now()
	}
	return l.history.Stats(l.started, end)
}

// halt stops the clients, cancelling their operations after grace.
func (l *Load) halt(grace time.Duration) {
	l.once.Do(func() {
		close(l.stop)
		done := make(chan struct{})
		go func() {
			l.wg.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(grace):
			l.cancel()
			<-done
		}
		l.cancel()
		l.stopped = l.history.Now()
		for _, closeClient := range l.closers {
			if closeClient != nil {
				closeClient()
			}
		}
	})
}

// run is client id's loop.
func (l *Load) run(id int, cl *cli.Client) {
	defer l.wg.Done()
	rng := rand.New(rand.NewPCG(l.opts.Seed, uint64(id)))
	for i := 0; ; i++ {
		select {
		case <-l.stop:
			return
		default:
		}
		keys := *l.keys.Load()
		in := Input{Key: keys[rng.IntN(len(keys))]}
		switch p := rng.IntN(10); {
		case p < 4:
			in.Kind = Get
		case p < 8:
			in.Kind = Put
			in.Value = fmt.Sprintf("c%d-%d", id, i)
		default:
			in.Kind = Del
		}
		call := l.history.Now()
		out, err := Do(l.ctx, cl, in)
		l.history.Add(Op{Client: id, Input: in, Output: out, Call: call, Return: l.history.Now(), Err: err})
		if l.opts.MaxPause > 0 {
			select {
			case <-l.stop:
				return
			case <-time.After(rand.N(l.opts.MaxPause)):
			}
		}
	}
}

// Do runs in with cl and says what came of it. A NOT_FOUND answer to a get
// or del is definite; any other error leaves the outcome Indefinite and is
// returned.
func Do(ctx context.Context, cl *cli.Client, in Input) (Output, error) {
	var err error
	switch in.Kind {
	case Get:
		var v []byte
		if v, err = cl.Get(ctx, in.Key); err == nil {
			return Output{Value: string(v)}, nil
		}
	case Put:
		err = cl.Put(ctx, in.Key, []byte(in.Value))
	case Del:
		err = cl.Del(ctx, in.Key)
	default:
		return Output{Outcome: Indefinite}, fmt.Errorf("cluster: unknown operation %v", in.Kind)
	}
	var se *cli.ServerError
	switch {
	case err == nil:
		return Output{}, nil
	case in.Kind != Put && errors.As(err, &se) && se.Status == codec.Status_STATUS_NOT_FOUND:
		return Output{NotFound: true}, nil
	}
	return Output{Outcome: Indefinite}, err
}

// ReadFinal reads every key used so far (the clients' under every Rekey,
// and those Probes wrote) at the chain's tail through a new client, records
// the reads in the History as one more client's, after everything else,
// and returns the values of the keys that are present.
// It must follow Stop. It fails the test if a read fails.
func (l *Load) ReadFinal() map[string]string {
	l.tb.Helper()
	cl, closeClient, err := l.dial(cli.ReadTail)
	if err != nil {
		l.tb.Fatalf("cluster: client: %v", err)
	}
	defer closeClient()
	final := make(map[string]string)
	for _, key := range l.usedKeys() {
		in := Input{Kind: Get, Key: key}
		call := l.history.Now()
		out, err := Do(context.Background(), cl, in)
		if err != nil {
			l.tb.Fatalf("cluster: final read of %q: %v", key, err)
		}
		l.history.Add(Op{Client: l.opts.Clients, Input: in, Output: out, Call: call, Return: l.history.Now()})
		if !out.NotFound {
			final[key] = out.Value
		}
	}
	return final
}

// Audit reads every key used so far, one after the other, through a client
// of its own, with the Load's retries, and records the reads in the
// History, while the clients go on. Run after each fault of a long run, it
// makes a write that the fault lost show in the linearizability check of
// its keys right there, rather than only in the final reads. A read that
// fails is recorded as such; Audit returns how many did.
func (l *Load) Audit() int {
	l.tb.Helper()
	// Not l.dial: the Audit's waits are not the clients'.
	cl, closeClient, err := dialClient(l.zkAddr, cli.Options{RetryFor: l.opts.RetryFor, AttemptTimeout: l.opts.AttemptTimeout}, cli.ReadAny)
	if err != nil {
		l.tb.Fatalf("cluster: client: %v", err)
	}
	defer closeClient()
	client := l.opts.Clients + 1_000_000 + int(l.audits.Add(1))
	failed := 0
	for _, key := range l.usedKeys() {
		in := Input{Kind: Get, Key: key}
		call := l.history.Now()
		out, err := Do(l.ctx, cl, in)
		l.history.Add(Op{Client: client, Input: in, Output: out, Call: call, Return: l.history.Now(), Err: err, Probe: true})
		if err != nil {
			failed++
		}
	}
	return failed
}

// ProbeTimeout bounds each request of a Probe.
const ProbeTimeout = 10 * time.Second

// Probe sends requests straight to one node, bypassing the chain's
// routing and without retries, and records them in a Load's History, each
// as a client of its own. It shows what a node that may have lost its
// place answers: a request sent to a frozen node waits in its socket and
// is executed when it resumes.
type Probe struct {
	l    *Load
	addr string
	cl   *cli.Client
	wg   sync.WaitGroup

	mu      sync.Mutex
	results []Op
}

// Probe connects to addr, which need not answer yet (a frozen process's
// kernel still accepts connections), for requests sent with Send.
func (l *Load) Probe(addr string) *Probe {
	l.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ProbeTimeout)
	defer cancel()
	cl, err := cli.Dial(ctx, cli.Direct(addr), cli.Options{})
	if err != nil {
		l.tb.Fatalf("cluster: probe %s: %v", addr, err)
	}
	return &Probe{l: l, addr: addr, cl: cl}
}

// Send sends in without waiting for the answer. A put's value must be one
// never written before. Keys that the Load does not use are read by
// ReadFinal too, so that a put acknowledged there shows at the end.
func (p *Probe) Send(in Input) {
	h := p.l.history
	client := p.l.opts.Clients + int(p.l.probes.Add(1))
	p.l.addKey(in.Key)
	call := h.Now()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), ProbeTimeout)
		defer cancel()
		out, err := Do(ctx, p.cl, in)
		op := Op{Client: client, Input: in, Output: out, Call: call, Return: h.Now(), Err: err, Probe: true}
		h.Add(op)
		p.mu.Lock()
		p.results = append(p.results, op)
		p.mu.Unlock()
	}()
}

// Wait waits for the answers to every request sent, closes the connection
// and returns the requests with their outcomes, in the order they ended.
func (p *Probe) Wait() []Op {
	p.wg.Wait()
	p.cl.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.results)
}
