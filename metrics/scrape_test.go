package metrics_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// families is one scrape, parsed by Prometheus's own text parser.
type families map[string]*dto.MetricFamily

// scrape fetches and parses http://addr/metrics.
func scrape(t testing.TB, addr string) families {
	t.Helper()
	f, err := fetch(addr)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// fetch is scrape for goroutines other than the test's.
func fetch(addr string) (families, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %v", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: %s", addr, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: parse: %v", addr, err)
	}
	return fams, nil
}

// value returns the value of the sample of family name whose labels are
// the name=value pairs given (it may have others), and whether there is
// one: a counter's or gauge's value, a histogram's count.
func (f families) value(name string, labels ...string) (float64, bool) {
	fam := f[name]
	if fam == nil {
		return 0, false
	}
next:
	for _, m := range fam.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

// must is value, failing the test when there is no such sample.
func (f families) must(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	v, ok := f.value(name, labels...)
	if !ok {
		t.Fatalf("no sample %s%v in the scrape", name, labels)
	}
	return v
}

// health returns the status code and body of http://addr/healthz.
func health(t testing.TB, addr string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatalf("healthz %s: %v", addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("healthz %s: %v", addr, err)
	}
	return resp.StatusCode, strings.TrimSpace(string(body))
}

// checkConventions fails the test for a chaintable_ metric without help
// text, a counter not named _total or another metric that is, and a
// duration histogram not in _seconds.
func checkConventions(t testing.TB, f families) {
	t.Helper()
	n := 0
	for name, fam := range f {
		if !strings.HasPrefix(name, "chaintable_") {
			continue
		}
		n++
		if fam.GetHelp() == "" {
			t.Errorf("%s has no help text", name)
		}
		if total := strings.HasSuffix(name, "_total"); total != (fam.GetType() == dto.MetricType_COUNTER) {
			t.Errorf("%s is a %v: only counters, and every counter, end in _total", name, fam.GetType())
		}
		if strings.Contains(name, "duration") && !strings.HasSuffix(name, "_seconds") {
			t.Errorf("%s measures time but is not in _seconds", name)
		}
	}
	if n == 0 {
		t.Error("no chaintable_ metric in the scrape")
	}
}
