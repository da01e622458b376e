package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/hub/store"
	"github.com/steward-pve/steward/internal/hub/store/sqlite"
	"github.com/steward-pve/steward/internal/pve"
)

// hubOut is stdout of a running hub, safe to read while it writes.
type hubOut struct {
	mu sync.Mutex
	b  strings.Builder
}

func (o *hubOut) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.Write(p)
}

func (o *hubOut) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}

var (
	hubURLRe   = regexp.MustCompile(`URL: +(https?://\S+)`)
	hubFPRe    = regexp.MustCompile(`Fingerprint: (\S+)`)
	hubTokenRe = regexp.MustCompile(`\n  (stwo_[0-9a-f]+)\n`)
	// hubTokenFileRe is the line naming the file the first operator
	// token was written to.
	hubTokenFileRe = regexp.MustCompile(`Operator token \("admin"\): written to (\S+) `)
)

// hubTokenFile returns the first operator token from the file the hub's
// output names ("" when it names none), checking the file is 0600.
func hubTokenFile(t *testing.T, out string) string {
	t.Helper()
	m := hubTokenFileRe.FindStringSubmatch(out)
	if m == nil {
		return ""
	}
	st, err := os.Stat(m[1])
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("token file %s: %v, %v; want mode 0600", m[1], st, err)
	}
	b, err := os.ReadFile(m[1])
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// startHub runs `steward hub args...` until the test ends and returns its
// stdout once it printed its URL, and a stop function that waits for it.
func startHub(t *testing.T, args ...string) (string, func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	out := &hubOut{}
	var stderr hubOut
	done := make(chan error, 1)
	go func() { done <- Run(ctx, append([]string{"hub"}, args...), out, &stderr) }()
	stop := func() error { cancel(); return <-done }
	for !hubURLRe.MatchString(out.String()) {
		select {
		case err := <-done:
			cancel()
			t.Fatalf("hub exited before serving: %v\nstderr: %s", err, stderr.String())
		case <-time.After(5 * time.Millisecond):
		}
	}
	return out.String(), stop
}

// pinnedClient trusts only the certificate with fingerprint fp.
func pinnedClient(t *testing.T, fp string) *http.Client {
	want, err := pve.ParseFingerprint(fp)
	if err != nil {
		t.Fatalf("printed fingerprint %q: %v", fp, err)
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		InsecureSkipVerify: true, // the pin below replaces the CA check, as agents do
		VerifyConnection: func(cs tls.ConnectionState) error {
			if sha256.Sum256(cs.PeerCertificates[0].Raw) != want {
				return errors.New("certificate does not match the printed fingerprint")
			}
			return nil
		},
	}}}
}

func get(t *testing.T, c *http.Client, url, token string) int {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), "GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestHubFirstStartAndRestart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "hub")
	out, stop := startHub(t, "--data-dir", dir, "--listen", "127.0.0.1:0")
	url, fp := hubURLRe.FindStringSubmatch(out)[1], hubFPRe.FindStringSubmatch(out)
	tok := hubTokenFile(t, out)
	if fp == nil || !strings.HasPrefix(tok, "stwo_") || !strings.HasPrefix(url, "https://127.0.0.1:") {
		t.Fatalf("first start printed:\n%s\nwant an https URL, a fingerprint and the operator token's file", out)
	}
	// The token is in its file, never in the output (which systemd keeps
	// in the journal).
	if strings.Contains(out, tok) || hubTokenRe.MatchString(out) {
		t.Fatalf("first start printed the operator token:\n%s", out)
	}
	if want := filepath.Join(dir, hubAdminTokenFile); !strings.Contains(out, want) {
		t.Fatalf("first start printed:\n%s\nwant the token file %s named", out, want)
	}
	c := pinnedClient(t, fp[1])
	if code := get(t, c, url+"/v1/hosts", tok); code != 200 {
		t.Fatalf("GET /v1/hosts with the printed token: got %d; want 200", code)
	}
	if code := get(t, c, url+"/v1/hosts", "stwo_wrong"); code != 401 {
		t.Fatalf("GET /v1/hosts with a wrong token: got %d; want 401", code)
	}
	if err := stop(); err != nil {
		t.Fatalf("hub stop: %v", err)
	}
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("data dir: %v, %v; want mode 0700", st.Mode(), err)
	}
	if st, err := os.Stat(filepath.Join(dir, hubKeyFile)); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("TLS key: %v; want mode 0600", err)
	}
	db, _ := os.ReadFile(filepath.Join(dir, hubDBFile))
	if strings.Contains(string(db), tok) {
		t.Fatal("the database holds the operator token in clear")
	}

	out2, stop2 := startHub(t, "--data-dir", dir, "--listen", "127.0.0.1:0")
	defer stop2()
	if hubTokenRe.MatchString(out2) || strings.Contains(out2, "Operator token") {
		t.Fatalf("restart printed a new operator token:\n%s", out2)
	}
	if fp2 := hubFPRe.FindStringSubmatch(out2); fp2 == nil || fp2[1] != fp[1] {
		t.Fatalf("restart fingerprint: got %v; want %s (agents pin it)", fp2, fp[1])
	}
	if code := get(t, c, hubURLRe.FindStringSubmatch(out2)[1]+"/v1/hosts", tok); code != 200 {
		t.Fatalf("the first token after restart: got %d; want 200", code)
	}
}

func TestHubInsecureHTTPOnlyOnLoopback(t *testing.T) {
	err := Run(t.Context(), []string{"hub", "--data-dir", t.TempDir(), "--insecure-http", "--listen", "0.0.0.0:0"}, &hubOut{}, &hubOut{})
	var ue *UsageError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("--insecure-http on 0.0.0.0: got %v; want a usage error naming loopback", err)
	}
	out, stop := startHub(t, "--data-dir", t.TempDir(), "--insecure-http", "--listen", "127.0.0.1:0")
	defer stop()
	url := hubURLRe.FindStringSubmatch(out)[1]
	if !strings.HasPrefix(url, "http://127.0.0.1:") {
		t.Fatalf("URL: got %s; want http on loopback", url)
	}
	if code := get(t, http.DefaultClient, url+"/healthz", ""); code != 200 {
		t.Fatalf("/healthz: got %d; want 200", code)
	}
}

func TestHubUsage(t *testing.T) {
	for _, args := range [][]string{
		{"hub"},
		{"hub", "--data-dir", t.TempDir(), "--tls-cert", "x.pem"},
		{"hub", "--data-dir", t.TempDir(), "--poll-interval", "10ms"},
	} {
		err := Run(t.Context(), args, &hubOut{}, &hubOut{})
		var ue *UsageError
		if !errors.As(err, &ue) {
			t.Errorf("%q: got %v; want a usage error", args, err)
		}
	}
}

// TestFirstOperatorTo: the first operator token goes to DIR/admin-token
// (0600), or to a terminal; a hub with neither makes none (a later start
// with a data directory does), so no token exists that nobody saw.
func TestFirstOperatorTo(t *testing.T) {
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "hub.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))

	got, err := firstOperatorTo(t.Context(), st, "", false, log)
	if err != nil || got != (firstToken{}) {
		t.Fatalf("no data dir, no terminal: %+v, %v; want no token", got, err)
	}
	if ops, _ := st.Operators(t.Context()); len(ops) != 0 {
		t.Fatalf("no data dir, no terminal: the store holds operators %+v; want none", ops)
	}
	if !strings.Contains(logs.String(), "--data-dir") {
		t.Errorf("log: %s\nwant how to get a token (--data-dir)", logs.String())
	}

	dir := t.TempDir()
	got, err = firstOperatorTo(t.Context(), st, dir, false, log)
	path := filepath.Join(dir, hubAdminTokenFile)
	if err != nil || got.file != path || got.token != "" {
		t.Fatalf("with a data dir: %+v, %v; want the file %s and no token to print", got, err, path)
	}
	b, err := os.ReadFile(path)
	tok := strings.TrimSpace(string(b))
	if err != nil || !strings.HasPrefix(tok, "stwo_") {
		t.Fatalf("token file: %q, %v", b, err)
	}
	if op, err := st.OperatorByToken(t.Context(), store.HashToken(tok)); err != nil || op.Name != hubAdminOperator {
		t.Fatalf("the file's token: %+v, %v; want the admin operator", op, err)
	}

	// Without a data directory, on a terminal: the token is shown.
	st2, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "hub.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	if got, err := firstOperatorTo(t.Context(), st2, "", true, log); err != nil || !strings.HasPrefix(got.token, "stwo_") || got.file != "" {
		t.Fatalf("no data dir, a terminal: %+v, %v; want the token to print", got, err)
	}

	// Operators exist: nothing is made, the terminal shows nothing.
	got, err = firstOperatorTo(t.Context(), st, "", true, log)
	if err != nil || got != (firstToken{}) {
		t.Fatalf("second start: %+v, %v; want nothing", got, err)
	}
}
