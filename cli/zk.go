package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/chaintable/chaintable/zkwatch"
)

// ErrNoServers reports a chain with no member registered in ZooKeeper.
var ErrNoServers = errors.New("no server registered in ZooKeeper")

// ReadFrom says which members of a chain take a Chain's reads. Every
// member answers reads linearizably; they differ in where the load goes.
type ReadFrom uint8

const (
	// ReadAny sends each read to a member chosen at random, so that reads
	// spread over the whole chain.
	ReadAny ReadFrom = iota
	// ReadTail sends every read to the tail, as the course's clients do.
	ReadTail
)

// ParseReadFrom parses "any" or "tail".
func ParseReadFrom(s string) (ReadFrom, error) {
	switch s {
	case "any":
		return ReadAny, nil
	case "tail":
		return ReadTail, nil
	}
	return 0, fmt.Errorf("read-from %q: want any or tail", s)
}

// String returns the name ParseReadFrom takes.
func (r ReadFrom) String() string {
	if r == ReadTail {
		return "tail"
	}
	return "any"
}

// Chain is a Resolver for a chain registered in ZooKeeper: writes go to
// its head, and reads to any member or to the tail (SetReadFrom), as a
// watch on the membership reports them from moment to moment.
type Chain struct {
	zc       *zkwatch.Client
	w        *zkwatch.Watcher
	readFrom ReadFrom
}

// DialChain connects to ZooKeeper at addr ("host:port", or several joined
// by commas), waiting at most connectTimeout (zero: zkwatch's default), and
// follows the chain registered there.
func DialChain(addr string, connectTimeout time.Duration, log *slog.Logger) (*Chain, error) {
	zc, err := zkwatch.Dial(addr, zkwatch.Options{ConnectTimeout: connectTimeout, Logger: log})
	if err != nil {
		return nil, err
	}
	w, err := zc.Watch()
	if err != nil {
		zc.Close()
		return nil, err
	}
	return &Chain{zc: zc, w: w}, nil
}

// Writer returns the address of the chain's head.
func (c *Chain) Writer(context.Context) (string, error) {
	if m, ok := c.w.View().Head(); ok {
		return m.Addr, nil
	}
	return "", ErrNoServers
}

// SetReadFrom chooses where reads go; the default is ReadAny. Call it
// before the Chain is in use.
func (c *Chain) SetReadFrom(r ReadFrom) { c.readFrom = r }

// Reader returns the address of a member for a read: one at random, or
// the tail (see SetReadFrom).
func (c *Chain) Reader(context.Context) (string, error) {
	v := c.w.View()
	if len(v.Members) == 0 {
		return "", ErrNoServers
	}
	if c.readFrom == ReadTail {
		m, _ := v.Tail()
		return m.Addr, nil
	}
	return v.Members[rand.IntN(len(v.Members))].Addr, nil
}

// Close stops following the chain and ends the ZooKeeper session.
func (c *Chain) Close() {
	c.w.Close()
	c.zc.Close()
}
