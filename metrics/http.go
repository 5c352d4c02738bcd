package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Server serves a node's metrics over HTTP.
type Server struct {
	ln   net.Listener
	http *http.Server
	done chan struct{}
}

// Listen serves, on addr (host:port; port 0 picks one), the metrics of
// src at /metrics and its health at /healthz (see Handler), until Close;
// with profiling, also the Go runtime's profiles at /debug/pprof/ (see
// net/http/pprof), so that a node can be profiled under load for as long
// as one asks, not for its whole life.
func Listen(addr string, src Sources, profiling bool, log *slog.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: listen on %s: %w", addr, err)
	}
	h := Handler(NewRegistry(src), src)
	if profiling {
		h = withProfiles(h)
	}
	s := &Server{ln: ln, done: make(chan struct{}), http: &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}}
	go func() {
		defer close(s.done)
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics: serving stopped", "addr", s.Addr(), "err", err)
		}
	}()
	return s, nil
}

// Addr returns the address the server listens on, with the port it got.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops the server, waiting at most a second for scrapes in
// progress.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := s.http.Shutdown(ctx)
	<-s.done
	return err
}

// Handler serves reg's metrics at /metrics, and at /healthz answers 200
// while the node can serve its role (a standalone server always can)
// and 503 otherwise, with the node's role and sequence numbers in the
// body for whoever looks.
func Handler(reg *prometheus.Registry, src Sources) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if src.Node == nil {
			fmt.Fprintln(w, "ok standalone")
			return
		}
		st := src.Node.Status()
		word := "ok"
		if !st.Serving {
			word = "unavailable"
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprintf(w, "%s role=%s position=%d applied=%d committed=%d\n", word, st.Role, st.Position, st.Applied, st.Committed)
	})
	return mux
}

// withProfiles serves net/http/pprof's handlers at /debug/pprof/ and
// everything else with h.
func withProfiles(h http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", h)
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}
