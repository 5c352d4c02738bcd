// Command table_client is the client of the table service. It reads the
// course's commands (put, get, del, size, getkeys, gettable, stats), and
// chain, which shows every member of the chain, from the terminal, with
// line editing and history, or from scripts, and sends them to the
// service. Run it with -h for its usage.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/peterh/liner"

	"github.com/chaintable/chaintable/cli"
	"github.com/chaintable/chaintable/internal/cmdline"
	"github.com/chaintable/chaintable/zkwatch"
)

const usage = `Usage:
  table_client [options] --direct <server_ip>:<port>
      talk to the one table server there, which takes reads and writes
  table_client [options] <zk_ip>:<zk_port>[,<zk_ip>:<zk_port>...]
      find the chain through ZooKeeper (writes go to its head, reads to
      any member, see -read-from), follow it as it changes, and retry a
      command whose server failed until the chain recovers or -timeout
      passes
  table_client [options] --chain <zk_ip>:<zk_port>
      print the chain's members, with each one's role, last write applied
      and committed, and lag behind the head (-json: as JSON), and exit

On a terminal, table_client prompts for commands, with line editing, tab
completion and a history kept across runs. With -f, or when standard input
is not a terminal, it runs the commands it reads without a prompt,
skipping blank lines and lines that start with #; a failed command is
reported with its file and line, and the rest still run.

Exit status: 0 on success, 1 if a command failed or the server could not
be reached (with --chain: if a member did not answer), 2 for bad arguments.

Options:
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run is table_client with its arguments and standard files; it returns
// the exit status.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("table_client", flag.ContinueOnError)
	fs.SetOutput(stderr)
	direct := fs.Bool("direct", false, "talk to one server at the address given instead of ZooKeeper")
	var scripts []string
	fs.Func("f", "run the commands in `file` instead of standard input (repeatable, run in order)", func(s string) error {
		scripts = append(scripts, s)
		return nil
	})
	timeout := fs.Duration("timeout", 30*time.Second, "give up connecting or a command after `duration` (0: never)")
	history := fs.String("history", defaultHistory(), "keep the interactive history in `file` (empty: keep none)")
	verbose := fs.Bool("v", false, "log connections and other events to standard error")
	readFrom := cli.ReadAny
	fs.Func("read-from", "send reads to `any` member (spreads the load; every member answers linearizably) or to the `tail` (default any)", func(s string) (err error) {
		readFrom, err = cli.ParseReadFrom(s)
		return err
	})
	chainOnly := fs.Bool("chain", false, "print the chain's members, as the chain command does, and exit")
	asJSON := fs.Bool("json", false, "the chain command prints JSON instead of a table")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
		fmt.Fprint(fs.Output(), "\n", cli.Help)
	}

	operands, err := cmdline.Parse(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return 2 // fs has said what is wrong
	}
	if len(operands) != 1 {
		fmt.Fprintf(stderr, "table_client: want one address, got %d operands; see table_client -h\n", len(operands))
		return 2
	}
	addr := operands[0]
	if *direct {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			fmt.Fprintf(stderr, "table_client: bad address %q: want host:port\n", addr)
			return 2
		}
	} else if err := cmdline.CheckZooKeeper(addr); err != nil {
		fmt.Fprintf(stderr, "table_client: %v\n", err)
		return 2
	}
	level := slog.LevelError
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(log)

	var res cli.Resolver = cli.Direct(addr)
	var opts cli.Options
	members := func() []zkwatch.Member { return []zkwatch.Member{{Addr: addr}} }
	if !*direct {
		chain, err := cli.DialChain(addr, min(*timeout, 10*time.Second), log)
		if err != nil {
			fmt.Fprintf(stderr, "table_client: %v\n", err)
			return 1
		}
		defer chain.Close()
		chain.SetReadFrom(readFrom)
		res, members = chain, chain.Members
		opts = cli.Options{RetryFor: *timeout, OnWait: func(err error) {
			fmt.Fprintf(stderr, "table_client: waiting for the chain (%v)\n", err)
		}}
	}
	ctx := context.Background()
	if *chainOnly {
		sess := &cli.Session{Stdout: stdout, Stderr: stderr, Members: members, JSON: *asJSON}
		cctx, cancel := withTimeout(ctx, *timeout)
		defer cancel()
		if err := sess.Chain(cctx); err != nil {
			fmt.Fprintf(stderr, "table_client: %v\n", err)
			return 1
		}
		return 0
	}

	// Open every script first: a misspelt name should stop the run before
	// the first command changes the table.
	type input struct {
		name string
		r    io.Reader
	}
	var inputs []input
	for _, name := range scripts {
		f, err := os.Open(name)
		if err != nil {
			fmt.Fprintf(stderr, "table_client: %v\n", err)
			return 2
		}
		defer f.Close()
		inputs = append(inputs, input{name, f})
	}

	dialCtx, cancel := withTimeout(ctx, *timeout)
	client, err := cli.Dial(dialCtx, res, opts)
	cancel()
	if err != nil {
		fmt.Fprintf(stderr, "table_client: cannot connect to %s: %v\n", addr, err)
		return 1
	}
	defer client.Close()
	sess := &cli.Session{Client: client, Stdout: stdout, Stderr: stderr, Timeout: *timeout, Members: members, JSON: *asJSON}

	if len(inputs) == 0 {
		if stdin == io.Reader(os.Stdin) && isTerminal() {
			if err := sess.Interactive(ctx, *history); err != nil {
				fmt.Fprintf(stderr, "table_client: %v\n", err)
				return 1
			}
			return 0
		}
		inputs = []input{{"stdin", stdin}}
	}
	failed := 0
	for _, in := range inputs {
		n, err := sess.Run(ctx, in.name, in.r)
		failed += n
		if errors.Is(err, cli.ErrQuit) {
			break
		}
		if err != nil {
			fmt.Fprintf(stderr, "table_client: reading %s: %v\n", in.name, err)
			return 1
		}
	}
	if failed > 0 {
		return 1
	}
	return 0
}

// withTimeout is context.WithTimeout, with 0 meaning no timeout.
func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

// isTerminal reports whether standard input is a terminal.
func isTerminal() bool {
	_, err := liner.TerminalMode()
	return err == nil
}

// defaultHistory returns where the history is kept unless -history says
// otherwise: a dot file in the home directory, if there is one.
func defaultHistory() string {
	home, err := os.UserHomeDir()
	if err != nil {
		return ""
	}
	return filepath.Join(home, ".table_client_history")
}
