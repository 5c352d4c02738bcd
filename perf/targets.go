package perf

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The project's performance targets, as ratios of measured figures.
const (
	// One node against one Redis: throughput at least Redis's, p99
	// latency no worse.
	targetThroughputVsRedis = 1.0
	targetP99VsRedis        = 1.0
	// A chain's writes against one node's, same workload and pipelining.
	targetChainVsNode = 0.5
)

// Check is one target judged on measured reports.
type Check struct {
	Target   string  // what is promised, on which run
	Ratio    float64 // the measured ratio the target is about
	Holds    bool    // whether the measurement meets the target
	Detail   string  // the figures the ratio comes from
	Required string  // the ratio the target asks for, as "≥ 1.00x"
}

// CheckTargets judges the project's performance targets on reports: for
// each report of one table_server against one Redis, throughput and p99
// latency against Redis's; for each chain against Redis with WAIT, its
// throughput against Redis's; and for each chain with a one-node report of
// the same workload, pipelining, value size and key space, its throughput
// against the node's. Reports that fit no target are left out.
func CheckTargets(reports []*Report) []Check {
	var checks []Check
	for _, r := range reports {
		ct, rd := r.pair()
		if ct == nil || rd == nil || rd.OpsPerSec == 0 || rd.Latency.P99 == 0 {
			continue
		}
		throughput := ct.OpsPerSec / rd.OpsPerSec
		ops := fmt.Sprintf("%.0f vs %.0f ops/s", ct.OpsPerSec, rd.OpsPerSec)
		switch {
		case ct.Target == "direct" && rd.RedisWait == 0:
			checks = append(checks,
				atLeast(r.RowLabel()+": throughput vs Redis", throughput, targetThroughputVsRedis, ops),
				atMost(r.RowLabel()+": p99 latency vs Redis", ct.Latency.P99/rd.Latency.P99, targetP99VsRedis,
					fmt.Sprintf("%s vs %s", FormatMicros(ct.Latency.P99), FormatMicros(rd.Latency.P99))))
		case ct.Target == "chain" && rd.RedisWait > 0:
			checks = append(checks, atLeast(fmt.Sprintf("%s: throughput vs Redis with WAIT %d", r.RowLabel(), rd.RedisWait),
				throughput, targetThroughputVsRedis, ops))
		}
	}
	for _, chain := range reports {
		ct, _ := chain.pair()
		if ct == nil || ct.Target != "chain" {
			continue
		}
		for _, node := range reports {
			nt, _ := node.pair()
			if nt == nil || nt.Target != "direct" || nt.OpsPerSec == 0 || !sameLoad(chain.Params, node.Params) {
				continue
			}
			checks = append(checks, atLeast(fmt.Sprintf("%s: throughput vs one node (%s)", chain.RowLabel(), node.RowLabel()),
				ct.OpsPerSec/nt.OpsPerSec, targetChainVsNode, fmt.Sprintf("%.0f vs %.0f ops/s", ct.OpsPerSec, nt.OpsPerSec)))
			break
		}
	}
	return checks
}

// pair returns the report's first chaintable result and first Redis
// result, either nil when missing.
func (r *Report) pair() (ct, rd *Result) {
	for i := range r.Results {
		switch res := &r.Results[i]; {
		case res.System == "chaintable" && ct == nil:
			ct = res
		case res.System == "redis" && rd == nil:
			rd = res
		}
	}
	return ct, rd
}

// sameLoad reports whether two runs put the same load on their targets.
func sameLoad(a, b Params) bool {
	return a.Workload == b.Workload && a.Pipeline == b.Pipeline && a.Conns == b.Conns &&
		a.ValueSize == b.ValueSize && a.Keys == b.Keys && a.Dist == b.Dist
}

func atLeast(target string, ratio, want float64, detail string) Check {
	return Check{Target: target, Ratio: ratio, Holds: ratio >= want, Detail: detail, Required: fmt.Sprintf("≥ %.2fx", want)}
}

func atMost(target string, ratio, want float64, detail string) Check {
	return Check{Target: target, Ratio: ratio, Holds: ratio <= want, Detail: detail, Required: fmt.Sprintf("≤ %.2fx", want)}
}

// WriteTargets writes the checks of CheckTargets as a table, then how many
// hold.
func WriteTargets(w io.Writer, reports []*Report) error {
	checks := CheckTargets(reports)
	if len(checks) == 0 {
		_, err := io.WriteString(w, "no target applies to these reports\n")
		return err
	}
	rows := [][]string{{"target", "required", "measured", "holds", "from"}}
	held := 0
	for _, c := range checks {
		verdict := "no"
		if c.Holds {
			verdict = "yes"
			held++
		}
		rows = append(rows, []string{c.Target, c.Required, strconv.FormatFloat(c.Ratio, 'f', 2, 64) + "x", verdict, c.Detail})
	}
	var b strings.Builder
	writeColumns(&b, rows)
	fmt.Fprintf(&b, "%d of %d targets hold\n", held, len(checks))
	_, err := io.WriteString(w, b.String())
	return err
}

// writeColumns writes rows as aligned columns: the first padded on the
// right, the others on the left.
func writeColumns(b *strings.Builder, rows [][]string) {
	widths := make([]int, len(rows[0]))
	for _, row := range rows {
		for i, c := range row {
			widths[i] = max(widths[i], utf8.RuneCountInString(c))
		}
	}
	for _, row := range rows {
		for i, c := range row {
			pad := strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c))
			if i == 0 {
				b.WriteString(c + pad)
			} else {
				b.WriteString("  " + pad + c)
			}
		}
		b.WriteString("\n")
	}
}
