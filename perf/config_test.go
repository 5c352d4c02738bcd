package perf

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

func TestParseWorkload(t *testing.T) {
	tests := []struct {
		in      string
		want    Workload
		wantErr string
	}{
		{in: "put", want: Workload{Op: OpPut}},
		{in: "get", want: Workload{Op: OpGet}},
		{in: "del", want: Workload{Op: OpDel}},
		{in: "mix:0.9", want: Workload{Mix: true, ReadFraction: 0.9}},
		{in: "mix:0", want: Workload{Mix: true, ReadFraction: 0}},
		{in: "mix:1", want: Workload{Mix: true, ReadFraction: 1}},
		{in: "mix:.5", want: Workload{Mix: true, ReadFraction: 0.5}},
		{in: "mix:1.5", wantErr: "from 0 to 1"},
		{in: "mix:-0.1", wantErr: "from 0 to 1"},
		{in: "mix:NaN", wantErr: "from 0 to 1"},
		{in: "mix:", wantErr: "from 0 to 1"},
		{in: "mix", wantErr: "is not put, get, del"},
		{in: "PUT", wantErr: "is not put, get, del"},
		{in: "", wantErr: "is not put, get, del"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseWorkload(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseWorkload(%q) error %v, want one containing %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseWorkload(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			}
			if back, err := ParseWorkload(got.String()); err != nil || back != got {
				t.Errorf("String() %q does not parse back: %+v, %v", got.String(), back, err)
			}
		})
	}
}

func TestWorkloadMix(t *testing.T) {
	const draws = 200000
	tests := []struct {
		workload          string
		puts, gets, dels  float64 // expected fractions
		hasReads, hasWrit bool
	}{
		{"put", 1, 0, 0, false, true},
		{"get", 0, 1, 0, true, false},
		{"del", 0, 0, 1, false, true},
		{"mix:0.9", 0.1, 0.9, 0, true, true},
		{"mix:0.5", 0.5, 0.5, 0, true, true},
		{"mix:0", 1, 0, 0, false, true},
		{"mix:1", 0, 1, 0, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.workload, func(t *testing.T) {
			w, err := ParseWorkload(tt.workload)
			if err != nil {
				t.Fatal(err)
			}
			if w.HasReads() != tt.hasReads || w.HasWrites() != tt.hasWrit {
				t.Errorf("HasReads %v HasWrites %v, want %v %v", w.HasReads(), w.HasWrites(), tt.hasReads, tt.hasWrit)
			}
			rng := rand.New(rand.NewPCG(1, 2))
			count := map[Op]float64{}
			for range draws {
				count[w.Pick(rng.Float64())]++
			}
			for op, want := range map[Op]float64{OpPut: tt.puts, OpGet: tt.gets, OpDel: tt.dels} {
				got := count[op] / draws
				// 5 standard deviations of a binomial proportion.
				if tol := 5*math.Sqrt(want*(1-want)/draws) + 1e-9; math.Abs(got-want) > tol {
					t.Errorf("%v: fraction %.4f, want %.4f ± %.4f", op, got, want, tol)
				}
			}
		})
	}
}

func TestParseDist(t *testing.T) {
	for in, want := range map[string]Dist{"uniform": Uniform, "zipf": Zipf} {
		got, err := ParseDist(in)
		if err != nil || got != want || got.String() != in {
			t.Errorf("ParseDist(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParseDist("zipfian"); err == nil {
		t.Error("ParseDist(zipfian) succeeded")
	}
}

func TestValidate(t *testing.T) {
	ok := Config{Target: Target{Kind: Direct, Addr: "127.0.0.1:1"}}
	tests := []struct {
		name    string
		edit    func(*Config)
		wantErr string
	}{
		{"defaults", func(*Config) {}, ""},
		{"no address", func(c *Config) { c.Target.Addr = "" }, "no target address"},
		{"bad address", func(c *Config) { c.Target.Addr = "localhost" }, `chaintable address "localhost"`},
		{"bad redis address", func(c *Config) { c.Target = Target{Kind: Redis, Addr: "x"} }, "redis address"},
		{"chain list", func(c *Config) { c.Target = Target{Kind: Chain, Addr: "a:1,b:2"} }, ""},
		{"bad chain", func(c *Config) { c.Target = Target{Kind: Chain, Addr: "a:1,b"} }, `ZooKeeper address "b"`},
		{"negative conns", func(c *Config) { c.Conns = -1 }, "connections"},
		{"pipeline too deep", func(c *Config) { c.Pipeline = MaxPipeline + 1 }, "pipeline"},
		{"negative requests", func(c *Config) { c.Requests = -5 }, "requests"},
		{"negative duration", func(c *Config) { c.Duration = -time.Second }, "duration"},
		{"value too big", func(c *Config) { c.ValueSize = MaxValueSize + 1 }, "value size"},
		{"empty values", func(c *Config) { c.ValueSize = 0 }, ""},
		{"no keys", func(c *Config) { c.Keys = -1 }, "key space"},
		{"zipf s", func(c *Config) { c.Dist, c.ZipfS = Zipf, 1 }, "greater than 1"},
		{"zipf default s", func(c *Config) { c.Dist = Zipf }, ""},
		{"wait on table", func(c *Config) { c.Target.RedisWait = 1 }, "Redis target only"},
		{"wait on redis", func(c *Config) { c.Target = Target{Kind: Redis, Addr: "h:1", RedisWait: 2} }, ""},
		{"members on direct", func(c *Config) { c.Target.ChainMembers = 3 }, "chain target only"},
		{"bad mix", func(c *Config) { c.Workload = Workload{Mix: true, ReadFraction: 2} }, "read fraction"},
		{"bad op", func(c *Config) { c.Workload = Workload{Op: 9} }, "bad workload"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.edit(&c)
			err := c.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestStrictMisses(t *testing.T) {
	tests := []struct {
		workload string
		preload  bool
		want     bool
	}{
		{"get", false, false},
		{"get", true, true},
		{"mix:0.9", true, true},
		{"del", true, false},
		{"del", false, false},
	}
	for _, tt := range tests {
		w, _ := ParseWorkload(tt.workload)
		if got := (Config{Workload: w, Preload: tt.preload}).strictMisses(); got != tt.want {
			t.Errorf("%s preload=%v: strictMisses %v, want %v", tt.workload, tt.preload, got, tt.want)
		}
	}
}
