package cluster

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// ReportEnv is the environment variable that, set to a path, makes
// Report.Publish write each report there as markdown as well: the first
// report of a test binary replaces the file, later ones are appended.
const ReportEnv = "CHAINTABLE_FAULT_REPORT"

// Recorder divides the run of a Load into phases, one per fault injected,
// and sums each up in a Report: what the clients saw while the fault was
// injected and the chain recovered, and whether the writes of the phase
// survived and its history is linearizable. Each phase moves the clients
// to keys of their own (Load.Rekey), so that its operations form a history
// that is checked on its own; those keys are still read at the end, so a
// write that a later fault loses counts against the phase that wrote it.
//
// A Recorder is used from the test's goroutine.
type Recorder struct {
	l       *Load
	phases  []*Phase
	nextKey int // index in l.usedKeys() of the next phase's first key
}

// Phase is a stretch of a run, from the injection of one fault until the
// next begins.
type Phase struct {
	Name string
	// Start and End are times of the History's clock; End is zero while
	// the phase is under way.
	Start, End int64
	// Recovery is how long after Start the chain was whole and serving
	// again, as the test reported with Recovered; zero if it did not.
	Recovery time.Duration
	// Notes are the test's observations (Notef).
	Notes []string

	r                    *Recorder
	firstKey, lastKey    int // the phase's keys are l.usedKeys()[firstKey:lastKey]
	waitsAtStart, waited int64
}

// NewRecorder returns a Recorder for l, before its first phase.
func NewRecorder(l *Load) *Recorder { return &Recorder{l: l} }

// Begin ends the phase under way, if any, and starts one named name, with
// fresh keys for the clients.
func (r *Recorder) Begin(name string) *Phase {
	r.End()
	p := &Phase{Name: name, r: r, Start: r.l.history.Now(), firstKey: r.nextKey, waitsAtStart: r.l.Waits()}
	r.phases = append(r.phases, p)
	r.l.Rekey(fmt.Sprintf("p%d-", len(r.phases)))
	return p
}

// End ends the phase under way, if any. Call it before Load.Stop, so that
// the last phase does not count the stop.
func (r *Recorder) End() {
	if len(r.phases) == 0 {
		return
	}
	p := r.phases[len(r.phases)-1]
	if p.End != 0 {
		return
	}
	p.End = r.l.history.Now()
	p.waited = r.l.Waits() - p.waitsAtStart
	r.nextKey = len(r.l.usedKeys())
	p.lastKey = r.nextKey
}

// Phases returns the phases so far.
func (r *Recorder) Phases() []*Phase { return slices.Clone(r.phases) }

// Recovered records that the chain is whole and serves again, now.
func (p *Phase) Recovered() {
	p.Recovery = time.Duration(p.r.l.history.Now() - p.Start)
}

// Notef adds an observation to the phase's notes in the report.
func (p *Phase) Notef(format string, args ...any) {
	p.Notes = append(p.Notes, fmt.Sprintf(format, args...))
}

// Stats sums up the operations the Load's clients invoked during the
// phase, so far if it is under way.
func (p *Phase) Stats() Stats {
	end := p.End
	if end == 0 {
		end = p.r.l.history.Now()
	}
	return p.r.l.history.Stats(p.Start, end)
}

// Row is one line of a Report: one phase, or the whole run.
type Row struct {
	Name     string
	Duration time.Duration
	Stats
	// Waited is how many requests had to wait for the chain and were
	// retried by the client library: not errors, but a sign of the fault.
	Waited int64
	// Recovery is the phase's; zero when unknown, and for the whole run.
	Recovery time.Duration
	// Lost is how many of the phase's keys ended with a value that no
	// write explains: an acknowledged write of each was lost.
	Lost int
	// Linearizable is porcupine's verdict on the operations on the
	// phase's keys.
	Linearizable porcupine.CheckResult
	Notes        []string
}

// Report sums up a run phase by phase; Recorder.Report makes one.
type Report struct {
	Title   string
	Started time.Time
	Rows    []Row
	Total   Row
	// Header lines describe the run: the seed, the cluster, the profile.
	Header []string
}

// Report ends the phase under way and checks the whole run: final holds
// the values read at the end by Load.ReadFinal. It fails the test for
// every key whose acknowledged writes were lost and for every phase whose
// history is not linearizable, with porcupine's visualization in dir, and
// returns the Report, which the caller publishes.
func (r *Recorder) Report(tb testing.TB, final map[string]string, dir string) *Report {
	tb.Helper()
	r.End()
	h := r.l.history
	ops := h.Ops()
	used := r.l.usedKeys()
	lost := LostWrites(h, final)
	reportLost(tb, h, lost)

	rep := &Report{Title: tb.Name(), Started: h.start}
	total := r.l.Stats()
	rep.Total = Row{Name: "whole run", Duration: time.Duration(r.l.stopped - r.l.started), Stats: total,
		Waited: r.l.Waits(), Lost: len(lost), Linearizable: porcupine.Ok}
	for i, p := range r.phases {
		keys := make(map[string]bool)
		for _, k := range used[p.firstKey:p.lastKey] {
			keys[k] = true
		}
		var phaseOps []Op
		for _, op := range ops {
			if keys[op.Input.Key] {
				phaseOps = append(phaseOps, op)
			}
		}
		row := Row{Name: p.Name, Duration: time.Duration(p.End - p.Start), Stats: h.Stats(p.Start, p.End),
			Waited: p.waited, Recovery: p.Recovery, Notes: p.Notes}
		for _, l := range lost {
			if keys[l.Key] {
				row.Lost++
			}
		}
		file := fmt.Sprintf("%s-%02d-%s-linearizability.html", sanitize(tb.Name()), i+1, sanitize(p.Name))
		row.Linearizable = checkLinearizable(tb, phaseOps, dir, file, fmt.Sprintf("phase %d, %s", i+1, p.Name))
		rep.Total.Linearizable = worse(rep.Total.Linearizable, row.Linearizable)
		rep.Rows = append(rep.Rows, row)
	}
	return rep
}

// worse returns the worse of two verdicts: Illegal, then Unknown, then Ok.
func worse(a, b porcupine.CheckResult) porcupine.CheckResult {
	rank := map[porcupine.CheckResult]int{porcupine.Ok: 0, porcupine.Unknown: 1, porcupine.Illegal: 2}
	if rank[b] > rank[a] {
		return b
	}
	return a
}

// verdict renders a porcupine result as the report's yes/no.
func verdict(r porcupine.CheckResult) string {
	switch r {
	case porcupine.Ok:
		return "yes"
	case porcupine.Illegal:
		return "**NO**"
	}
	return "unknown (check timed out)"
}

// Markdown renders the report as a markdown section with one table row per
// phase and a last one for the whole run, then the phases' notes.
func (rep *Report) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "### %s, %s\n\n", rep.Title, rep.Started.Format("2006-01-02 15:04:05"))
	for _, h := range rep.Header {
		fmt.Fprintf(&b, "- %s\n", h)
	}
	if len(rep.Header) > 0 {
		b.WriteString("\n")
	}
	b.WriteString("| # | fault | duration | ops | errors | waited | longest unavailability | reads / writes | recovered in | lost | linearizable |\n")
	b.WriteString("| --: | --- | --: | --: | --: | --: | --: | --: | --: | --: | --- |\n")
	for i, row := range rep.Rows {
		writeRow(&b, fmt.Sprint(i+1), row)
	}
	writeRow(&b, "", rep.Total)
	var notes []string
	for i, row := range rep.Rows {
		for _, n := range row.Notes {
			notes = append(notes, fmt.Sprintf("- %d, %s: %s", i+1, row.Name, n))
		}
	}
	if len(notes) > 0 {
		b.WriteString("\n" + strings.Join(notes, "\n") + "\n")
	}
	return b.String()
}

func writeRow(b *strings.Builder, n string, row Row) {
	rec := "–"
	if row.Recovery > 0 {
		rec = roundDuration(row.Recovery)
	}
	name := row.Name
	if n == "" {
		name = "**" + name + "**"
	}
	fmt.Fprintf(b, "| %s | %s | %s | %d | %d | %d | %s | %s / %s | %s | %d | %s |\n",
		n, name, roundDuration(row.Duration), row.Ops, row.Indefinite, row.Waited,
		roundDuration(row.LongestGap), roundDuration(row.ReadGap), roundDuration(row.WriteGap),
		rec, row.Lost, verdict(row.Linearizable))
}

// roundDuration renders d to the millisecond below 10s, to the tenth of a
// second above.
func roundDuration(d time.Duration) string {
	if d >= 10*time.Second {
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Millisecond).String()
}

// Summary is the report's verdict in one line: operations, errors, the
// longest unavailability, lost writes, linearizability.
func (rep *Report) Summary() string {
	t := rep.Total
	return fmt.Sprintf("%d operations, %d errors, longest unavailability %s (reads %s, writes %s), %d acknowledged writes lost, linearizable: %s",
		t.Ops, t.Indefinite, roundDuration(t.LongestGap), roundDuration(t.ReadGap), roundDuration(t.WriteGap),
		t.Lost, strings.Trim(verdict(t.Linearizable), "*"))
}

var reportFile struct {
	mu      sync.Mutex
	written bool
}

// Publish logs the report and, when ReportEnv names a file, writes it
// there too (replacing the file the first time in this process, appending
// afterwards). A file that cannot be written fails the test.
func (rep *Report) Publish(tb testing.TB) {
	tb.Helper()
	md := rep.Markdown()
	tb.Logf("fault report:\n%s\n%s", md, rep.Summary())
	path := os.Getenv(ReportEnv)
	if path == "" {
		return
	}
	reportFile.mu.Lock()
	defer reportFile.mu.Unlock()
	flags := os.O_CREATE | os.O_WRONLY | os.O_APPEND
	if !reportFile.written {
		flags |= os.O_TRUNC
	}
	f, err := os.OpenFile(path, flags, 0o644)
	if err == nil {
		_, err = fmt.Fprintf(f, "%s\n%s\n\n", md, rep.Summary())
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		tb.Errorf("cluster: write the report to %s=%s: %v", ReportEnv, path, err)
		return
	}
	reportFile.written = true
}
