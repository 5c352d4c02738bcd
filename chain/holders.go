package chain

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// The holders record answers the one question no node can answer alone:
// when every member lost its place at once (the whole chain cut off from
// ZooKeeper until the sessions expired), whose table may the chain restart
// with? Not simply the first node back: it may be one that was dropped
// from the chain earlier and missed the writes acknowledged since.
//
// The record lists the nodes that hold every committed write. It is kept
// in ZooKeeper (the data of the chain's root node), so it outlives the
// members' sessions, and it keeps one invariant: every node it lists holds
// every committed write. Hence:
//
//   - A node lists itself only while it is a member (ZooKeeper checks its
//     member node in the same transaction) and live: it holds every
//     committed write and receives every new one before it commits. When
//     it registers again under a new name it renames its entry, which only
//     a node with an entry and an intact table does.
//   - Before a live node installs a view that lacks a listed node, and so
//     may commit writes that node will never see, it deletes that node
//     from the record (Machine.SetView refuses the view otherwise).
//   - A node that is not live, or whose table a snapshot began to
//     replace, never leads the chain with its own table unless the record
//     lists it (by its process identity: its member name changes when it
//     registers again) or lists no other node: a new chain, or one
//     every other node left gracefully.
//
// A node that registered first but may not lead waits, and moves to the
// end of the chain (see ShouldYield) as soon as a listed node registers after
// it. If every listed node is gone for good, their writes are lost and
// the chain waits until an operator says so (table_server -force-start).

// Holder is a node that the record lists as holding every committed write.
type Holder struct {
	// ID identifies the node's process: its table lives as long as the
	// process does.
	ID string
	// Name is its member name when it last wrote its entry.
	Name string
}

// Holders is the holders record.
type Holders []Holder

// ParseHolders decodes a record written by Encode. Empty data is an empty
// record.
func ParseHolders(data []byte) (Holders, error) {
	var hs Holders
	for i, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if line == "" {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 3 || f[0] != "holder" {
			return nil, fmt.Errorf("chain: holders record line %d: %q is not \"holder <id> <member name>\"", i+1, line)
		}
		hs = append(hs, Holder{ID: f[1], Name: f[2]})
	}
	return hs, nil
}

// Encode returns the record as text, one "holder <id> <member name>" line
// per holder, readable with ZooKeeper's own shell.
func (hs Holders) Encode() []byte {
	var b bytes.Buffer
	for _, h := range hs {
		fmt.Fprintf(&b, "holder %s %s\n", h.ID, h.Name)
	}
	return b.Bytes()
}

// byID returns the entry of process id.
func (hs Holders) byID(id string) (Holder, bool) {
	i := slices.IndexFunc(hs, func(h Holder) bool { return h.ID == id })
	if i < 0 {
		return Holder{}, false
	}
	return hs[i], true
}

// hasName reports whether a holder's entry carries member name.
func (hs Holders) hasName(name string) bool {
	return slices.ContainsFunc(hs, func(h Holder) bool { return h.Name == name })
}

// errHoldersBehind is why SetView refuses a view: the record still lists
// a node that the view lacks.
var errHoldersBehind = errors.New("the holders record lists a node the view lacks")

// TrackHolders makes the node follow the holders record as process id:
// from now on it leads with its own table only as the record allows, and
// takes views only after the record is brought in line (see PlanHolders).
// A Machine that does not track holders leads whenever it is first, for
// tests and single runs without ZooKeeper.
func (m *Machine) TrackHolders(id string) { m.holderID = id }

// SetHolders tells the node the holders record as last read or written.
func (m *Machine) SetHolders(hs Holders) { m.holders = hs }

// mayLead reports whether the node, first in its view but not live, may
// lead the chain with its own table.
func (m *Machine) mayLead() bool {
	if m.holderID == "" || !slices.ContainsFunc(m.holders, func(h Holder) bool { return h.ID != m.holderID }) {
		return true // no other node claims the latest writes
	}
	_, listed := m.holders.byID(m.holderID)
	return listed && m.whole
}

// willBeLive reports whether the node is live, or becomes live when it
// installs a view in which it is at index.
func (m *Machine) willBeLive(index int) bool {
	return m.live || index == 0 && m.mayLead()
}

// PlanHolders returns the holders record, as read (hs), that the node must
// write before it installs the view members, and whether that differs
// from hs. A live node (or one about to lead) drops the nodes the view
// lacks and lists itself under its member name; a node that may still
// restart the chain with its table renames its entry; a draining node
// drops its own, since it takes its table with it, unless it has a log
// and is the last node listed: its data dir then holds every committed
// write, and a chain started again must wait for it (or -force-start)
// rather than let a node without them lead.
func (m *Machine) PlanHolders(hs Holders, members []Member) (Holders, bool) {
	index := slices.IndexFunc(members, func(mb Member) bool { return mb.Name == m.self })
	if m.holderID == "" || index < 0 {
		return hs, false
	}
	saved := m.holders
	m.holders = hs
	live := m.willBeLive(index)
	m.holders = saved
	mine, listed := hs.byID(m.holderID)
	next := slices.Clone(hs)
	if live {
		next = slices.DeleteFunc(next, func(h Holder) bool {
			return h.ID != m.holderID && !slices.ContainsFunc(members, func(mb Member) bool { return mb.Name == h.Name })
		})
		if !listed && m.onDisk() {
			next = append(next, Holder{ID: m.holderID, Name: m.self})
		}
	}
	if i := slices.Index(next, mine); listed && i >= 0 && (live || m.whole) {
		next[i].Name = m.self
	}
	if m.draining && !(m.journal && len(next) == 1 && next[0].ID == m.holderID) {
		next = slices.DeleteFunc(next, func(h Holder) bool { return h.ID == m.holderID })
	}
	return next, !slices.Equal(next, hs)
}

// ShouldYield reports whether the node should move to the end of the
// chain: it is first, may not lead with its own table, and a node that the
// record lists registered after it.
func (m *Machine) ShouldYield() bool {
	if m.index != 0 || m.live || m.mayLead() {
		return false
	}
	return slices.ContainsFunc(m.members[1:], func(mb Member) bool { return m.holders.hasName(mb.Name) })
}

// Waiting reports whether the node is first in its view but may not lead,
// and the holders it waits for.
func (m *Machine) Waiting() (Holders, bool) {
	if m.index != 0 || m.live {
		return nil, false
	}
	return m.holders, true
}

// checkHolders refuses a view that the node would act on while the record
// still lists a node that the view lacks.
func (m *Machine) checkHolders(members []Member, index int) error {
	if m.holderID == "" || index < 0 || !m.willBeLive(index) {
		return nil
	}
	for _, h := range m.holders {
		if h.ID != m.holderID && !slices.ContainsFunc(members, func(mb Member) bool { return mb.Name == h.Name }) {
			return fmt.Errorf("%w: %w: %s (process %s)", ErrStale, errHoldersBehind, h.Name, h.ID)
		}
	}
	return nil
}
