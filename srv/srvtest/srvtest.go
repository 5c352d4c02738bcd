// Package srvtest runs real table servers inside tests, as net/http/httptest
// does for HTTP: a standalone node on a free loopback port, stopped when the
// test ends.
package srvtest

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/chaintable/chaintable/srv"
)

// Start runs a standalone server with a table of 8 lists on 127.0.0.1 and
// a free port, and stops it when the test ends. It returns the server's
// address and its store.
func Start(tb testing.TB) (addr string, store *srv.Store) {
	tb.Helper()
	store, err := srv.NewStore(8)
	if err != nil {
		tb.Fatal(err)
	}
	s, err := srv.Start(srv.Config{
		Addr:       "127.0.0.1:0",
		Handler:    store,
		Stats:      store.Stats,
		EventLoops: 2,
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Stop(ctx); err != nil {
			tb.Errorf("stopping the server: %v", err)
		}
	})
	return s.Addr(), store
}
