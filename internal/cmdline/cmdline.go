// Package cmdline owns what the commands share in parsing their command
// lines.
package cmdline

import (
	"flag"
	"fmt"
	"net"
	"strings"
)

// Parse parses the flags in args, which unlike flag.FlagSet.Parse may
// follow operands (cmd host:port -v), and returns the operands in order.
// Everything after "--" is an operand.
func Parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var operands []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(operands, rest...), nil
		}
		if len(rest) == 0 {
			return operands, nil
		}
		operands, args = append(operands, rest[0]), rest[1:]
	}
}

// CheckZooKeeper checks a ZooKeeper connect string: one host:port, or
// several joined by commas for an ensemble.
func CheckZooKeeper(s string) error {
	for _, addr := range strings.Split(s, ",") {
		if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
			return fmt.Errorf("ZooKeeper address %q is not <ip>:<port> or a comma-separated list of them", s)
		}
	}
	return nil
}
