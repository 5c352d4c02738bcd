package metrics

import (
	"math"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/chaintable/chaintable/srv"
)

// TestHistograms checks the conversion of power-of-two buckets to
// Prometheus's cumulative ones: each bound counts every value at or
// below it, the count every value, the sum their scaled total.
func TestHistograms(t *testing.T) {
	d := desc("test", "test")
	tests := []struct {
		name    string
		convert func(srv.Pow2Buckets) *dto.Histogram
		values  []uint64
		sum     float64
		want    map[float64]uint64 // cumulative count at some bounds
	}{
		{
			name:    "batch sizes",
			convert: func(b srv.Pow2Buckets) *dto.Histogram { return write(t, batchHistogram(d, b)) },
			values:  []uint64{1, 1, 2, 3, 4, 1023, 1024},
			sum:     2058,
			want:    map[float64]uint64{1: 2, 3: 4, 7: 5, 511: 5, 1023: 6, 2047: 7},
		},
		{
			name:    "durations",
			convert: func(b srv.Pow2Buckets) *dto.Histogram { return write(t, durationHistogram(d, b)) },
			values:  []uint64{500, 1023, 1024, uint64(time.Millisecond), uint64(time.Minute)},
			sum:     (500 + 1023 + 1024 + 1e6 + 60e9) / 1e9,
			// Bounds 2^10 ns, 2^12 ns, ... 2^34 ns, in seconds.
			want: map[float64]uint64{1024e-9: 2, 4096e-9: 3, math.Ldexp(1, 20) / 1e9: 4, math.Ldexp(1, 34) / 1e9: 4},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h srv.Pow2Histogram
			for _, v := range tt.values {
				h.Observe(v)
			}
			got := tt.convert(h.Snapshot())
			if got.GetSampleCount() != uint64(len(tt.values)) || math.Abs(got.GetSampleSum()-tt.sum) > 1e-9*tt.sum {
				t.Errorf("count %d, sum %v; want %d, %v", got.GetSampleCount(), got.GetSampleSum(), len(tt.values), tt.sum)
			}
			bounds := make(map[float64]uint64)
			for _, b := range got.GetBucket() {
				bounds[b.GetUpperBound()] = b.GetCumulativeCount()
			}
			for bound, want := range tt.want {
				if n, ok := bounds[bound]; !ok || n != want {
					t.Errorf("bucket le=%v: %d (present %v), want %d; buckets %v", bound, n, ok, want, bounds)
				}
			}
		})
	}
}

func write(t *testing.T, m interface{ Write(*dto.Metric) error }) *dto.Histogram {
	t.Helper()
	var out dto.Metric
	if err := m.Write(&out); err != nil {
		t.Fatal(err)
	}
	return out.GetHistogram()
}
