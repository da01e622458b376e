package cli

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/agent"
	"github.com/steward-pve/steward/internal/hub"
	"github.com/steward-pve/steward/internal/hub/store"
	"github.com/steward-pve/steward/internal/hub/store/sqlite"
	"github.com/steward-pve/steward/internal/hubclient"
	"github.com/steward-pve/steward/internal/tlspin"
)

// cliHub is an in-process hub on loopback TLS with an operator client.
type cliHub struct {
	url, fp string
	op      *hubclient.Client
}

func newCLIHub(t *testing.T) *cliHub {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "hub.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	opTok := hub.NewToken("stwo_")
	if err := st.CreateOperator(t.Context(), "alice", store.HashToken(opTok)); err != nil {
		t.Fatal(err)
	}
	srv := hub.New(st, hub.Options{PollInterval: time.Second})
	web := httptest.NewTLSServer(srv.Handler())
	t.Cleanup(func() { srv.Shutdown(); web.Close(); st.Close() })
	h := &cliHub{url: web.URL, fp: tlspin.Of(web.Certificate().Raw)}
	if h.op, err = hubclient.New(hubclient.Options{URL: h.url, Fingerprint: h.fp, Token: opTok}); err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *cliHub) joinToken(t *testing.T, host string) string {
	t.Helper()
	var out struct {
		JoinToken string `json:"join_token"`
	}
	if err := h.op.JSON(t.Context(), http.MethodPost, "/v1/hosts/"+host+"/join-token", nil, nil, &out); err != nil {
		t.Fatal(err)
	}
	return out.JoinToken
}

func (h *cliHub) putDesired(t *testing.T, host, doc string) {
	t.Helper()
	resp, err := h.op.Do(t.Context(), hubclient.Request{Method: http.MethodPut, Path: "/v1/hosts/" + host + "/desired", Body: []byte(doc)})
	if err == nil {
		err = resp.Err(http.MethodPut, "desired")
	}
	if err != nil {
		t.Fatal(err)
	}
}

// TestAgentEnrollsOnceThenNeedsNoHubFlags: the first run enrolls with the
// hub flags and converges to the hub's document; later runs need only the
// state directory; a wrong --host, or --desired next to the hub, is
// refused; a freeze stops every change until lifted.
func TestAgentEnrollsOnceThenNeedsNoHubFlags(t *testing.T) {
	f := newAgentFixture(t)
	h := newCLIHub(t)
	tok := h.joinToken(t, "pve")
	h.putDesired(t, "pve", strings.ReplaceAll(agentDoc, "state: running, ", ""))

	out, stderr, err := runCLI(t, f.args("--once", "--hub", h.url, "--hub-fingerprint", h.fp, "--join-token", tok)...)
	if ExitCode(err) != ExitChanged || !strings.Contains(out, "ok    config 101 cores=2") {
		t.Fatalf("enrolling run: %v (exit %d); want the hub's cores=2 applied (exit 2)\n%s\n%s", err, ExitCode(err), out, stderr)
	}
	if strings.Contains(stderr, tok) {
		t.Errorf("the join token appears in the log:\n%s", stderr)
	}
	if st, err := os.Stat(filepath.Join(f.state, agent.EnrollmentFile)); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("enrollment file: %v, %v; want it, mode 0600", st, err)
	}

	// Enrolled: no hub flag needed; a join token again is ignored.
	out, stderr, err = runCLI(t, f.args("--once", "--join-token", tok)...)
	if err != nil || !strings.Contains(out, "101 in_sync") || !strings.Contains(stderr, "already enrolled") {
		t.Fatalf("second run: %v\n%s\n%s; want in sync, the join token ignored with a note", err, out, stderr)
	}

	_, _, err = runCLI(t, f.args("--once", "--host", "pve-b")...)
	if err == nil || !strings.Contains(err.Error(), `enrolled this agent as host "pve" but --host is "pve-b"`) {
		t.Errorf("--host mismatch: got %v; want it refused", err)
	}
	_, _, err = runCLI(t, f.args("--once", "--desired", f.desired(t, agentDoc))...)
	if ExitCode(err) != ExitUsage || !strings.Contains(err.Error(), "--desired and a hub exclude each other") {
		t.Errorf("--desired with a hub: got %v (exit %d); want a usage error", err, ExitCode(err))
	}

	// Frozen: the hub's new document is planned and reported, not applied.
	if out, _, err := runCLI(t, "agent", "freeze", "--state-dir", f.state, "--reason", "disk swap"); err != nil || !strings.Contains(out, "frozen: disk swap") {
		t.Fatalf("agent freeze: %v\n%s", err, out)
	}
	h.putDesired(t, "pve", strings.ReplaceAll(strings.ReplaceAll(agentDoc, "state: running, ", ""), "cores: 2", "cores: 3"))
	n := len(f.srv.Sim.Mutations())
	out, _, err = runCLI(t, f.args("--once")...)
	if m := f.srv.Sim.Mutations(); len(m) != n {
		t.Fatalf("a frozen agent changed PVE: %+v", m[n:])
	}
	if !strings.Contains(out, "skip  config 101 cores=3 (frozen (freeze in the state directory): disk swap)") {
		t.Errorf("frozen run output lacks the held action:\n%s (err %v)", out, err)
	}
	if out, _, err := runCLI(t, "agent", "unfreeze", "--state-dir", f.state); err != nil || !strings.Contains(out, "unfrozen") {
		t.Fatalf("agent unfreeze: %v\n%s", err, out)
	}
	out, _, err = runCLI(t, f.args("--once")...)
	if g, _ := f.srv.Sim.Guest(101); g.Config["cores"] != "3" {
		t.Errorf("after unfreeze cores=%s; want 3\n%s (err %v)", g.Config["cores"], out, err)
	}
}
