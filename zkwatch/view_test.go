package zkwatch

import (
	"testing"
)

func TestParseName(t *testing.T) {
	const guid = "0123456789abcdef0123456789abcdef"
	tests := []struct {
		name string
		seq  int64
		ok   bool
	}{
		{"node0000000007", 7, true},
		{"node2147483647", 2147483647, true},
		{"_c_" + guid + "-node0000000012", 12, true},
		{"node7", 0, false},
		{"node00000000070", 0, false},
		{"node+000000007", 0, false},
		{"node-000000007", 0, false},
		{"nodeabcdefghij", 0, false},
		{"peer0000000007", 0, false},
		{"xnode0000000007", 0, false},
		{"_c_" + guid + "node0000000012", 0, false},
		{"_c_" + guid[1:] + "-node0000000012", 0, false},
		{"_c_" + "0123456789ABCDEF0123456789ABCDEF" + "-node0000000012", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		seq, ok := parseName(tt.name)
		if seq != tt.seq || ok != tt.ok {
			t.Errorf("parseName(%q) = %d, %v; want %d, %v", tt.name, seq, ok, tt.seq, tt.ok)
		}
	}
}

func TestParseAddr(t *testing.T) {
	for data, want := range map[string]string{
		"127.0.0.1:9000\x00":     "127.0.0.1:9000",
		"127.0.0.1:9000":         "127.0.0.1:9000",
		"10.0.0.1:1\x00\x00\x00": "10.0.0.1:1",
		"":                       "",
	} {
		if got := parseAddr([]byte(data)); got != want {
			t.Errorf("parseAddr(%q) = %q, want %q", data, got, want)
		}
	}
}

func TestViewNeighbours(t *testing.T) {
	a := Member{Name: "node0000000001", Seq: 1, Addr: "a:1"}
	b := Member{Name: "_c_0123456789abcdef0123456789abcdef-node0000000002", Seq: 2, Addr: "b:2"}
	c := Member{Name: "node0000000005", Seq: 5, Addr: "c:3"}
	members := []Member{c, a, b}
	sortMembers(members)
	v := View{Members: members}

	if h, ok := v.Head(); !ok || h != a {
		t.Errorf("Head() = %v, %v; want %v", h, ok, a)
	}
	if tl, ok := v.Tail(); !ok || tl != c {
		t.Errorf("Tail() = %v, %v; want %v", tl, ok, c)
	}
	if i := v.Index(b.Name); i != 1 {
		t.Errorf("Index(b) = %d, want 1", i)
	}
	if i := v.Index("node0000000009"); i != -1 {
		t.Errorf("Index(absent) = %d, want -1", i)
	}
	neighbours := []struct {
		of         string
		pred, succ Member
		hasP, hasS bool
	}{
		{a.Name, Member{}, b, false, true},
		{b.Name, a, c, true, true},
		{c.Name, b, Member{}, true, false},
		{"node0000000009", Member{}, Member{}, false, false},
	}
	for _, n := range neighbours {
		if p, ok := v.Predecessor(n.of); p != n.pred || ok != n.hasP {
			t.Errorf("Predecessor(%s) = %v, %v; want %v, %v", n.of, p, ok, n.pred, n.hasP)
		}
		if s, ok := v.Successor(n.of); s != n.succ || ok != n.hasS {
			t.Errorf("Successor(%s) = %v, %v; want %v, %v", n.of, s, ok, n.succ, n.hasS)
		}
	}

	var empty View
	if _, ok := empty.Head(); ok {
		t.Error("Head() of an empty view reports a member")
	}
	if _, ok := empty.Tail(); ok {
		t.Error("Tail() of an empty view reports a member")
	}
}
