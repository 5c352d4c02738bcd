package cli

import (
	"slices"
	"strings"
	"testing"
	"unicode"
)

func TestParse(t *testing.T) {
	tests := []struct {
		line    string
		want    command
		wantErr string
	}{
		{line: "p k v", want: command{name: "put", key: "k", value: "v"}},
		{line: "put k v", want: command{name: "put", key: "k", value: "v"}},
		{line: "put   k   two  words ", want: command{name: "put", key: "k", value: "two  words "}},
		{line: "\tput k\tv", want: command{name: "put", key: "k", value: "v"}},
		{line: "put k :: x", want: command{name: "put", key: "k", value: ":: x"}},
		{line: "put k", wantErr: "Usage: p[ut] <key> <value>"},
		{line: "put k   ", wantErr: "Usage: p[ut] <key> <value>"},
		{line: "put", wantErr: "Usage: p[ut] <key> <value>"},
		{line: "chain now", wantErr: "Usage: chain"},
		{line: "g k", want: command{name: "get", key: "k"}},
		{line: "get k ", want: command{name: "get", key: "k"}},
		{line: "get", wantErr: "Usage: g[et] <key>"},
		{line: "get a b", wantErr: "Usage: g[et] <key>"},
		{line: "d k", want: command{name: "del", key: "k"}},
		{line: "del k", want: command{name: "del", key: "k"}},
		{line: "del", wantErr: "Usage: d[el] <key>"},
		{line: "s", want: command{name: "size"}},
		{line: "size", want: command{name: "size"}},
		{line: "size 3", wantErr: "Usage: s[ize]"},
		{line: "k", want: command{name: "getkeys"}},
		{line: "keys", want: command{name: "getkeys"}},
		{line: "getkeys", want: command{name: "getkeys"}},
		{line: "getkeys x", wantErr: "Usage: [get]k[eys]"},
		{line: "t", want: command{name: "gettable"}},
		{line: "table", want: command{name: "gettable"}},
		{line: "gettable", want: command{name: "gettable"}},
		{line: "st", want: command{name: "stats"}},
		{line: "stats", want: command{name: "stats"}},
		{line: "chain", want: command{name: "chain"}},
		{line: "stats now", wantErr: "Usage: st[ats]"},
		{line: "h", want: command{name: "help"}},
		{line: "help", want: command{name: "help"}},
		{line: "q", want: command{name: "quit"}},
		{line: "quit", want: command{name: "quit"}},
		{line: "quit now", wantErr: "Usage: q[uit]"},
		{line: "", wantErr: "empty command"},
		{line: "  \t", wantErr: "empty command"},
		{line: "PUT k v", wantErr: `unknown command "PUT"; type help for the list of commands`},
		{line: "sta", wantErr: `unknown command "sta"; type help for the list of commands`},
		{line: "getk", wantErr: `unknown command "getk"; type help for the list of commands`},
	}
	for _, tt := range tests {
		got, err := parse(tt.line)
		if tt.wantErr != "" {
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("parse(%q) = %+v, %v; want error %q", tt.line, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("parse(%q) = %+v, %v; want %+v", tt.line, got, err, tt.want)
		}
	}
}

func TestComplete(t *testing.T) {
	tests := []struct {
		line string
		want []string
	}{
		{"", []string{"put", "get", "del", "size", "getkeys", "gettable", "stats", "chain", "help", "quit"}},
		{"c", []string{"chain"}},
		{"g", []string{"get", "getkeys", "gettable"}},
		{"getk", []string{"getkeys"}},
		{"s", []string{"size", "stats"}},
		{"x", nil},
		{"get ", nil},
	}
	for _, tt := range tests {
		if got := complete(tt.line); !slices.Equal(got, tt.want) {
			t.Errorf("complete(%q) = %q, want %q", tt.line, got, tt.want)
		}
	}
}

// FuzzParse checks that parse never panics, that what it accepts has a key
// and value where the command needs them, keys without spaces, and that the
// canonical form parses back to the same command.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"p k v", "put  k  a b ", "g k", "del", "s", "getkeys", "t", "st", "q", "h x", "\u00a0p\u2003k v", "p k \xff", "frob"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		c, err := parse(line)
		if err != nil {
			if err.Error() == "" {
				t.Fatalf("parse(%q): empty error", line)
			}
			return
		}
		s := byName[c.name]
		if s == nil || s.name != c.name {
			t.Fatalf("parse(%q) = %+v: not a canonical name", line, c)
		}
		if (s.args >= 1) != (c.key != "") || (s.args == 2) != (c.value != "") {
			t.Fatalf("parse(%q) = %+v: arguments do not fit %q", line, c, s.usage)
		}
		if strings.ContainsFunc(c.key, unicode.IsSpace) {
			t.Fatalf("parse(%q) = %+v: key holds white space", line, c)
		}
		again, err := parse(c.String())
		if err != nil || again != c {
			t.Fatalf("parse(%q) = %+v, but parse(%q) = %+v, %v", line, c, c.String(), again, err)
		}
	})
}
