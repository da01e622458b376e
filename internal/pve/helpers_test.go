package pve

import (
	"bufio"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
)

var testToken = Token{ID: "root@pam!steward", Secret: testSecret}

// fixture returns a file under testdata/fixtures.
func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "fixtures", filepath.FromSlash(name)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// newServer starts a loopback TLS server and a Client pinned to its
// certificate.
func newServer(t testing.TB, h http.Handler) (*httptest.Server, *Client) {
	t.Helper()
	srv := httptest.NewTLSServer(h)
	t.Cleanup(srv.Close)
	c, err := New(Options{URL: srv.URL, Token: testToken, Fingerprint: CertFingerprint(srv.Certificate().Raw)})
	if err != nil {
		t.Fatal(err)
	}
	return srv, c
}

// rawHandler answers every request with exactly raw (status line, headers,
// body as bytes) and closes the connection, as PVE's Perl server does.
func rawHandler(t testing.TB, raw []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		conn, buf, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		writeRaw(buf, raw)
	}
}

func writeRaw(buf *bufio.ReadWriter, raw []byte) {
	buf.Write(raw)
	buf.Flush()
}

func slogTo(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }
