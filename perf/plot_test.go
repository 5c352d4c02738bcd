package perf

import (
	"encoding/xml"
	"strings"
	"testing"
)

func TestWritePlot(t *testing.T) {
	reports := []*Report{{
		Tool:  "table_perf",
		Label: "put <1 node> & more",
		Results: []Result{
			{System: "chaintable", Latency: Latency{P50: 100, P90: 200, P99: 900, P999: 2000, Max: 15000}},
			{System: "redis", Latency: Latency{P50: 120, P90: 180, P99: 700, P999: 1500, Max: 9000}},
		},
	}}
	var b strings.Builder
	if err := WritePlot(&b, reports); err != nil {
		t.Fatal(err)
	}
	svg := b.String()
	// Well-formed XML, with the label escaped.
	var doc struct{}
	if err := xml.Unmarshal([]byte(svg), &doc); err != nil {
		t.Fatalf("not well-formed: %v", err)
	}
	for _, want := range []string{"put &lt;1 node&gt; &amp; more: chaintable", "stroke-dasharray", ">p99.9<", ">10.0ms<", ">100µs<"} {
		if !strings.Contains(svg, want) {
			t.Errorf("the plot lacks %q", want)
		}
	}
	if got := strings.Count(svg, "<polyline"); got != 2 {
		t.Errorf("%d curves, want 2", got)
	}
	if err := WritePlot(&b, []*Report{{Tool: "table_perf", Results: []Result{{System: "redis"}}}}); err == nil {
		t.Error("a plot of no latencies succeeded")
	}
}
