package cluster

import (
	"context"
	"time"

	"github.com/chaintable/chaintable/cli"
	"github.com/chaintable/chaintable/zkwatch"
)

// watch connects to ZooKeeper at addr and follows the chain there.
func watch(addr string) (*zkwatch.Client, *zkwatch.Watcher, error) {
	zc, err := zkwatch.Dial(addr, zkwatch.Options{ConnectTimeout: 10 * time.Second, Logger: discardLogger()})
	if err != nil {
		return nil, nil, err
	}
	w, err := zc.Watch()
	if err != nil {
		zc.Close()
		return nil, nil, err
	}
	return zc, w, nil
}

// dialClient returns a client of the chain at the ZooKeeper at addr, with
// opts and reads sent as readFrom says, as table_client makes one, and a
// function that closes both.
func dialClient(addr string, opts cli.Options, readFrom cli.ReadFrom) (*cli.Client, func(), error) {
	res, err := cli.DialChain(addr, 10*time.Second, discardLogger())
	if err != nil {
		return nil, nil, err
	}
	res.SetReadFrom(readFrom)
	cl, err := cli.Dial(context.Background(), res, opts)
	if err != nil {
		res.Close()
		return nil, nil, err
	}
	return cl, func() {
		cl.Close()
		res.Close()
	}, nil
}
