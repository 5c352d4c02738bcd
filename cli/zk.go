package cli

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/chaintable/chaintable/zkwatch"
)

// ErrNoServers reports a chain with no member registered in ZooKeeper.
var ErrNoServers = errors.New("no server registered in ZooKeeper")

// Chain is a Resolver for a chain registered in ZooKeeper: writes go to
// its head and reads to its tail, as a watch on the membership reports
// them from moment to moment.
type Chain struct {
	zc *zkwatch.Client
	w  *zkwatch.Watcher
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

// Reader returns the address of the chain's tail.
func (c *Chain) Reader(context.Context) (string, error) {
	if m, ok := c.w.View().Tail(); ok {
		return m.Addr, nil
	}
	return "", ErrNoServers
}

// Close stops following the chain and ends the ZooKeeper session.
func (c *Chain) Close() {
	c.w.Close()
	c.zc.Close()
}
