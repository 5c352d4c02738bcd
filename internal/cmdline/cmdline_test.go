package cmdline

import (
	"flag"
	"io"
	"slices"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		args     []string
		operands []string
		v        bool
		n        int
	}{
		{nil, nil, false, 0},
		{[]string{"a", "b"}, []string{"a", "b"}, false, 0},
		{[]string{"-v", "a"}, []string{"a"}, true, 0},
		{[]string{"a", "-v", "b", "-n", "3"}, []string{"a", "b"}, true, 3},
		{[]string{"a", "--", "-v"}, []string{"a", "-v"}, false, 0},
	}
	for _, tt := range tests {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		v := fs.Bool("v", false, "")
		n := fs.Int("n", 0, "")
		got, err := Parse(fs, tt.args)
		if err != nil || !slices.Equal(got, tt.operands) || *v != tt.v || *n != tt.n {
			t.Errorf("Parse(%q) = %q, %v (v=%v n=%d)", tt.args, got, err, *v, *n)
		}
	}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if _, err := Parse(fs, []string{"a", "-nope"}); err == nil {
		t.Error("an unknown flag after an operand was accepted")
	}
}

func TestCheckZooKeeper(t *testing.T) {
	for _, ok := range []string{"127.0.0.1:2181", "zk:1", "a:1,b:2,[::1]:3"} {
		if err := CheckZooKeeper(ok); err != nil {
			t.Errorf("CheckZooKeeper(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "localhost", "a:1,", "a:1,b", ",a:1", "a:"} {
		if err := CheckZooKeeper(bad); err == nil {
			t.Errorf("CheckZooKeeper(%q) accepted it", bad)
		}
	}
}
