package perf

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Result is what one run against one target measured. Latencies are in
// microseconds.
type Result struct {
	// System is "chaintable" or "redis"; Target is "direct", "chain"
	// or "redis"; Addr is the server's address, or ZooKeeper's.
	System string `json:"system"`
	Target string `json:"target"`
	Addr   string `json:"addr"`
	// Head and Tail are the chain's first and last members; writes went
	// to the head, reads to Readers.
	Head    string   `json:"head,omitempty"`
	Tail    string   `json:"tail,omitempty"`
	Readers []string `json:"readers,omitempty"`
	// RedisWait is the replica count of the WAIT after every write.
	RedisWait int `json:"redis_wait,omitempty"`
	// Requests is OK + Misses + Errors: every request sent.
	Requests int64 `json:"requests"`
	OK       int64 `json:"ok"`
	// Misses are gets and dels of missing keys, when that is expected.
	Misses int64 `json:"misses"`
	// Errors are failed requests, including those that got no reply;
	// ErrorReasons counts them by reason.
	Errors       int64            `json:"errors"`
	ErrorReasons map[string]int64 `json:"error_reasons,omitempty"`
	// ElapsedSec is the duration of the measured load in seconds, and
	// OpsPerSec is Requests divided by it.
	ElapsedSec float64 `json:"elapsed_s"`
	OpsPerSec  float64 `json:"ops_per_sec"`
	Latency    Latency `json:"latency_us"`
	// Preload describes the preload, when there was one.
	Preload *Preload `json:"preload,omitempty"`
	// Interrupted says that the run was cut short (Run's context ended).
	Interrupted bool `json:"interrupted,omitempty"`
	// ServerCPU is what the target's processes (Target.PIDs) spent on
	// the measured load, when they were named.
	ServerCPU *ServerCPU `json:"server_cpu,omitempty"`

	// Elapsed is ElapsedSec as a Duration.
	Elapsed time.Duration `json:"-"`
	// Hist holds every request's latency in nanoseconds.
	Hist *hdrhistogram.Histogram `json:"-"`
}

// Add folds o, another round of the same load against the same target,
// into r: counts and measured time add up, throughput is over both, and
// latencies are those of every request of both. r keeps its own preload.
func (r *Result) Add(o *Result) {
	r.Requests += o.Requests
	r.OK += o.OK
	r.Misses += o.Misses
	r.Errors += o.Errors
	r.ErrorReasons = addReasons(r.ErrorReasons, o.ErrorReasons)
	r.Elapsed += o.Elapsed
	r.ElapsedSec = r.Elapsed.Seconds()
	if r.Elapsed > 0 {
		r.OpsPerSec = float64(r.Requests) / r.ElapsedSec
	}
	switch {
	case r.Hist == nil:
		r.Hist = o.Hist
	case o.Hist != nil:
		r.Hist.Merge(o.Hist)
	}
	r.Latency = latencyOf(r.Hist)
	r.Interrupted = r.Interrupted || o.Interrupted
	switch {
	case r.ServerCPU != nil && o.ServerCPU != nil:
		r.ServerCPU.add(o.ServerCPU, r.Requests)
	case r.ServerCPU != nil:
		// A round without the measurement: the sum would be wrong.
		r.ServerCPU = nil
	}
}

// addReasons adds the error counts of src to dst, made when needed, and
// returns dst.
func addReasons(dst, src map[string]int64) map[string]int64 {
	for reason, n := range src {
		if dst == nil {
			dst = make(map[string]int64)
		}
		dst[reason] += n
	}
	return dst
}

// Latency summarises a latency histogram, in microseconds.
type Latency struct {
	// P50 to P999 are percentiles (P999 is the 99.9th); Max and Mean
	// are over every request.
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p99_9"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

// Preload describes the filling of the key space before a run.
type Preload struct {
	// Keys is the number of keys put; ElapsedSec and OpsPerSec measure
	// how long that took.
	Keys       int64   `json:"keys"`
	ElapsedSec float64 `json:"elapsed_s"`
	OpsPerSec  float64 `json:"ops_per_sec"`
}

func latencyOf(h *hdrhistogram.Histogram) Latency {
	if h == nil || h.TotalCount() == 0 {
		return Latency{}
	}
	us := func(ns int64) float64 { return math.Round(float64(ns)/10) / 100 }
	return Latency{
		P50:  us(h.ValueAtQuantile(50)),
		P90:  us(h.ValueAtQuantile(90)),
		P99:  us(h.ValueAtQuantile(99)),
		P999: us(h.ValueAtQuantile(99.9)),
		Max:  us(h.Max()),
		Mean: us(int64(h.Mean())),
	}
}

// Params are the parameters of a run, as reported.
type Params struct {
	// Each field is the Config field of the same name, durations in
	// seconds; ReadFraction is the workload's fraction of gets.
	Workload     string  `json:"workload"`
	ReadFraction float64 `json:"read_fraction"`
	Conns        int     `json:"connections"`
	Pipeline     int     `json:"pipeline"`
	Requests     int64   `json:"requests,omitempty"`
	DurationSec  float64 `json:"duration_s,omitempty"`
	ValueSize    int     `json:"value_size"`
	Keys         int     `json:"keys"`
	Dist         string  `json:"dist"`
	ZipfS        float64 `json:"zipf_s,omitempty"`
	Preload      bool    `json:"preload"`
	Seed         uint64  `json:"seed"`
	TimeoutSec   float64 `json:"timeout_s"`
	// Rounds is how many times each target was measured, in turns;
	// Requests and DurationSec are per round. Zero means one.
	Rounds int `json:"rounds,omitempty"`
	// GoMaxProcs is the load generator's GOMAXPROCS.
	GoMaxProcs int `json:"gomaxprocs"`
}

// ParamsOf returns the parameters of cfg, defaults applied.
func ParamsOf(cfg Config) Params {
	cfg = cfg.withDefaults()
	p := Params{
		Workload:    cfg.Workload.String(),
		Conns:       cfg.Conns,
		Pipeline:    cfg.Pipeline,
		Requests:    cfg.Requests,
		DurationSec: cfg.Duration.Seconds(),
		ValueSize:   cfg.ValueSize,
		Keys:        cfg.Keys,
		Dist:        cfg.Dist.String(),
		Preload:     cfg.Preload,
		Seed:        cfg.Seed,
		TimeoutSec:  cfg.Timeout.Seconds(),
		GoMaxProcs:  runtime.GOMAXPROCS(0),
	}
	switch {
	case cfg.Workload.Mix:
		p.ReadFraction = cfg.Workload.ReadFraction
	case cfg.Workload.Op == OpGet:
		p.ReadFraction = 1
	}
	if cfg.Dist == Zipf {
		p.ZipfS = cfg.ZipfS
	}
	return p
}

// Report is everything table_perf says about one invocation: its
// parameters and the result of each target, chaintable first.
type Report struct {
	// Tool is always "table_perf".
	Tool string `json:"tool"`
	// Label names the run in comparison tables; empty means a label
	// made from the parameters (see RowLabel).
	Label   string   `json:"label,omitempty"`
	Params  Params   `json:"params"`
	Results []Result `json:"results"`
	// Ratio compares the first result with the second (chaintable with
	// Redis), when there are two.
	Ratio *Ratio `json:"ratio,omitempty"`
	// Started is when the invocation began, RFC 3339.
	Started string `json:"started,omitempty"`
}

// Ratio compares two results: each field is the first's value divided by
// the second's (0 when the second's is 0). A throughput above 1 and
// latencies below 1 favour the first.
type Ratio struct {
	Throughput float64 `json:"throughput"`
	P50        float64 `json:"p50"`
	P99        float64 `json:"p99"`
}

// Compare returns the ratios of a to b.
func Compare(a, b *Result) *Ratio {
	div := func(x, y float64) float64 {
		if y == 0 {
			return 0
		}
		return math.Round(x/y*1000) / 1000
	}
	return &Ratio{
		Throughput: div(a.OpsPerSec, b.OpsPerSec),
		P50:        div(a.Latency.P50, b.Latency.P50),
		P99:        div(a.Latency.P99, b.Latency.P99),
	}
}

// WriteJSON writes r as one indented JSON object and a newline.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// ReadReport parses a report that WriteJSON wrote.
func ReadReport(rd io.Reader) (*Report, error) {
	var r Report
	dec := json.NewDecoder(rd)
	if err := dec.Decode(&r); err != nil {
		return nil, err
	}
	if r.Tool != "table_perf" || len(r.Results) == 0 {
		return nil, fmt.Errorf("not a table_perf report")
	}
	return &r, nil
}

// RowLabel returns r.Label, or a label made from its parameters:
// workload, pipeline depth, and what differs from one standalone server.
func (r *Report) RowLabel() string {
	if r.Label != "" {
		return r.Label
	}
	l := fmt.Sprintf("%s -P %d", r.Params.Workload, r.Params.Pipeline)
	for _, res := range r.Results {
		if res.Target == "chain" {
			l += " chain"
		}
		if res.RedisWait > 0 {
			l += fmt.Sprintf(" WAIT %d", res.RedisWait)
		}
	}
	return l
}

// WriteText writes r for people: the parameters, then each result, then
// the ratio.
func (r *Report) WriteText(w io.Writer) error {
	p := r.Params
	var b strings.Builder
	fmt.Fprintf(&b, "workload   %s, %d connections x %d in flight, %d-byte values, %d keys %s",
		p.Workload, p.Conns, p.Pipeline, p.ValueSize, p.Keys, p.Dist)
	if p.ZipfS > 0 {
		fmt.Fprintf(&b, " (s=%g)", p.ZipfS)
	}
	if p.Preload {
		b.WriteString(", preloaded")
	}
	if p.Rounds > 1 {
		fmt.Fprintf(&b, ", %d rounds in turns", p.Rounds)
	}
	b.WriteString("\n")
	for i := range r.Results {
		res := &r.Results[i]
		b.WriteString("\n")
		writeResult(&b, res)
	}
	if r.Ratio != nil && len(r.Results) == 2 {
		a, c := r.Results[0].System, r.Results[1].System
		fmt.Fprintf(&b, "\n%s / %s: throughput %.2fx, p50 latency %.2fx, p99 latency %.2fx\n",
			a, c, r.Ratio.Throughput, r.Ratio.P50, r.Ratio.P99)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func writeResult(b *strings.Builder, res *Result) {
	where := res.Addr
	switch {
	case res.Target == "chain":
		where = fmt.Sprintf("chain via ZooKeeper %s (head %s, tail %s, reads at %s)", res.Addr, res.Head, res.Tail, strings.Join(res.Readers, " "))
	case res.RedisWait > 0:
		where = fmt.Sprintf("%s, WAIT %d 0 after every write", res.Addr, res.RedisWait)
	}
	fmt.Fprintf(b, "%s %s\n", res.System, where)
	if res.Preload != nil {
		fmt.Fprintf(b, "  preload    %d keys in %.2fs (%.0f ops/s)\n", res.Preload.Keys, res.Preload.ElapsedSec, res.Preload.OpsPerSec)
	}
	fmt.Fprintf(b, "  requests   %d in %.2fs: %.0f ops/s", res.Requests, res.ElapsedSec, res.OpsPerSec)
	if res.Interrupted {
		b.WriteString(" (interrupted)")
	}
	b.WriteString("\n")
	fmt.Fprintf(b, "  replies    %d ok, %d misses, %d errors\n", res.OK, res.Misses, res.Errors)
	if res.Errors > 0 {
		fmt.Fprintf(b, "  errors     %s\n", reasonList(res.ErrorReasons))
	}
	l := res.Latency
	fmt.Fprintf(b, "  latency    p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  (mean %s)\n",
		FormatMicros(l.P50), FormatMicros(l.P90), FormatMicros(l.P99), FormatMicros(l.P999), FormatMicros(l.Max), FormatMicros(l.Mean))
	if c := res.ServerCPU; c != nil {
		fmt.Fprintf(b, "  server CPU %s per request", FormatMicros(c.PerRequestUs))
		if len(c.Processes) > 1 {
			fmt.Fprintf(b, " (%s)", processList(c))
		}
		b.WriteString("\n")
	}
}

// processList says what each process of c spent per request:
// "pid 12: 3.41µs, pid 13: 1.90µs".
func processList(c *ServerCPU) string {
	var b strings.Builder
	for i, p := range c.Processes {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "pid %d: %s", p.PID, FormatMicros(p.PerRequestUs))
	}
	return b.String()
}

// FormatMicros formats a latency in microseconds with three significant
// digits and a unit: "87.2µs", "1.25ms", "2.00s".
func FormatMicros(us float64) string {
	switch {
	case us < 1000:
		return strconv.FormatFloat(us, 'f', digitsAfter(us), 64) + "µs"
	case us < 1e6:
		return strconv.FormatFloat(us/1e3, 'f', digitsAfter(us/1e3), 64) + "ms"
	}
	return strconv.FormatFloat(us/1e6, 'f', digitsAfter(us/1e6), 64) + "s"
}

func digitsAfter(v float64) int {
	switch {
	case v < 10:
		return 2
	case v < 100:
		return 1
	}
	return 0
}

// WriteTable writes one comparison row per report: its label, the
// throughput of chaintable and of Redis, their ratio, the p99 latency of
// each, the errors of both, and, when any report measured it, the
// servers' CPU time per request. A report without a Redis (or without a
// chaintable) result shows "-" in those columns.
func WriteTable(w io.Writer, reports []*Report) error {
	rows := [][]string{{"workload", "chaintable ops/s", "redis ops/s", "ratio", "chaintable p99", "redis p99", "errors"}}
	withCPU := false
	for _, r := range reports {
		for _, res := range r.Results {
			withCPU = withCPU || res.ServerCPU != nil
		}
	}
	if withCPU {
		rows[0] = append(rows[0], "chaintable CPU/op", "redis CPU/op")
	}
	for _, r := range reports {
		ct, rd := r.pair()
		ops := func(res *Result) string {
			if res == nil {
				return "-"
			}
			return strconv.FormatFloat(res.OpsPerSec, 'f', 0, 64)
		}
		p99 := func(res *Result) string {
			if res == nil {
				return "-"
			}
			return FormatMicros(res.Latency.P99)
		}
		ratio := "-"
		if ct != nil && rd != nil && rd.OpsPerSec > 0 {
			ratio = strconv.FormatFloat(ct.OpsPerSec/rd.OpsPerSec, 'f', 2, 64) + "x"
		}
		var errs int64
		for _, res := range r.Results {
			errs += res.Errors
		}
		row := []string{r.RowLabel(), ops(ct), ops(rd), ratio, p99(ct), p99(rd), strconv.FormatInt(errs, 10)}
		if withCPU {
			cpu := func(res *Result) string {
				if res == nil || res.ServerCPU == nil {
					return "-"
				}
				return FormatMicros(res.ServerCPU.PerRequestUs)
			}
			row = append(row, cpu(ct), cpu(rd))
		}
		rows = append(rows, row)
	}
	var b strings.Builder
	writeColumns(&b, rows)
	// A target served by several processes, a chain or Redis with its
	// replicas, gets what each spent, in the order they were named.
	for _, r := range reports {
		for _, res := range r.Results {
			if c := res.ServerCPU; c != nil && len(c.Processes) > 1 {
				fmt.Fprintf(&b, "%s, %s CPU per request by process: %s\n", r.RowLabel(), res.System, processList(c))
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
