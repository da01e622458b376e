// Package simtest starts a PVE simulator on loopback for tests.
package simtest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"testing"

	"github.com/steward-pve/steward/internal/sim"
)

// Server is a running simulator.
type Server struct {
	URL         string // "https://127.0.0.1:PORT"
	Fingerprint string // colon-hex SHA-256 of the node certificate
	Token       string // full admin token USER@REALM!TOKENID=SECRET
	Sim         *sim.Sim
	// Client trusts exactly the simulator's certificate.
	Client *http.Client
}

// Start starts a simulator with opts on 127.0.0.1 and stops it (server and
// task goroutines) in t.Cleanup. It fails the test if it cannot start.
func Start(t testing.TB, opts sim.Options) *Server {
	t.Helper()
	s, err := sim.New(opts)
	if err != nil {
		t.Fatalf("simtest: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("simtest: listen on loopback: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sim.Serve(ctx, s, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("simtest: serve: %v", err)
		}
		_ = s.Close()
	})
	cert, err := x509.ParseCertificate(s.Certificate())
	if err != nil {
		t.Fatalf("simtest: parse certificate: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	t.Cleanup(tr.CloseIdleConnections)
	return &Server{
		URL:         "https://" + ln.Addr().String(),
		Fingerprint: s.Fingerprint(),
		Token:       s.Token(),
		Sim:         s,
		Client:      &http.Client{Transport: tr},
	}
}
