package cli

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

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
)

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
	tok := hubTokenRe.FindStringSubmatch(out)
	if fp == nil || tok == nil || !strings.HasPrefix(url, "https://127.0.0.1:") {
		t.Fatalf("first start printed:\n%s\nwant an https URL, a fingerprint and an operator token", out)
	}
	c := pinnedClient(t, fp[1])
	if code := get(t, c, url+"/v1/hosts", tok[1]); code != 200 {
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
	if strings.Contains(string(db), tok[1]) {
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
	if code := get(t, c, hubURLRe.FindStringSubmatch(out2)[1]+"/v1/hosts", tok[1]); code != 200 {
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
