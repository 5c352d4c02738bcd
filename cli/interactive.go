package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"unicode"

	"github.com/peterh/liner"
)

// prompt is what Interactive shows before each command.
const prompt = "table_client> "

// Interactive runs commands typed on the terminal that is standard input,
// with line editing, tab completion of command names and a history kept in
// historyFile ("" keeps none; failing to save it is only logged). Each
// failed command is reported on s.Stderr and the session goes on. It
// returns nil when the user quits, by the quit command or Ctrl-D. liner
// writes the prompt to os.Stdout, so s.Stdout should be os.Stdout too.
func (s *Session) Interactive(ctx context.Context, historyFile string) error {
	ln := liner.NewLiner()
	defer ln.Close()
	ln.SetCtrlCAborts(true)
	ln.SetCompleter(complete)
	if historyFile != "" {
		if f, err := os.Open(historyFile); err == nil {
			ln.ReadHistory(f)
			f.Close()
		}
		defer saveHistory(ln, historyFile)
	}
	for {
		line, err := ln.Prompt(prompt)
		switch {
		case errors.Is(err, liner.ErrPromptAborted):
			continue // Ctrl-C drops the line, as in a shell
		case errors.Is(err, io.EOF):
			fmt.Fprintln(s.Stdout) // end the prompt's line before saying goodbye
			line = "quit"
		case err != nil:
			return err
		default:
			if strings.TrimSpace(line) != "" {
				ln.AppendHistory(line)
			}
		}
		switch err := s.exec(ctx, line); {
		case errors.Is(err, ErrQuit):
			return nil
		case err != nil:
			fmt.Fprintln(s.Stderr, err)
		}
	}
}

// complete offers the command names that start with line, while line is
// still the first word.
func complete(line string) []string {
	if strings.ContainsFunc(line, unicode.IsSpace) {
		return nil
	}
	var names []string
	for _, c := range commands {
		if strings.HasPrefix(c.name, line) {
			names = append(names, c.name)
		}
	}
	return names
}

// saveHistory writes ln's history to path, readable by its owner only,
// since values typed in commands may be private.
func saveHistory(ln *liner.State, path string) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err == nil {
		_, err = ln.WriteHistory(f)
		err = errors.Join(err, f.Close())
	}
	if err != nil {
		slog.Warn("history not saved", "file", path, "err", err)
	}
}
