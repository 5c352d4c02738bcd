package perf

import (
	"fmt"
	"io"
	"math"
	"strings"
)

// plotPercentiles are the points of every curve WritePlot draws.
var plotPercentiles = []struct {
	name string
	of   func(Latency) float64
}{
	{"p50", func(l Latency) float64 { return l.P50 }},
	{"p90", func(l Latency) float64 { return l.P90 }},
	{"p99", func(l Latency) float64 { return l.P99 }},
	{"p99.9", func(l Latency) float64 { return l.P999 }},
	{"max", func(l Latency) float64 { return l.Max }},
}

// plotColors tell the curves apart; chaintable is drawn solid and Redis
// dashed, so a pair from one report shares a color.
var plotColors = []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f"}

// WritePlot draws the latency percentiles of the reports' results as an
// SVG chart: one curve per result, percentiles along x, latency on a
// logarithmic y axis.
func WritePlot(w io.Writer, reports []*Report) error {
	const (
		left, top, base = 70, 40, 50
		plotW, plotH    = 500, 330
		height          = top + plotH + base
	)
	lo, hi := math.Inf(1), math.Inf(-1)
	longest := 0
	for _, r := range reports {
		for _, res := range r.Results {
			longest = max(longest, len(curveLabel(r, &res)))
			for _, p := range plotPercentiles {
				if v := p.of(res.Latency); v > 0 {
					lo, hi = min(lo, v), max(hi, v)
				}
			}
		}
	}
	if math.IsInf(lo, 1) {
		return fmt.Errorf("perf: no latencies to plot")
	}
	// Whole decades of microseconds around the data.
	lo, hi = math.Pow(10, math.Floor(math.Log10(lo))), math.Pow(10, math.Ceil(math.Log10(hi)))
	if hi <= lo {
		hi = lo * 10
	}
	y := func(us float64) float64 {
		return top + plotH*(1-(math.Log10(us)-math.Log10(lo))/(math.Log10(hi)-math.Log10(lo)))
	}
	x := func(i int) float64 { return left + float64(i)*plotW/float64(len(plotPercentiles)-1) }

	width := left + plotW + 60 + 7*longest // room for the legend
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", width, height)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", width, height)
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="14">Latency percentiles (log scale)</text>`+"\n", left)
	for d := lo; d <= hi*1.0001; d *= 10 {
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", left, left+plotW, y(d), y(d))
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", left-6, y(d)+4, FormatMicros(d))
	}
	for i, p := range plotPercentiles {
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x(i), top+plotH+20, p.name)
	}
	line := 0
	for ri, r := range reports {
		color := plotColors[ri%len(plotColors)]
		for _, res := range r.Results {
			var pts []string
			for i, p := range plotPercentiles {
				if v := p.of(res.Latency); v > 0 {
					pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(i), y(v)))
				}
			}
			dash := ""
			if res.System == "redis" {
				dash = ` stroke-dasharray="6,4"`
			}
			label := escapeXML(curveLabel(r, &res))
			fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2"%s points="%s"><title>%s</title></polyline>`+"\n",
				color, dash, strings.Join(pts, " "), label)
			ly := top + 10 + line*18
			fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="%s" stroke-width="2"%s/>`+"\n",
				left+plotW+20, left+plotW+45, ly, ly, color, dash)
			fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", left+plotW+52, ly+4, label)
			line++
		}
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// curveLabel names the curve of one result of r.
func curveLabel(r *Report, res *Result) string { return r.RowLabel() + ": " + res.System }

func escapeXML(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;").Replace(s)
}
