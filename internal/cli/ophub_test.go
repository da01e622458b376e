package cli

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/steward-pve/steward/internal/hub"
	"github.com/steward-pve/steward/internal/hub/store"
	"github.com/steward-pve/steward/internal/hub/store/sqlite"
	"github.com/steward-pve/steward/internal/hubclient"
	"github.com/steward-pve/steward/internal/tlspin"
	"github.com/steward-pve/steward/internal/wire"
)

// testHub is a real hub (internal/hub over SQLite) on an httptest TLS
// server on loopback, with one operator token, for the operator commands'
// end-to-end tests.
type testHub struct {
	URL         string
	Fingerprint string
	Token       string // operator "admin"
	Store       store.Store
	Server      *hub.Server

	mu     sync.Mutex
	before func(r *http.Request) // called before the hub serves each request
}

// intercept makes f run before the hub serves each request (nil: none),
// for tests that need another operator to act at an exact moment.
func (h *testHub) intercept(f func(r *http.Request)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.before = f
}

func newTestHub(t *testing.T) *testHub {
	t.Helper()
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "hub.db"), sqlite.Options{})
	if err != nil {
		t.Fatalf("sqlite.Open: %v", err)
	}
	tok := hub.NewToken("stwo_")
	if err := st.CreateOperator(t.Context(), "admin", store.HashToken(tok)); err != nil {
		t.Fatalf("CreateOperator: %v", err)
	}
	h := hub.New(st, hub.Options{})
	// A certificate of its own (httptest's is shared by every server),
	// as `steward hub` makes it.
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := ensureSelfSigned(certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	th := &testHub{Store: st, Server: h, Token: tok}
	handler := h.Handler()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		th.mu.Lock()
		f := th.before
		th.mu.Unlock()
		if f != nil {
			f(r)
		}
		handler.ServeHTTP(w, r)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(func() {
		h.Shutdown()
		srv.Close()
		st.Close()
	})
	th.URL, th.Fingerprint = srv.URL, tlspin.Of(srv.Certificate().Raw)
	return th
}

// opEnv is one operator's workstation: a config file path.
type opEnv struct {
	t      *testing.T
	config string
}

func newOpEnv(t *testing.T) *opEnv {
	return &opEnv{t: t, config: filepath.Join(t.TempDir(), "xdg", "steward", "config.yaml")}
}

// run runs `steward args... --login-file CONFIG` with stdin and returns
// stdout, stderr and the error.
func (e *opEnv) run(stdin string, args ...string) (string, string, error) {
	e.t.Helper()
	var out, errb bytes.Buffer
	args = append(args, "--login-file", e.config)
	err := RunIO(e.t.Context(), args, strings.NewReader(stdin), &out, &errb)
	return out.String(), errb.String(), err
}

// login logs e in to h as context name, pinning by flag and reading the
// token from a file.
func (e *opEnv) login(h *testHub, name string) {
	e.t.Helper()
	tf := filepath.Join(e.t.TempDir(), "token")
	if err := os.WriteFile(tf, []byte(h.Token+"\n"), 0o600); err != nil {
		e.t.Fatal(err)
	}
	if _, stderr, err := e.run("", "login", "--hub", h.URL, "--hub-fingerprint", h.Fingerprint, "--token-file", tf, "--context", name); err != nil {
		e.t.Fatalf("login: %v\n%s", err, stderr)
	}
}

// golden compares got with testdata/name, after replace (old, new pairs)
// made it independent of ports and keys; STEWARD_UPDATE_GOLDEN=1
// rewrites the file.
func golden(t *testing.T, name, got string, replace ...string) {
	t.Helper()
	got = strings.NewReplacer(replace...).Replace(got)
	path := filepath.Join("testdata", name)
	if os.Getenv("STEWARD_UPDATE_GOLDEN") == "1" {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("golden file: %v (run the test with STEWARD_UPDATE_GOLDEN=1 to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from the golden file (STEWARD_UPDATE_GOLDEN=1 rewrites it if the change is intended)\ngot:\n%s\nwant:\n%s", name, got, want)
	}
}

// hostsAdd makes a join token for host with `steward hosts add -o json`.
func (e *opEnv) hostsAdd(host string) JoinJSON {
	e.t.Helper()
	out, stderr, err := e.run("", "hosts", "add", host, "-o", "json")
	if err != nil {
		e.t.Fatalf("hosts add %s: %v\n%s", host, err, stderr)
	}
	var j JoinJSON
	if err := json.Unmarshal([]byte(out), &j); err != nil {
		e.t.Fatalf("hosts add -o json: %v\n%s", err, out)
	}
	return j
}

// enrollAgent runs f's agent once with the join command `steward hosts
// add` prints for host (steward agent --hub … --hub-fingerprint …
// --join-token …), as an operator pastes it: the agent enrolls and ticks.
func (e *opEnv) enrollAgent(f *agentFixture, host string) {
	e.t.Helper()
	j := e.hostsAdd(host)
	join := strings.Fields(j.Command)
	if len(join) != 8 || join[0] != "steward" || join[1] != "agent" {
		e.t.Fatalf("join command %q: want steward agent --hub … --hub-fingerprint … --join-token …", j.Command)
	}
	if _, stderr, err := runCLI(e.t, f.args(append([]string{"--once"}, join[2:]...)...)...); ExitCode(err) == ExitFailure || ExitCode(err) == ExitUsage {
		e.t.Fatalf("agent with the printed join command: %v\n%s", err, stderr)
	}
}

// agentClient enrolls host with a join token made through `steward hosts
// add -o json` and returns a client carrying the host's token, as an
// agent holds it.
func (e *opEnv) agentClient(h *testHub, host string) *hubclient.Client {
	e.t.Helper()
	j := e.hostsAdd(host)
	c, err := hubclient.New(hubclient.Options{URL: h.URL, Fingerprint: h.Fingerprint})
	if err != nil {
		e.t.Fatal(err)
	}
	resp, err := c.Enroll(e.t.Context(), j.JoinToken)
	if err != nil {
		e.t.Fatalf("enroll %s: %v", host, err)
	}
	return c.WithToken(resp.Token)
}

// postReport posts r as host r.Host's agent would.
func postReport(t *testing.T, c *hubclient.Client, r wire.Report) {
	t.Helper()
	if err := c.JSON(t.Context(), "POST", "/v1/agent/hosts/"+r.Host+"/report", nil, r, nil); err != nil {
		t.Fatalf("posting the report of %s: %v", r.Host, err)
	}
}

// timeRe matches the RFC 3339 times of -o json/yaml output, for golden
// files.
var timeRe = regexp.MustCompile(`"?\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)"?`)

// stableTimes replaces every time in s with TIME.
func stableTimes(s string) string { return timeRe.ReplaceAllString(s, `"TIME"`) }
