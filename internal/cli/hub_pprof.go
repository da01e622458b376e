package cli

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"time"
)

// HubPprofEnv names the environment variable that makes `steward hub`
// serve Go's profiles (/debug/pprof/) on a loopback address of their own,
// for benchmarks (bench/hubload profiles the hub under load through it).
// It is no flag and no setting: nothing serves profiles unless this is
// set, and then never on the API's listener nor off loopback.
const HubPprofEnv = "STEWARD_HUB_PPROF"

// startHubPprof serves the profiles on addr (a loopback host:port; port 0
// picks one) until the returned stop is called, and returns the address
// it listens on.
func startHubPprof(addr string, log *slog.Logger) (string, func(), error) {
	host, _, err := net.SplitHostPort(addr)
	ip := net.ParseIP(host)
	if err != nil || (host != "localhost" && (ip == nil || !ip.IsLoopback())) {
		return "", nil, &UsageError{Err: fmt.Errorf("hub: %s=%q: profiles are served only on a loopback host:port, e.g. 127.0.0.1:6060", HubPprofEnv, addr)}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("hub: %s: listen on %s: %w", HubPprofEnv, addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("serving profiles", "err", err)
		}
	}()
	return ln.Addr().String(), func() { srv.Close(); <-done }, nil
}

// hubPprofAddr is the address profiles are asked for on ("" for none).
func hubPprofAddr() string { return os.Getenv(HubPprofEnv) }
