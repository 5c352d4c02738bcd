package cli

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
)

// A spec describes one command of the interpreter.
type spec struct {
	name    string   // canonical name, also what tab completion offers
	aliases []string // every other spelling the course accepts
	args    int      // 0; 1: <key>; 2: <key> <value>
	usage   string   // the command's syntax, as help and usage errors show it
	help    string   // what the command does, for help
}

// commands lists the commands in the order help shows them.
var commands = []spec{
	{name: "put", aliases: []string{"p"}, args: 2, usage: "p[ut] <key> <value>", help: "store value (the rest of the line) under key"},
	{name: "get", aliases: []string{"g"}, args: 1, usage: "g[et] <key>", help: "print the value stored under key"},
	{name: "del", aliases: []string{"d"}, args: 1, usage: "d[el] <key>", help: "remove key and its value"},
	{name: "size", aliases: []string{"s"}, usage: "s[ize]", help: "print the number of entries"},
	{name: "getkeys", aliases: []string{"k", "keys"}, usage: "[get]k[eys]", help: "print every key, one per line"},
	{name: "gettable", aliases: []string{"t", "table"}, usage: "[get]t[able]", help: "print every entry as key :: value"},
	{name: "stats", aliases: []string{"st"}, usage: "st[ats]", help: "print the server's statistics"},
	{name: "chain", usage: "chain", help: "print the chain's members: role, last write applied and committed, lag behind the head"},
	{name: "help", aliases: []string{"h"}, usage: "h[elp]", help: "print this help"},
	{name: "quit", aliases: []string{"q"}, usage: "q[uit]", help: "leave"},
}

// byName finds a command by any of its spellings.
var byName = func() map[string]*spec {
	m := make(map[string]*spec)
	for i := range commands {
		s := &commands[i]
		m[s.name] = s
		for _, a := range s.aliases {
			m[a] = s
		}
	}
	return m
}()

// A command is one parsed command line.
type command struct {
	name  string // canonical name of the command
	key   string
	value string
}

// String returns the command in canonical form; parsing it gives back c.
func (c command) String() string {
	switch byName[c.name].args {
	case 1:
		return c.name + " " + c.key
	case 2:
		return c.name + " " + c.key + " " + c.value
	}
	return c.name
}

// parse parses a command line: a command name, then, as the command
// requires, a key and a value. Words are separated by white space; the
// value is the rest of the line after the key and the space after it, so
// it keeps inner and trailing spaces. Errors are the lines to show the user.
func parse(line string) (command, error) {
	name, rest := cut(line)
	if name == "" {
		return command{}, errors.New("empty command")
	}
	s := byName[name]
	if s == nil {
		return command{}, fmt.Errorf("unknown command %q; type help for the list of commands", name)
	}
	c := command{name: s.name}
	usage := fmt.Errorf("Usage: %s", s.usage)
	switch s.args {
	case 0:
		if rest != "" {
			return command{}, usage
		}
	case 1:
		if c.key, rest = cut(rest); c.key == "" || rest != "" {
			return command{}, usage
		}
	case 2:
		if c.key, c.value = cut(rest); c.value == "" {
			return command{}, usage
		}
	}
	return c, nil
}

// cut returns the first word of s and what follows it, both without the
// white space around them on the left.
func cut(s string) (word, rest string) {
	s = strings.TrimLeftFunc(s, unicode.IsSpace)
	end := strings.IndexFunc(s, unicode.IsSpace)
	if end < 0 {
		return s, ""
	}
	return s[:end], strings.TrimLeftFunc(s[end:], unicode.IsSpace)
}
