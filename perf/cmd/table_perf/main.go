// Command table_perf measures the throughput and latency of the table
// service, and of Redis under the same load for comparison.
//
//	table_perf [flags] <zk_ip>:<zk_port>     a chain found through ZooKeeper
//	table_perf [flags] --direct <host:port>  one table_server
//	table_perf [flags] --redis <host:port>   one Redis
//	table_perf --table <report.json>...      a comparison table of --json reports
//	table_perf --targets <report.json>...    which performance targets they meet
//
// Add --vs-redis <host:port> to a chain or direct run to run the same load
// against Redis afterwards and print both with their ratio. Exit status: 0
// when every request succeeded, 1 when a run could not start or some
// requests failed, 2 for a bad command line.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/chaintable/chaintable/internal/cmdline"
	"github.com/chaintable/chaintable/perf"
)

const usage = `Usage:
  table_perf [flags] <zk_ip>:<zk_port>     load a chain: writes to its head, reads to its tail
  table_perf [flags] --direct <host:port>  load one table_server
  table_perf [flags] --redis <host:port>   load one Redis (SET/GET/DEL)
  table_perf --table <report.json>...      print a comparison table of --json reports
  table_perf --plot <report.json>... > f.svg   draw their latency percentiles as SVG
  table_perf --targets <report.json>...    judge the project's performance targets on them

Closed-loop load: -c connections, each sending batches of -P requests in one
write and reading their replies before the next batch. The run ends after -n
requests or -T time, whichever comes first (default -n %d).
--vs-redis <host:port> runs the same load against Redis afterwards and prints
the ratio; -rounds N measures both N times in turns, so that a shared
machine's changes of speed fall on both alike. A request's latency is the
time from its batch's send to its reply.

Exit status: 0 all requests succeeded, 1 a run failed or some requests
failed (misses are not failures), 2 bad command line.

Flags:
`

// options is everything the command line says.
type options struct {
	cfg       perf.Config // the first (or only) run
	vsRedis   string      // Redis address for a second run, or ""
	redisPIDs []int       // the processes of the Redis run's server, for its CPU time
	rounds    int         // times each target is measured, in turns
	json      bool
	quiet     bool
	label     string
	table     []string // report files for --table, --plot or --targets; nil unless one is given
	// show writes what the report files say: a table, a chart or targets.
	show    func(io.Writer, []*perf.Report) error
	cpuprof string // file for a CPU profile of table_perf itself
}

// configs returns the runs to make, in order.
func (o options) configs() []perf.Config {
	cfgs := []perf.Config{o.cfg}
	if o.vsRedis != "" {
		r := o.cfg
		r.Target = perf.Target{Kind: perf.Redis, Addr: o.vsRedis, RedisWait: o.cfg.Target.RedisWait, PIDs: o.redisPIDs}
		cfgs[0].Target.RedisWait = 0
		cfgs = append(cfgs, r)
	}
	return cfgs
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is the whole command; it returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseArgs(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "table_perf: %v\nRun 'table_perf -h' for usage.\n", err)
		return 2
	}
	if o.table != nil {
		return printReports(o.table, o.show, stdout, stderr)
	}

	if o.cpuprof != "" {
		f, err := os.Create(o.cpuprof)
		if err != nil {
			fmt.Fprintf(stderr, "table_perf: %v\n", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "table_perf: %v\n", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	report := &perf.Report{
		Tool:    "table_perf",
		Label:   o.label,
		Params:  perf.ParamsOf(o.cfg),
		Started: time.Now().UTC().Format(time.RFC3339),
	}
	report.Params.Rounds = o.rounds
	status := 0
	cfgs := o.configs()
	results := make([]*perf.Result, len(cfgs))
rounds:
	for round := range o.rounds {
		for i, cfg := range cfgs {
			if !o.quiet && isTerminal(stderr) {
				cfg.Progress = stderr
			}
			if round > 0 && cfg.Preload && !cfg.Workload.Deletes() {
				// The first round filled the key space for good; filling
				// it again would leave the next round to measure the
				// garbage collection of the values it replaced.
				cfg.Preload, cfg.Filled = false, true
			}
			if o.rounds > 1 && !o.quiet {
				fmt.Fprintf(stderr, "table_perf: round %d of %d: %s\n", round+1, o.rounds, cfg.Target.System())
			}
			res, err := perf.Run(ctx, cfg)
			if err != nil {
				fmt.Fprintf(stderr, "table_perf: %v\n", err)
				status = 1
				break rounds
			}
			if results[i] == nil {
				results[i] = res
			} else {
				results[i].Add(res)
			}
			if res.Errors > 0 || res.Interrupted {
				status = 1
			}
			if res.Interrupted {
				break rounds
			}
		}
	}
	for _, res := range results {
		if res != nil {
			report.Results = append(report.Results, *res)
		}
	}
	if len(report.Results) == 2 {
		report.Ratio = perf.Compare(&report.Results[0], &report.Results[1])
	}
	if len(report.Results) > 0 {
		var err error
		if o.json {
			err = report.WriteJSON(stdout)
		} else {
			err = report.WriteText(stdout)
		}
		if err != nil {
			fmt.Fprintf(stderr, "table_perf: writing the report: %v\n", err)
			return 1
		}
	}
	for _, res := range report.Results {
		if res.Errors > 0 {
			fmt.Fprintf(stderr, "table_perf: %d of %d requests to %s failed\n", res.Errors, res.Requests, res.System)
		}
		if res.Interrupted {
			fmt.Fprintf(stderr, "table_perf: interrupted\n")
		}
	}
	return status
}

func parseArgs(args []string, stderr io.Writer) (options, error) {
	var (
		o                     options
		workload, dist        string
		direct, redis         string
		redisWait, members    int
		requests              int64
		conns, pipeline, keys int
		table, plot, judge    bool
		pids, redisPIDs       string
		readFrom              string
	)
	fs := flag.NewFlagSet("table_perf", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&conns, "c", perf.DefaultConns, "number of `connections`, each driven by its own goroutine")
	fs.IntVar(&pipeline, "P", perf.DefaultPipeline, "`requests` in flight per connection (pipelining)")
	fs.Int64Var(&requests, "n", 0, "total number of `requests` (default 100000 when -T is not given either)")
	fs.DurationVar(&o.cfg.Duration, "T", 0, "run for this `duration` (e.g. 5s)")
	fs.IntVar(&o.cfg.ValueSize, "d", perf.DefaultValueSize, "value size in `bytes`")
	fs.IntVar(&keys, "r", perf.DefaultKeys, "key space: `number` of distinct keys (key:0 .. key:N-1)")
	fs.StringVar(&workload, "w", "put", "`workload`: put, get, del, or mix:F with F the fraction of gets (mix:0.9)")
	fs.BoolVar(&o.cfg.Preload, "preload", false, "put every key once before the run (not measured)")
	fs.StringVar(&dist, "dist", "uniform", "key `distribution`: uniform or zipf")
	fs.Float64Var(&o.cfg.ZipfS, "zipf-s", perf.DefaultZipfS, "zipf `exponent`, greater than 1")
	fs.StringVar(&direct, "direct", "", "load the one table_server at `host:port`")
	fs.StringVar(&redis, "redis", "", "load the Redis at `host:port`")
	fs.StringVar(&o.vsRedis, "vs-redis", "", "then run the same load against the Redis at `host:port` and compare")
	fs.IntVar(&o.rounds, "rounds", 1, "measure each target `N` times, in turns with --vs-redis, and report the rounds together; -n and -T are per round")
	fs.IntVar(&redisWait, "redis-wait", 0, "send WAIT `N` 0 after every Redis write and require N replicas")
	fs.IntVar(&members, "chain-members", 0, "wait until the chain has at least `N` members")
	fs.StringVar(&readFrom, "read-from", "any", "chain reads go to `any` member (connection i to member i mod n, head first) or all to the `tail`")
	fs.StringVar(&pids, "pids", "", "measure the CPU time per request of these local server `processes` (comma-separated PIDs; for a chain, head first); Linux")
	fs.StringVar(&redisPIDs, "redis-pids", "", "the same for the --vs-redis server's `processes`")
	fs.DurationVar(&o.cfg.Timeout, "timeout", perf.DefaultTimeout, "bound on connecting and on waiting for one batch's replies")
	fs.Uint64Var(&o.cfg.Seed, "seed", 1, "`seed` of the operation and key generators")
	fs.BoolVar(&o.json, "json", false, "print one JSON object with all parameters and results")
	fs.StringVar(&o.label, "label", "", "row `label` of this run in comparison tables")
	fs.BoolVar(&o.quiet, "q", false, "no progress line")
	fs.BoolVar(&table, "table", false, "print a comparison table of the --json reports named as arguments")
	fs.BoolVar(&plot, "plot", false, "print an SVG chart of the latency percentiles of the --json reports named as arguments")
	fs.BoolVar(&judge, "targets", false, "print which of the project's performance targets the --json reports named as arguments meet")
	fs.StringVar(&o.cpuprof, "cpuprofile", "", "write a CPU profile of table_perf itself to `file` (is the load generator the bottleneck?)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), usage, perf.DefaultRequests)
		fs.PrintDefaults()
	}
	pos, err := cmdline.Parse(fs, args)
	if err != nil {
		return o, err
	}
	switch {
	case table && plot, table && judge, plot && judge:
		return o, errors.New("give one of --table, --plot and --targets")
	case table:
		o.show = perf.WriteTable
	case plot:
		o.show = perf.WritePlot
	case judge:
		o.show = perf.WriteTargets
	}
	if o.show != nil {
		if len(pos) == 0 {
			return o, errors.New("--table, --plot and --targets need at least one report file")
		}
		o.table = pos
		return o, nil
	}

	// Config takes 0 for "default"; on the command line it is a mistake.
	switch {
	case conns < 1:
		return o, fmt.Errorf("-c: connections must be at least 1, got %d", conns)
	case pipeline < 1:
		return o, fmt.Errorf("-P: pipeline depth must be at least 1, got %d", pipeline)
	case o.rounds < 1:
		return o, fmt.Errorf("-rounds: must be at least 1, got %d", o.rounds)
	case keys < 1:
		return o, fmt.Errorf("-r: key space must hold at least 1 key, got %d", keys)
	}
	o.cfg.Conns, o.cfg.Pipeline, o.cfg.Keys, o.cfg.Requests = conns, pipeline, keys, requests
	if o.cfg.Workload, err = perf.ParseWorkload(workload); err != nil {
		return o, err
	}
	if o.cfg.Dist, err = perf.ParseDist(dist); err != nil {
		return o, err
	}
	targets := 0
	for _, t := range []string{direct, redis} {
		if t != "" {
			targets++
		}
	}
	switch len(pos) {
	case 0:
	case 1:
		targets++
		o.cfg.Target = perf.Target{Kind: perf.Chain, Addr: pos[0], ChainMembers: members, ReadTail: readFrom == "tail"}
	default:
		return o, fmt.Errorf("expected at most one argument, the ZooKeeper address; got %d", len(pos))
	}
	switch {
	case targets == 0:
		return o, errors.New("no target: give <zk_ip>:<zk_port>, --direct or --redis")
	case targets > 1:
		return o, errors.New("give only one of <zk_ip>:<zk_port>, --direct and --redis")
	case direct != "":
		o.cfg.Target = perf.Target{Kind: perf.Direct, Addr: direct}
	case redis != "":
		o.cfg.Target = perf.Target{Kind: perf.Redis, Addr: redis}
	}
	if readFrom != "any" && readFrom != "tail" {
		return o, fmt.Errorf("--read-from %q: want any or tail", readFrom)
	}
	if members != 0 && o.cfg.Target.Kind != perf.Chain {
		return o, errors.New("--chain-members needs a chain target (<zk_ip>:<zk_port>)")
	}
	if o.vsRedis != "" && o.cfg.Target.Kind == perf.Redis {
		return o, errors.New("--vs-redis compares a chaintable target with Redis; use it without --redis")
	}
	if redisWait != 0 {
		if o.cfg.Target.Kind != perf.Redis && o.vsRedis == "" {
			return o, errors.New("--redis-wait needs a Redis target (--redis or --vs-redis)")
		}
	}
	// The Redis run gets the WAIT; configs moves it off a chaintable run.
	o.cfg.Target.RedisWait = redisWait
	if o.cfg.Target.PIDs, err = parsePIDs("-pids", pids); err != nil {
		return o, err
	}
	if o.redisPIDs, err = parsePIDs("-redis-pids", redisPIDs); err != nil {
		return o, err
	}
	if o.redisPIDs != nil && o.vsRedis == "" {
		return o, errors.New("-redis-pids needs --vs-redis; name a lone target's processes with -pids")
	}
	if o.cfg.Requests == 0 && o.cfg.Duration == 0 {
		o.cfg.Requests = perf.DefaultRequests
	}
	for _, cfg := range o.configs() {
		if err := cfg.Validate(); err != nil {
			return o, err
		}
		if cfg.Target.Kind == perf.Redis || cfg.Target.Kind == perf.Direct {
			if _, port, _ := net.SplitHostPort(cfg.Target.Addr); port == "0" {
				return o, fmt.Errorf("address %q has port 0", cfg.Target.Addr)
			}
		}
	}
	return o, nil
}

// parsePIDs parses a comma-separated list of process IDs given to flag.
func parsePIDs(flag, list string) ([]int, error) {
	if list == "" {
		return nil, nil
	}
	var pids []int
	for _, f := range strings.Split(list, ",") {
		pid, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || pid < 1 {
			return nil, fmt.Errorf("%s: %q is not a process ID", flag, f)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

// printReports reads the report files and shows them to stdout.
func printReports(files []string, show func(io.Writer, []*perf.Report) error, stdout, stderr io.Writer) int {
	var reports []*perf.Report
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			fmt.Fprintf(stderr, "table_perf: %v\n", err)
			return 1
		}
		r, err := perf.ReadReport(f)
		f.Close()
		if err != nil {
			fmt.Fprintf(stderr, "table_perf: %s: %v\n", name, err)
			return 1
		}
		reports = append(reports, r)
	}
	if err := show(stdout, reports); err != nil {
		fmt.Fprintf(stderr, "table_perf: %v\n", err)
		return 1
	}
	return 0
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
