package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/chaintable/chaintable/codec"
	"github.com/chaintable/chaintable/zkwatch"
)

// MemberTimeout bounds how long the chain command waits for each member's
// answer: a member that is stopped or cut off is reported as silent
// rather than holding up the others.
const MemberTimeout = time.Second

// MemberStatus is one chain member as the chain command shows it: where
// ZooKeeper says it serves, and what it says of itself.
type MemberStatus struct {
	Name string `json:"name"` // member name in ZooKeeper; "" for a server reached directly
	Addr string `json:"addr"`
	// Role is what the node says it is: head, middle, tail, head+tail,
	// joining, waiting or none; standalone for a server outside any
	// chain; "" when it did not answer.
	Role      string `json:"role"`
	Applied   uint64 `json:"applied"`
	Committed uint64 `json:"committed"`
	// Lag is how many writes the member applied fewer than the head; nil
	// when the member or the head did not answer.
	Lag     *uint64 `json:"lag"`
	Serving bool    `json:"serving"` // the node says it can serve its role now
	Error   string  `json:"error,omitempty"`
}

// ChainStatus asks every member, all at once, for its statistics, waiting
// at most MemberTimeout for each, and returns them in chain order.
func ChainStatus(ctx context.Context, members []zkwatch.Member) []MemberStatus {
	out := make([]MemberStatus, len(members))
	var wg sync.WaitGroup
	for i, m := range members {
		out[i] = MemberStatus{Name: m.Name, Addr: m.Addr}
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, MemberTimeout)
			defer cancel()
			st, err := memberStats(ctx, m.Addr)
			if err != nil {
				out[i].Error = describeFailure(err)
				return
			}
			out[i].Role, out[i].Serving = st.GetRole(), st.GetServing()
			out[i].Applied, out[i].Committed = st.GetApplied(), st.GetCommitted()
			if out[i].Role == "" {
				out[i].Role, out[i].Serving = "standalone", true
			}
		})
	}
	wg.Wait()
	fillLags(out)
	return out
}

// fillLags sets each member's lag behind the head, members[0], for the
// members that answered, if the head did.
func fillLags(members []MemberStatus) {
	if len(members) == 0 || members[0].Error != "" {
		return
	}
	head := members[0].Applied
	for i := range members {
		if members[i].Error == "" {
			lag := head - min(head, members[i].Applied)
			members[i].Lag = &lag
		}
	}
}

// memberStats asks the server at addr for its statistics.
func memberStats(ctx context.Context, addr string) (*codec.StatsT, error) {
	cn, err := DialConn(ctx, addr)
	if err != nil {
		return nil, err
	}
	defer cn.Close()
	reply, err := cn.Do(ctx, codec.Request(codec.OpStats))
	if err != nil {
		return nil, err
	}
	return reply.GetStats(), nil
}

// describeFailure says why a member did not answer, in words that do not
// change from run to run for a member that is merely silent.
func describeFailure(err error) string {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Sprintf("no answer within %v", MemberTimeout)
	}
	return err.Error()
}

// shortName returns a member's name without the protected-create prefix
// that ZooKeeper clients put before it: node0000000007.
func shortName(name string) string {
	if i := strings.LastIndex(name, "-node"); i >= 0 && strings.HasPrefix(name, "_c_") {
		return name[i+1:]
	}
	return name
}

// WriteChainTable prints members as a table, head first, then one line
// per member that did not answer.
func WriteChainTable(w io.Writer, members []MemberStatus) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "POS\tMEMBER\tADDRESS\tROLE\tAPPLIED\tCOMMITTED\tLAG\tSERVING")
	for i, m := range members {
		name := shortName(m.Name)
		if name == "" {
			name = "-"
		}
		if m.Error != "" {
			fmt.Fprintf(tw, "%d\t%s\t%s\t?\t-\t-\t-\t-\n", i, name, m.Addr)
			continue
		}
		lag, serving := "-", "no"
		if m.Lag != nil {
			lag = strconv.FormatUint(*m.Lag, 10)
		}
		if m.Serving {
			serving = "yes"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n", i, name, m.Addr, m.Role, m.Applied, m.Committed, lag, serving)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, m := range members {
		if m.Error != "" {
			if _, err := fmt.Fprintf(w, "%s (%s): %s\n", shortName(m.Name), m.Addr, m.Error); err != nil {
				return err
			}
		}
	}
	return nil
}

// WriteChainJSON prints members as a JSON array, head first, one member
// per line.
func WriteChainJSON(w io.Writer, members []MemberStatus) error {
	if _, err := io.WriteString(w, "[\n"); err != nil {
		return err
	}
	for i, m := range members {
		b, err := json.Marshal(m)
		if err != nil {
			return err
		}
		sep := ",\n"
		if i == len(members)-1 {
			sep = "\n"
		}
		if _, err := fmt.Fprintf(w, "  %s%s", b, sep); err != nil {
			return err
		}
	}
	_, err := io.WriteString(w, "]\n")
	return err
}

// Chain runs the chain command: it prints every member of the chain
// (s.Members, or the one server s.Client reads from), as a table or, with
// s.JSON, as JSON. It fails when there is no member, or some member did
// not answer, after printing what it learnt.
func (s *Session) Chain(ctx context.Context) error {
	var members []zkwatch.Member
	if s.Members != nil {
		members = s.Members()
	} else {
		addr, err := s.Client.res.Reader(ctx)
		if err != nil {
			return fmt.Errorf("chain: %w", err)
		}
		members = []zkwatch.Member{{Addr: addr}}
	}
	if len(members) == 0 {
		return fmt.Errorf("chain: %w", ErrNoServers)
	}
	statuses := ChainStatus(ctx, members)
	write := WriteChainTable
	if s.JSON {
		write = WriteChainJSON
	}
	if err := write(s.Stdout, statuses); err != nil {
		return err
	}
	silent := 0
	for _, m := range statuses {
		if m.Error != "" {
			silent++
		}
	}
	if silent > 0 {
		return fmt.Errorf("chain: %d of %d members did not answer", silent, len(statuses))
	}
	return nil
}

// Members returns the chain's members as last seen, head first.
func (c *Chain) Members() []zkwatch.Member { return c.w.View().Members }
