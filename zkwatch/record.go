package zkwatch

import (
	"errors"
	"fmt"

	"github.com/go-zookeeper/zk"
)

// ErrRecordChanged means the chain record changed after it was read: read
// it again and redo the change.
var ErrRecordChanged = errors.New("zkwatch: the chain record changed since it was read")

// ErrNotRegistered means the Registration has no member node now: its
// session expired, or it was closed.
var ErrNotRegistered = errors.New("zkwatch: not registered")

// Record returns the chain record, the data of ChainPath, and its version
// for SetRecord. The chain's servers keep in it what must outlive their
// sessions; clients that look for members ignore it. Its format is the
// servers' business.
func (c *Client) Record() (data []byte, version int32, err error) {
	data, stat, err := c.conn.Get(ChainPath)
	if errors.Is(err, zk.ErrNoNode) {
		if err := c.ensureChain(); err != nil {
			return nil, 0, err
		}
		data, stat, err = c.conn.Get(ChainPath)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("zkwatch: read the chain record: %w", err)
	}
	return data, stat.Version, nil
}

// SetRecord replaces the chain record read at version, in one ZooKeeper
// transaction that also checks that r's member node exists: a member that
// ZooKeeper dropped, and that may have missed what the others did since,
// never writes it. It returns ErrRecordChanged if the record changed since
// it was read, ErrNotRegistered if the member node is gone.
func (r *Registration) SetRecord(data []byte, version int32) error {
	r.mu.Lock()
	p := r.path
	r.mu.Unlock()
	if p == "" {
		return ErrNotRegistered
	}
	res, err := r.c.conn.Multi(
		&zk.CheckVersionRequest{Path: p, Version: -1},
		&zk.SetDataRequest{Path: ChainPath, Data: data, Version: version},
	)
	// ZooKeeper tells in the results which operation failed; the error of
	// the call may be only the first failure's code, or nothing.
	for i, op := range res {
		switch {
		case i == 0 && errors.Is(op.Error, zk.ErrNoNode):
			return ErrNotRegistered
		case i == 1 && errors.Is(op.Error, zk.ErrBadVersion):
			return ErrRecordChanged
		case err == nil:
			err = op.Error
		}
	}
	if err != nil {
		return fmt.Errorf("zkwatch: write the chain record as %s: %w", p, err)
	}
	return nil
}
