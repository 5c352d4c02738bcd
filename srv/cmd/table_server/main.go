// Command table_server runs one node of the table service.
//
//	table_server [flags] <zk_ip>:<zk_port> <server_port> <num_lists>
//	table_server [flags] --standalone <server_port> <num_lists>
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"syscall"
	"time"

	"github.com/chaintable/chaintable/chain"
	"github.com/chaintable/chaintable/codec"
	"github.com/chaintable/chaintable/internal/cmdline"
	"github.com/chaintable/chaintable/metrics"
	"github.com/chaintable/chaintable/srv"
	"github.com/chaintable/chaintable/wal"
)

const usage = `Usage:
  table_server [flags] <zk_ip>:<zk_port>[,<zk_ip>:<zk_port>...] <server_port> <num_lists>
  table_server [flags] --standalone <server_port> <num_lists>

Runs one node of the table service on TCP port <server_port> (1-65535),
with a hash table of <num_lists> independently locked lists (1-%d).
With --standalone the node serves alone, without ZooKeeper.

Flags:
`

// options is everything the command line says.
type options struct {
	zkAddr         string
	port           int
	lists          int
	standalone     bool
	bind           string
	advertise      string
	sessionTimeout time.Duration
	leaseTerm      time.Duration
	holdTimeout    time.Duration
	clientExpiry   time.Duration
	forceStart     bool
	maxFrame       int
	maxConns       int
	maxUnread      int
	replyBudget    int
	maxScan        int
	idleTimeout    time.Duration
	loops          int
	cpuProfile     string
	metricsAddr    string
	pprof          bool
	verbose        bool
	dataDir        string
	fsync          wal.Mode
}

func main() {
	opts, err := parseArgs(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "table_server: %v\nRun 'table_server -h' for usage.\n", err)
		os.Exit(2)
	}
	level := slog.LevelWarn
	if opts.verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if os.Getenv("GOGC") == "" {
		// A table is mostly long-lived small objects: collecting at 50%
		// growth instead of 100% keeps the heap near 1.5x the live data
		// rather than 2x, for little CPU (see README, Performance).
		debug.SetGCPercent(50)
	}
	stopProfile := func() {}
	if opts.cpuProfile != "" {
		if stopProfile, err = startCPUProfile(opts.cpuProfile); err != nil {
			fmt.Fprintf(os.Stderr, "table_server: %v\n", err)
			os.Exit(1)
		}
	}
	err = run(opts, log)
	stopProfile()
	if err != nil {
		fmt.Fprintf(os.Stderr, "table_server: %v\n", err)
		os.Exit(1)
	}
}

func parseArgs(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("table_server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.BoolVar(&o.standalone, "standalone", false, "serve alone, without ZooKeeper")
	fs.StringVar(&o.bind, "bind", "", "`address` to listen on (default: all interfaces)")
	fs.StringVar(&o.advertise, "advertise", "", "`host` that other nodes and clients reach this node at (default: the local address of the connection to ZooKeeper)")
	fs.DurationVar(&o.sessionTimeout, "session-timeout", 4*time.Second, "ZooKeeper session `timeout`: a node cut off from ZooKeeper this long loses its place in the chain")
	fs.DurationVar(&o.leaseTerm, "lease", 0, "how `long` a node keeps answering reads on its predecessor's word while ZooKeeper is unreachable, at most the session timeout (default: half of it)")
	fs.DurationVar(&o.holdTimeout, "hold", chain.DefaultHoldTimeout, "how `long` a node holds a request it cannot answer correctly yet (it lost its place, or lost touch with ZooKeeper) before it closes that client's connection")
	fs.DurationVar(&o.clientExpiry, "client-expiry", chain.DefaultClientExpiry, "how `long` the exactly-once records of a client that stopped writing are kept; longer than any client retries a write")
	fs.BoolVar(&o.forceStart, "force-start", false, "if ZooKeeper lists nodes as holding the latest writes but none of them is registered, start the chain without them: their writes are lost")
	fs.IntVar(&o.maxFrame, "max-frame", codec.DefaultMaxFrame, "largest request in `bytes`; a larger one closes its connection")
	fs.IntVar(&o.maxConns, "max-conns", srv.DefaultMaxConns, "most connections open at once; more are closed as they open")
	fs.IntVar(&o.maxUnread, "max-unread", srv.DefaultMaxOutbound, "most reply `bytes` a client may leave unread before it is disconnected")
	fs.IntVar(&o.maxScan, "max-scan", srv.DefaultMaxScan, "most `keys` a getkeys or gettable answers; one of a larger table is refused with STATUS_TOO_LARGE (0: no limit)")
	fs.IntVar(&o.replyBudget, "reply-budget", srv.DefaultReplyBudget, "reply `bytes` a client may leave unsent before its further requests wait until it reads")
	fs.DurationVar(&o.idleTimeout, "idle-timeout", 0, "close connections silent for this `long` (0: never)")
	fs.IntVar(&o.loops, "loops", 0, "event loops serving connections (default: one per CPU)")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile to `file` until the server stops")
	fs.StringVar(&o.metricsAddr, "metrics-addr", "", "serve Prometheus metrics at /metrics and a health check at /healthz on `host:port` (default: off)")
	fs.BoolVar(&o.pprof, "pprof", false, "also serve the Go runtime's profiles at /debug/pprof/ on the -metrics-addr address")
	fs.BoolVar(&o.verbose, "v", false, "log debug messages")
	fs.StringVar(&o.dataDir, "data-dir", "", "keep a write-ahead log and snapshots of the table in `dir`, and start from what it holds (default: memory only)")
	fsync := fs.String("fsync", "batch", "with -data-dir, when a write counts as durable: always (fsync each), batch (group commit) or none (left to the OS)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), usage, srv.MaxLists)
		fs.PrintDefaults()
	}
	pos, err := cmdline.Parse(fs, args)
	if err != nil {
		return o, err
	}
	if o.fsync, err = wal.ParseMode(*fsync); err != nil {
		return o, fmt.Errorf("-fsync: %w", err)
	}
	want := 3
	if o.standalone {
		want = 2
	}
	if len(pos) != want {
		return o, fmt.Errorf("expected %d arguments, got %d", want, len(pos))
	}
	if o.standalone && o.dataDir != "" {
		return o, errors.New("-data-dir needs a chain: it does not go with -standalone")
	}
	fsyncSet := false
	fs.Visit(func(f *flag.Flag) { fsyncSet = fsyncSet || f.Name == "fsync" })
	if fsyncSet && o.dataDir == "" {
		return o, errors.New("-fsync says how the log of -data-dir reaches the disk: give -data-dir too")
	}
	if !o.standalone {
		o.zkAddr, pos = pos[0], pos[1:]
		if err := cmdline.CheckZooKeeper(o.zkAddr); err != nil {
			return o, err
		}
	}
	if o.port, err = strconv.Atoi(pos[0]); err != nil || o.port < 1 || o.port > 65535 {
		return o, fmt.Errorf("server port %q is not a number from 1 to 65535", pos[0])
	}
	if o.lists, err = strconv.Atoi(pos[1]); err != nil || o.lists < 1 || o.lists > srv.MaxLists {
		return o, fmt.Errorf("number of lists %q is not a number from 1 to %d", pos[1], srv.MaxLists)
	}
	if o.metricsAddr != "" {
		if _, _, err := net.SplitHostPort(o.metricsAddr); err != nil {
			return o, fmt.Errorf("-metrics-addr %q: want host:port", o.metricsAddr)
		}
	}
	if o.pprof && o.metricsAddr == "" {
		return o, errors.New("-pprof needs -metrics-addr: the profiles are served there")
	}
	if o.maxFrame < 1 || o.maxConns < 1 || o.maxUnread < 1 || o.replyBudget < 1 || o.maxScan < 0 || o.sessionTimeout <= 0 || o.holdTimeout <= 0 || o.clientExpiry <= 0 || o.leaseTerm < 0 || o.idleTimeout < 0 || o.loops < 0 {
		return o, fmt.Errorf("-max-frame, -max-conns, -max-unread, -reply-budget, -session-timeout, -hold and -client-expiry must be positive, -lease, -idle-timeout, -max-scan and -loops not negative")
	}
	if o.leaseTerm == 0 {
		o.leaseTerm = o.sessionTimeout / 2
	}
	if o.leaseTerm > o.sessionTimeout {
		// No lease outlasts the lease of the node that grants it, which
		// the head holds on its session: a longer one only makes a
		// failover wait longer.
		return o, fmt.Errorf("-lease %v is longer than -session-timeout %v; it must not be", o.leaseTerm, o.sessionTimeout)
	}
	return o, nil
}

func run(o options, log *slog.Logger) error {
	store, err := srv.NewStore(o.lists)
	if err != nil {
		return err
	}
	store.MaxScan = o.maxScan
	if o.maxScan == 0 {
		store.MaxScan = -1 // no limit
	}
	if !o.standalone {
		return runChain(o, store, log)
	}
	s, err := srv.Start(o.serverConfig(store, store, log))
	if err != nil {
		return err
	}
	stopMetrics, err := o.serveMetrics(metrics.Sources{Stats: store.Stats, Table: store.Table}, log)
	if err != nil {
		return err
	}
	defer stopMetrics()
	log.Info("serving", "addr", s.Addr(), "lists", o.lists)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return s.Stop(sctx)
}

// serverConfig is the srv.Config the options ask for.
func (o options) serverConfig(h srv.Handler, store *srv.Store, log *slog.Logger) srv.Config {
	return srv.Config{
		Addr:        net.JoinHostPort(o.bind, strconv.Itoa(o.port)),
		Handler:     h,
		Stats:       store.Stats,
		MaxFrame:    o.maxFrame,
		MaxConns:    o.maxConns,
		MaxOutbound: o.maxUnread,
		ReplyBudget: o.replyBudget,
		IdleTimeout: o.idleTimeout,
		EventLoops:  o.loops,
		Logger:      log,
	}
}

// serveMetrics serves src's metrics on -metrics-addr, if set, until stop
// is called.
func (o options) serveMetrics(src metrics.Sources, log *slog.Logger) (stop func(), err error) {
	if o.metricsAddr == "" {
		return func() {}, nil
	}
	m, err := metrics.Listen(o.metricsAddr, src, o.pprof, log)
	if err != nil {
		return nil, err
	}
	log.Info("serving metrics", "addr", "http://"+m.Addr()+"/metrics")
	return func() { m.Close() }, nil
}

// startCPUProfile profiles the process into path until stop is called.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
