package cli

import (
	"bytes"
	"fmt"
	"testing"
)

// TestChainOutputGolden prints chains in every state the chain command
// shows, as a table and as JSON, and compares with
// testdata/chain_output.golden.
func TestChainOutputGolden(t *testing.T) {
	const guid = "_c_0123456789abcdef0123456789abcdef-"
	chains := []struct {
		name    string
		members []MemberStatus
	}{
		{"a chain of three, one node joining, one silent", []MemberStatus{
			{Name: guid + "node0000000003", Addr: "127.0.0.1:7001", Role: "head", Applied: 1042, Committed: 1040, Serving: true},
			{Name: guid + "node0000000004", Addr: "127.0.0.1:7002", Role: "middle", Applied: 1041, Committed: 1040, Serving: true},
			{Name: guid + "node0000000005", Addr: "127.0.0.1:7003", Role: "tail", Applied: 1040, Committed: 1040, Serving: true},
			{Name: "node0000000006", Addr: "127.0.0.1:7004", Error: "no answer within 1s"},
			{Name: guid + "node0000000007", Addr: "127.0.0.1:7005", Role: "joining", Applied: 0, Committed: 0},
		}},
		{"the head silent: no lag known", []MemberStatus{
			{Name: guid + "node0000000001", Addr: "127.0.0.1:7001", Error: "dial tcp 127.0.0.1:7001: connect: connection refused"},
			{Name: guid + "node0000000002", Addr: "127.0.0.1:7002", Role: "tail", Applied: 7, Committed: 7},
		}},
		{"a server reached directly", []MemberStatus{
			{Addr: "127.0.0.1:7001", Role: "standalone", Serving: true},
		}},
	}
	var out bytes.Buffer
	for _, c := range chains {
		fillLags(c.members)
		fmt.Fprintf(&out, "== %s: table\n", c.name)
		if err := WriteChainTable(&out, c.members); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&out, "== %s: json\n", c.name)
		if err := WriteChainJSON(&out, c.members); err != nil {
			t.Fatal(err)
		}
	}
	checkGolden(t, "testdata/chain_output.golden", out.String())
}
