package zkwatch

import (
	"bytes"
	"cmp"
	"slices"
	"strconv"
	"strings"
)

// Member is one server of the chain, as registered under ChainPath.
type Member struct {
	// Name is the member's node name under ChainPath, either plain
	// ("node0000000007", as Register and course servers do) or protected
	// ("_c_<guid>-node0000000007", as older versions of Register did).
	Name string
	// Seq is the sequence number ZooKeeper appended to Name. It orders the
	// chain: members that registered earlier come first.
	Seq int64
	// Addr is the "ip:port" where the member serves clients and its
	// predecessor.
	Addr string
}

// View is the chain at one moment: its members ordered by sequence number,
// head first and tail last. A View is shared by everyone who receives it and
// must not be modified.
type View struct {
	Members []Member
}

// Head returns the first member of the chain, which takes writes.
func (v View) Head() (Member, bool) {
	if len(v.Members) == 0 {
		return Member{}, false
	}
	return v.Members[0], true
}

// Tail returns the last member of the chain, which answers reads.
func (v View) Tail() (Member, bool) {
	if len(v.Members) == 0 {
		return Member{}, false
	}
	return v.Members[len(v.Members)-1], true
}

// Index returns the position in the chain of the member with the given node
// name, or -1 if there is none.
func (v View) Index(name string) int {
	return slices.IndexFunc(v.Members, func(m Member) bool { return m.Name == name })
}

// Successor returns the member after the named one, to which it forwards
// writes. It reports false if the named member is the tail or absent.
func (v View) Successor(name string) (Member, bool) {
	i := v.Index(name)
	if i < 0 || i+1 >= len(v.Members) {
		return Member{}, false
	}
	return v.Members[i+1], true
}

// Predecessor returns the member before the named one, from which it
// receives writes. It reports false if the named member is the head or
// absent.
func (v View) Predecessor(name string) (Member, bool) {
	i := v.Index(name)
	if i <= 0 {
		return Member{}, false
	}
	return v.Members[i-1], true
}

func (v View) equal(w View) bool { return slices.Equal(v.Members, w.Members) }

// seqDigits is the width ZooKeeper gives the sequence number it appends.
const seqDigits = 10

// parseName returns the sequence number of a member node name, plain
// ("node0000000007") or protected ("_c_<guid>-node0000000007"). It reports
// false for any other name.
func parseName(name string) (int64, bool) {
	if len(name) < len(nodePrefix)+seqDigits {
		return 0, false
	}
	head, digits := name[:len(name)-seqDigits], name[len(name)-seqDigits:]
	if !strings.HasSuffix(head, nodePrefix) {
		return 0, false
	}
	if head != nodePrefix && !isProtected(strings.TrimSuffix(head, nodePrefix)) {
		return 0, false
	}
	if strings.Trim(digits, "0123456789") != "" {
		return 0, false
	}
	seq, err := strconv.ParseInt(digits, 10, 64)
	return seq, err == nil
}

// isProtected reports whether s is the "_c_<32 hex digits>-" prefix that
// go-zookeeper's protected create puts before the requested name.
func isProtected(s string) bool {
	guid, ok := strings.CutPrefix(s, "_c_")
	if !ok {
		return false
	}
	guid, ok = strings.CutSuffix(guid, "-")
	if !ok || len(guid) != 32 {
		return false
	}
	return strings.Trim(guid, "0123456789abcdef") == ""
}

// parseAddr returns the address held in a member node. Course servers store
// it as a C string, so trailing NUL bytes are dropped.
func parseAddr(data []byte) string {
	return string(bytes.TrimRight(data, "\x00"))
}

// sortMembers orders members by sequence number.
func sortMembers(ms []Member) {
	slices.SortFunc(ms, func(a, b Member) int {
		return cmp.Or(cmp.Compare(a.Seq, b.Seq), strings.Compare(a.Name, b.Name))
	})
}
