package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/chaintable/chaintable/zkwatch"
)

// ErrQuit is returned by Run when the input ran the quit command: the rest
// of it was not read, and no more commands should be run.
var ErrQuit = errors.New("quit")

// Session interprets table_client commands, printing what they produce as
// the course's reference client does.
type Session struct {
	Client *Client   // where the commands go
	Stdout io.Writer // command output
	Stderr io.Writer // one line per failed command
	// Timeout bounds each command; zero means no bound.
	Timeout time.Duration
	// Members, when set, lists the chain's members, head first, for the
	// chain command (see Chain.Members); unset, the chain command shows
	// the one server Client reads from.
	Members func() []zkwatch.Member
	// JSON makes the chain command print JSON instead of a table.
	JSON bool
}

// Run runs the commands in r, one per line, skipping blank lines and lines
// that start with #, until r ends or a quit command, which makes Run return
// ErrQuit. A failed command does not stop the run: it is reported on
// s.Stderr as name:line: message, and Run returns how many failed. Any
// other error is one reading r.
func (s *Session) Run(ctx context.Context, name string, r io.Reader) (failed int, err error) {
	br := bufio.NewReader(r)
	for n := 1; ; n++ {
		line, err := br.ReadString('\n')
		if line == "" && err != nil {
			if err == io.EOF {
				err = nil
			}
			return failed, err
		}
		switch err := s.exec(ctx, line); {
		case errors.Is(err, ErrQuit):
			return failed, ErrQuit
		case err != nil:
			failed++
			fmt.Fprintf(s.Stderr, "%s:%d: %v\n", name, n, err)
		}
	}
}

// exec runs one command line. The error it returns is the line to show
// the user, or ErrQuit.
func (s *Session) exec(ctx context.Context, line string) error {
	line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
	if trimmed := strings.TrimSpace(line); trimmed == "" || strings.HasPrefix(trimmed, "#") {
		return nil
	}
	c, err := parse(line)
	if err != nil {
		return err
	}
	if s.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.Timeout)
		defer cancel()
	}
	out := s.Stdout
	switch c.name {
	case "put":
		err = s.Client.Put(ctx, c.key, []byte(c.value))
		return failure("rtable_put", false, err)
	case "get":
		v, err := s.Client.Get(ctx, c.key)
		if err != nil {
			return failure("rtable_get", true, err)
		}
		fmt.Fprintf(out, "%s\n", v)
	case "del":
		if err := s.Client.Del(ctx, c.key); err != nil {
			return failure("rtable_del", true, err)
		}
		fmt.Fprintln(out, "Entry removed")
	case "size":
		n, err := s.Client.Size(ctx)
		if err != nil {
			return failure("rtable_size", false, err)
		}
		fmt.Fprintf(out, "Table size: %d\n", n)
	case "getkeys":
		keys, err := s.Client.Keys(ctx)
		if err != nil {
			return failure("rtable_get_keys", false, err)
		}
		for _, k := range keys {
			fmt.Fprintln(out, k)
		}
	case "gettable":
		entries, err := s.Client.Table(ctx)
		if err != nil {
			return failure("rtable_get_table", false, err)
		}
		for _, e := range entries {
			fmt.Fprintf(out, "%s :: %s\n", e.Key, e.Value)
		}
	case "stats":
		st, err := s.Client.Stats(ctx)
		if err != nil {
			return failure("rtable_stats", false, err)
		}
		fmt.Fprintf(out, "Total operations: %d\n", st.Ops)
		fmt.Fprintf(out, "Total time spent in operations: %d microseconds\n", st.Time.Microseconds())
		fmt.Fprintf(out, "Connected clients: %d\n", st.Clients)
	case "chain":
		return s.Chain(ctx)
	case "help":
		fmt.Fprint(out, Help)
	case "quit":
		fmt.Fprintln(out, "Bye, bye!")
		return ErrQuit
	}
	return nil
}

// Help is what the help command prints: the commands, with their syntax.
var Help = help()

func help() string {
	var b strings.Builder
	b.WriteString("Commands:\n")
	for _, c := range commands {
		fmt.Fprintf(&b, "  %-21s %s\n", c.usage, c.help)
	}
	return b.String()
}

// A cmdError is a failed command: msg is the course client's line for it,
// err the cause.
type cmdError struct {
	msg string
	err error
}

func (e *cmdError) Error() string { return e.msg }
func (e *cmdError) Unwrap() error { return e.err }

// failure returns the error for a failed call of the course's function fn,
// nil if err is nil. A server's refusal gets the course client's line,
// which for functions taking a key (mayBeMissing) admits the likely cause;
// other failures (no connection, timeout) name their cause.
func failure(fn string, mayBeMissing bool, err error) error {
	switch {
	case err == nil:
		return nil
	case !errors.Is(err, ErrServer):
		return &cmdError{fmt.Sprintf("Error in %s: %v", fn, err), err}
	case mayBeMissing:
		return &cmdError{fmt.Sprintf("Error in %s or key not found!", fn), err}
	}
	return &cmdError{fmt.Sprintf("Error in %s!", fn), err}
}
