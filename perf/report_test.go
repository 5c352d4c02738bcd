package perf

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestFormatMicros(t *testing.T) {
	for us, want := range map[float64]string{
		0:       "0.00µs",
		8.123:   "8.12µs",
		87.24:   "87.2µs",
		999.4:   "999µs",
		1250:    "1.25ms",
		45600:   "45.6ms",
		2000000: "2.00s",
	} {
		if got := FormatMicros(us); got != want {
			t.Errorf("FormatMicros(%v) = %q, want %q", us, got, want)
		}
	}
}

func sampleReport() *Report {
	cfg := Config{Target: Target{Kind: Direct, Addr: "127.0.0.1:1"}, Pipeline: 16, Duration: 5 * time.Second, ValueSize: 32, Preload: true}
	ct := Result{System: "chaintable", Target: "direct", Addr: "127.0.0.1:1", Requests: 1000, OK: 1000, OpsPerSec: 200000,
		Latency: Latency{P50: 100, P90: 200, P99: 1500, P999: 3000, Max: 9000, Mean: 120}}
	rd := Result{System: "redis", Target: "redis", Addr: "127.0.0.1:2", Requests: 900, OK: 899, Errors: 1,
		ErrorReasons: map[string]int64{"put: redis error OOM": 1}, OpsPerSec: 100000, RedisWait: 2,
		Latency: Latency{P50: 50, P90: 60, P99: 3000, P999: 4000, Max: 5000, Mean: 55}}
	ct.ServerCPU = newServerCPU([]int{11, 12}, make([]time.Duration, 2), []time.Duration{3 * time.Millisecond, time.Millisecond}, 1000)
	r := &Report{Tool: "table_perf", Params: ParamsOf(cfg), Results: []Result{ct, rd}}
	r.Ratio = Compare(&r.Results[0], &r.Results[1])
	return r
}

func TestReportJSONRoundTrip(t *testing.T) {
	r := sampleReport()
	var buf bytes.Buffer
	if err := r.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"workload": "put"`, `"pipeline": 16`, `"duration_s": 5`, `"p99_9": 3000`, `"throughput": 2`, `"redis_wait": 2`, `"per_request_us": 4`} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("JSON lacks %s:\n%s", want, buf.String())
		}
	}
	back, err := ReadReport(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if back.Params != r.Params || len(back.Results) != 2 || back.Results[1].ErrorReasons["put: redis error OOM"] != 1 || *back.Ratio != *r.Ratio {
		t.Errorf("round trip: %+v", back)
	}
	if _, err := ReadReport(strings.NewReader(`{"tool":"other"}`)); err == nil {
		t.Error("ReadReport accepted a foreign object")
	}
}

func TestWriteText(t *testing.T) {
	var buf bytes.Buffer
	if err := sampleReport().WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"put, 50 connections x 16 in flight, 32-byte values, 100000 keys uniform, preloaded",
		"chaintable 127.0.0.1:1\n",
		"redis 127.0.0.1:2, WAIT 2 0 after every write",
		"200000 ops/s",
		"899 ok, 0 misses, 1 errors",
		"errors     put: redis error OOM (1)",
		"p50 100µs  p90 200µs  p99 1.50ms  p99.9 3.00ms  max 9.00ms",
		"chaintable / redis: throughput 2.00x, p50 latency 2.00x, p99 latency 0.50x",
		"server CPU 4.00µs per request (pid 11: 3.00µs, pid 12: 1.00µs)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("text lacks %q:\n%s", want, out)
		}
	}
}

func TestWriteTable(t *testing.T) {
	a := sampleReport()
	b := sampleReport()
	b.Label = "chain x3 put -P 16"
	b.Results = b.Results[:1]
	var buf bytes.Buffer
	if err := WriteTable(&buf, []*Report{a, b}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(buf.String(), "\n"), "\n")
	if len(lines) != 5 {
		t.Fatalf("table:\n%s", buf.String())
	}
	// The chaintable targets have two processes each: their shares follow
	// the table.
	for i, want := range []string{
		"put -P 16 WAIT 2, chaintable CPU per request by process: pid 11: 3.00µs, pid 12: 1.00µs",
		"chain x3 put -P 16, chaintable CPU per request by process: pid 11: 3.00µs, pid 12: 1.00µs",
	} {
		if lines[3+i] != want {
			t.Errorf("line %d = %q, want %q", 3+i, lines[3+i], want)
		}
	}
	lines = lines[:3]
	for i, want := range [][]string{
		{"workload", "chaintable ops/s", "redis ops/s", "ratio", "chaintable p99", "redis p99", "errors", "chaintable CPU/op", "redis CPU/op"},
		{"put -P 16 WAIT 2", "200000", "100000", "2.00x", "1.50ms", "3.00ms", "1", "4.00µs", "-"},
		{"chain x3 put -P 16", "200000", "-", "-", "1.50ms", "-", "0", "4.00µs", "-"},
	} {
		for _, cell := range want {
			if !strings.Contains(lines[i], cell) {
				t.Errorf("line %d %q lacks %q", i, lines[i], cell)
			}
		}
	}
	// Columns line up: every line has the same width.
	for _, l := range lines[1:] {
		if len([]rune(l)) != len([]rune(lines[0])) {
			t.Errorf("ragged table:\n%s", buf.String())
			break
		}
	}
}

func TestResultAdd(t *testing.T) {
	round := func(requests int64, elapsed time.Duration, latency time.Duration, reason string) *Result {
		h := newHist(&Config{Timeout: time.Second})
		for range requests {
			if err := h.RecordValue(latency.Nanoseconds()); err != nil {
				t.Fatal(err)
			}
		}
		r := &Result{Requests: requests, OK: requests - 1, Errors: 1, ErrorReasons: map[string]int64{reason: 1},
			Elapsed: elapsed, ElapsedSec: elapsed.Seconds(), OpsPerSec: float64(requests) / elapsed.Seconds(),
			Hist: h, Latency: latencyOf(h), Preload: &Preload{Keys: 7}}
		return r
	}
	r := round(100, time.Second, time.Millisecond, "timeout")
	r.Add(round(300, time.Second, 3*time.Millisecond, "timeout"))
	r.Add(round(100, 2*time.Second, 10*time.Millisecond, "refused"))
	if r.Requests != 500 || r.OK != 497 || r.Errors != 3 || r.ErrorReasons["timeout"] != 2 || r.ErrorReasons["refused"] != 1 {
		t.Errorf("counts: %+v", r)
	}
	if r.ElapsedSec != 4 || r.OpsPerSec != 125 {
		t.Errorf("throughput over 4s: %v ops/s in %vs, want 125 in 4", r.OpsPerSec, r.ElapsedSec)
	}
	// 100 requests at 1ms, 300 at 3ms, 100 at 10ms: the median is 3ms and
	// the 99th percentile 10ms, as if all had been one run.
	if p50, p99 := r.Latency.P50, r.Latency.P99; p50 < 2990 || p50 > 3010 || p99 < 9990 || p99 > 10010 {
		t.Errorf("latency p50 %vµs, p99 %vµs; want about 3000 and 10000", p50, p99)
	}
	if r.Hist.TotalCount() != 500 || r.Preload == nil || r.Preload.Keys != 7 {
		t.Errorf("histogram of %d requests, preload %+v", r.Hist.TotalCount(), r.Preload)
	}
}

func TestResultAddServerCPU(t *testing.T) {
	round := func(requests int64, head, tail time.Duration) *Result {
		return &Result{Requests: requests, ServerCPU: newServerCPU([]int{7, 8}, make([]time.Duration, 2), []time.Duration{head, tail}, requests)}
	}
	r := round(1000, 4*time.Millisecond, time.Millisecond)
	r.Add(round(3000, 8*time.Millisecond, 3*time.Millisecond))
	c := r.ServerCPU
	// 12ms and 4ms over 4000 requests.
	if len(c.Processes) != 2 || c.Processes[0].PerRequestUs != 3 || c.Processes[1].PerRequestUs != 1 || c.PerRequestUs != 4 || c.Seconds != 0.016 {
		t.Errorf("merged server CPU %+v", c)
	}
	r.Add(&Result{Requests: 10})
	if r.ServerCPU != nil {
		t.Errorf("a round without the measurement kept a partial sum: %+v", r.ServerCPU)
	}
}

func TestParseStatCPU(t *testing.T) {
	tail := " S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 9 0 100 2000 300"
	for _, tt := range []struct {
		name, stat string
		want       time.Duration
		err        bool
	}{
		{"plain", "42 (table_server)" + tail, 3 * time.Second, false},
		{"name with spaces and parentheses", "42 (a) (b c)" + tail, 3 * time.Second, false},
		{"no name", "42 table_server" + tail, 0, true},
		{"too short", "42 (x) S 1 2 3", 0, true},
		{"not a number", "42 (x) S 1 2 3 4 5 6 7 8 9 10 x 50 0", 0, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatCPU([]byte(tt.stat))
			if (err != nil) != tt.err || got != tt.want {
				t.Errorf("parseStatCPU = %v, %v; want %v, error %v", got, err, tt.want, tt.err)
			}
		})
	}
}
