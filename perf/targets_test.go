package perf

import (
	"strings"
	"testing"
)

// report makes a report of one chaintable run (target "direct" or
// "chain") and, when redisOps is not 0, one Redis run with WAIT wait.
func report(label, target string, ops, p99 float64, redisOps, redisP99 float64, wait int) *Report {
	r := &Report{Tool: "table_perf", Label: label,
		Params:  Params{Workload: "put", Pipeline: 16, Conns: 50, ValueSize: 32, Keys: 100000, Dist: "uniform"},
		Results: []Result{{System: "chaintable", Target: target, OpsPerSec: ops, Latency: Latency{P99: p99}}}}
	if redisOps != 0 {
		r.Results = append(r.Results, Result{System: "redis", Target: "redis", RedisWait: wait, OpsPerSec: redisOps, Latency: Latency{P99: redisP99}})
	}
	return r
}

func TestCheckTargets(t *testing.T) {
	node := report("node", "direct", 700000, 4000, 600000, 2000, 0)
	chain := report("chain", "chain", 400000, 9000, 75000, 13000, 2)
	otherLoad := report("node get", "direct", 800000, 1000, 900000, 2000, 0)
	otherLoad.Params.Workload = "get"
	tests := []struct {
		name    string
		reports []*Report
		want    []string // "target: holds" for every check, in order
	}{
		{"one node", []*Report{node}, []string{"node: throughput vs Redis: true", "node: p99 latency vs Redis: false"}},
		{"chain", []*Report{chain, node}, []string{
			"chain: throughput vs Redis with WAIT 2: true",
			"node: throughput vs Redis: true", "node: p99 latency vs Redis: false",
			"chain: throughput vs one node (node): true"}},
		{"chain below half a node", []*Report{report("chain", "chain", 200000, 9000, 0, 0, 0), node}, []string{
			"node: throughput vs Redis: true", "node: p99 latency vs Redis: false",
			"chain: throughput vs one node (node): false"}},
		{"another load is no match", []*Report{report("chain", "chain", 200000, 9000, 0, 0, 0), otherLoad}, []string{
			"node get: throughput vs Redis: false", "node get: p99 latency vs Redis: true"}},
		{"no Redis, no chain", []*Report{report("alone", "direct", 1, 1, 0, 0, 0)}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, c := range CheckTargets(tt.reports) {
				got = append(got, c.Target+": "+map[bool]string{true: "true", false: "false"}[c.Holds])
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Fatalf("checks:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestWriteTargets(t *testing.T) {
	var b strings.Builder
	if err := WriteTargets(&b, []*Report{report("node", "direct", 700000, 4000, 600000, 2000, 0)}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"node: throughput vs Redis", "≥ 1.00x", "1.17x", "yes", "700000 vs 600000 ops/s",
		"node: p99 latency vs Redis", "≤ 1.00x", "2.00x", "no", "4.00ms vs 2.00ms", "1 of 2 targets hold"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	if err := WriteTargets(&b, []*Report{report("alone", "direct", 1, 1, 0, 0, 0)}); err != nil || !strings.Contains(b.String(), "no target applies") {
		t.Errorf("without Redis: %q, %v", b.String(), err)
	}
}
