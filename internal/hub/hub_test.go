package hub

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/hub/store"
	"github.com/steward-pve/steward/internal/hub/store/sqlite"
	"github.com/steward-pve/steward/internal/signedop"
	"github.com/steward-pve/steward/internal/signedop/signedoptest"
	"github.com/steward-pve/steward/internal/wire"
)

// syncBuffer is a bytes.Buffer safe for the server's concurrent logging.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type env struct {
	t     testing.TB
	hub   *Server
	url   string
	opTok string
	log   *syncBuffer
	st    store.Store
}

func newEnv(t testing.TB) *env {
	t.Helper()
	return newEnvOpt(t, Options{PollInterval: 30 * time.Second})
}

// newEnvOpt is newEnv with the hub's options (the logger is the env's).
func newEnvOpt(t testing.TB, opt Options) *env {
	t.Helper()
	e := newUnservedEnv(t, opt)
	srv := httptest.NewServer(e.hub.Handler())
	t.Cleanup(func() { e.hub.Shutdown(); srv.Close(); e.hub.Close() })
	e.url = srv.URL
	return e
}

// newUnservedEnv is an env whose hub (on a fresh SQLite store, with
// operator alice, logging to the env's log) is not served yet: the
// caller serves it, sets url, and shuts it down.
func newUnservedEnv(t testing.TB, opt Options) *env {
	t.Helper()
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "hub.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	opTok := NewToken("stwo_")
	if err := st.CreateOperator(t.Context(), "alice", store.HashToken(opTok)); err != nil {
		t.Fatal(err)
	}
	logBuf := &syncBuffer{}
	opt.Logger = slog.New(slog.NewTextHandler(logBuf, nil))
	return &env{t: t, hub: New(st, opt), opTok: opTok, log: logBuf, st: st}
}

// do sends a request and returns status and body.
func (e *env) do(method, path, token string, body []byte, hdr ...string) (int, []byte) {
	e.t.Helper()
	return e.doCtx(e.t.Context(), method, path, token, body, hdr...)
}

func (e *env) doCtx(ctx context.Context, method, path, token string, body []byte, hdr ...string) (int, []byte) {
	req, err := http.NewRequestWithContext(ctx, method, e.url+path, bytes.NewReader(body))
	if err != nil {
		e.t.Error(err)
		return 0, nil
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			e.t.Error(err)
		}
		return 0, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// must is do expecting status want; it decodes the body into v (if not nil).
func (e *env) must(want int, method, path, token string, body []byte, v any, hdr ...string) {
	e.t.Helper()
	got, b := e.do(method, path, token, body, hdr...)
	if got != want {
		e.t.Fatalf("%s %s: got %d %s; want %d", method, path, got, b, want)
	}
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			e.t.Fatalf("%s %s: decoding %s: %v", method, path, b, err)
		}
	}
}

// enroll creates a join token for host and enrolls it, returning the host token.
func (e *env) enroll(host string) string {
	e.t.Helper()
	var jt struct {
		JoinToken string `json:"join_token"`
	}
	e.must(200, "POST", "/v1/hosts/"+host+"/join-token", e.opTok, nil, &jt)
	var er wire.EnrollResponse
	e.must(200, "POST", "/v1/enroll", "", fmt.Appendf(nil, `{"join_token":%q}`, jt.JoinToken), &er)
	if er.Host != host || !strings.HasPrefix(er.Token, "stwh_") {
		e.t.Fatalf("enroll: got %+v; want host %s and a host token", er, host)
	}
	return er.Token
}

func errCode(t *testing.T, b []byte) string {
	t.Helper()
	var ae wire.Error
	if err := json.Unmarshal(b, &ae); err != nil || ae.Error == "" {
		t.Fatalf("error body %s is not JSON {error, code}: %v", b, err)
	}
	return ae.Code
}

const docA = `apiVersion: steward/v1
kind: Fleet
hosts:
  pve-a:
    guests:
      101:
        kind: lxc
        state: running
        config:
          cores: 2
`

func TestEnrollOnce(t *testing.T) {
	e := newEnv(t)
	var jt struct {
		JoinToken string `json:"join_token"`
	}
	e.must(200, "POST", "/v1/hosts/pve-a/join-token", e.opTok, nil, &jt)
	e.must(200, "POST", "/v1/enroll", "", fmt.Appendf(nil, `{"join_token":%q}`, jt.JoinToken), nil)
	code, b := e.do("POST", "/v1/enroll", "", fmt.Appendf(nil, `{"join_token":%q}`, jt.JoinToken))
	if code != 401 || errCode(t, b) != "bad_join_token" {
		t.Fatalf("second enroll with one join token: got %d %s; want 401 bad_join_token", code, b)
	}
}

func TestScoping(t *testing.T) {
	e := newEnv(t)
	tokA, tokB := e.enroll("pve-a"), e.enroll("pve-b")
	e.must(200, "PUT", "/v1/hosts/pve-b/desired", e.opTok, []byte(strings.ReplaceAll(docA, "pve-a", "pve-b")), nil)

	cases := []struct {
		name, method, path, token string
		body                      []byte
		want                      int
	}{
		{"A reads B's desired", "GET", "/v1/agent/hosts/pve-b/desired", tokA, nil, 403},
		{"A reads B's jobs", "GET", "/v1/agent/hosts/pve-b/jobs", tokA, nil, 403},
		{"A reports as B", "POST", "/v1/agent/hosts/pve-b/report", tokA, []byte(`{"host":"pve-b","time":"2026-01-01T00:00:00Z","facts":{"node":"n1"},"guests":[]}`), 403},
		{"A's report naming B on A's path", "POST", "/v1/agent/hosts/pve-a/report", tokA, []byte(`{"host":"pve-b","time":"2026-01-01T00:00:00Z","facts":{"node":"n1"},"guests":[]}`), 400},
		{"host token on the operator API", "GET", "/v1/hosts", tokA, nil, 401},
		{"host token puts desired", "PUT", "/v1/hosts/pve-a/desired", tokA, []byte(docA), 401},
		{"operator token on the agent API", "GET", "/v1/agent/hosts/pve-a/desired", e.opTok, nil, 401},
		{"no token", "GET", "/v1/hosts", "", nil, 401},
		{"garbage token", "GET", "/v1/agent/hosts/pve-a/jobs", "stwh_nope", nil, 401},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, b := e.do(c.method, c.path, c.token, c.body)
			if code != c.want {
				t.Fatalf("got %d %s; want %d", code, b, c.want)
			}
			errCode(t, b)
		})
	}
	// B still reads its own.
	var d wire.Desired
	e.must(200, "GET", "/v1/agent/hosts/pve-b/desired", tokB, nil, &d)
	if d.Generation != 1 || d.Host != "pve-b" {
		t.Fatalf("B's desired: got %+v; want generation 1", d)
	}

	// Revocation takes effect at once.
	e.must(200, "POST", "/v1/hosts/pve-b/revoke", e.opTok, nil, nil)
	if code, b := e.do("GET", "/v1/agent/hosts/pve-b/desired", tokB, nil); code != 401 {
		t.Fatalf("revoked token: got %d %s; want 401", code, b)
	}
}

func TestDesiredPutGetHistory(t *testing.T) {
	e := newEnv(t)
	tok := e.enroll("pve-a")
	var put struct{ Generation int64 }
	e.must(200, "PUT", "/v1/hosts/pve-a/desired", e.opTok, []byte(docA), &put, "If-Match", "0")
	if put.Generation != 1 {
		t.Fatalf("first PUT: got generation %d; want 1", put.Generation)
	}
	code, b := e.do("PUT", "/v1/hosts/pve-a/desired", e.opTok, []byte(docA), "If-Match", "0")
	if code != 412 || errCode(t, b) != "conflict" {
		t.Fatalf("stale If-Match: got %d %s; want 412 conflict", code, b)
	}
	e.must(200, "PUT", "/v1/hosts/pve-a/desired", e.opTok, []byte(strings.Replace(docA, "cores: 2", "cores: 4", 1)), &put, "If-Match", `"1"`)

	var d wire.Desired
	e.must(200, "GET", "/v1/agent/hosts/pve-a/desired", tok, nil, &d)
	if d.Generation != 2 || !bytes.Contains(d.Document, []byte(`"cores":"4"`)) && !bytes.Contains(d.Document, []byte(`"cores":4`)) {
		t.Fatalf("agent's desired: got generation %d %s; want 2 with cores 4", d.Generation, d.Document)
	}
	if _, err := wire.DecodeDesired(mustJSON(t, d)); err != nil {
		t.Fatalf("the served envelope does not decode strictly: %v", err)
	}
	var hist struct {
		History []struct{ Generation int64 } `json:"history"`
	}
	e.must(200, "GET", "/v1/hosts/pve-a/desired/history", e.opTok, nil, &hist)
	if len(hist.History) != 2 || hist.History[0].Generation != 2 {
		t.Fatalf("history: got %+v; want generations 2, 1", hist)
	}

	bad := []struct{ name, doc, want string }{
		{"unknown field", strings.Replace(docA, "state: running", "stat: running", 1), "stat"},
		{"bad value", strings.Replace(docA, "state: running", "state: flying", 1), "flying"},
		{"another host", strings.ReplaceAll(docA, "pve-a", "pve-z"), "pve-z"},
		{"not YAML", "hosts: [", "line"},
	}
	for _, c := range bad {
		code, b := e.do("PUT", "/v1/hosts/pve-a/desired", e.opTok, []byte(c.doc))
		if code != 400 || errCode(t, b) != "bad_document" || !strings.Contains(string(b), c.want) {
			t.Errorf("%s: got %d %s; want 400 bad_document naming %q", c.name, code, b, c.want)
		}
	}
	if code, b := e.do("PUT", "/v1/hosts/ghost/desired", e.opTok, []byte(strings.ReplaceAll(docA, "pve-a", "ghost"))); code != 404 {
		t.Fatalf("PUT for an unknown host: got %d %s; want 404", code, b)
	}
	e.must(200, "GET", "/v1/hosts/pve-a/desired", e.opTok, nil, &d)
	if d.Generation != 2 {
		t.Fatalf("refused PUTs moved the generation to %d; want 2", d.Generation)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestConcurrentIfMatchPuts(t *testing.T) {
	e := newEnv(t)
	e.enroll("pve-a")
	e.must(200, "PUT", "/v1/hosts/pve-a/desired", e.opTok, []byte(docA), nil)
	const n = 10
	codes := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			doc := strings.Replace(docA, "cores: 2", fmt.Sprintf("cores: %d", i+3), 1)
			codes[i], _ = e.do("PUT", "/v1/hosts/pve-a/desired", e.opTok, []byte(doc), "If-Match", "1")
		})
	}
	wg.Wait()
	ok := 0
	for i, c := range codes {
		switch c {
		case 200:
			ok++
		case 412:
		default:
			t.Errorf("PUT %d: got %d; want 200 or 412", i, c)
		}
	}
	if ok != 1 {
		t.Fatalf("%d of %d concurrent PUTs with If-Match 1 succeeded (%v); want exactly 1", ok, n, codes)
	}
	var d wire.Desired
	e.must(200, "GET", "/v1/hosts/pve-a/desired", e.opTok, nil, &d)
	if d.Generation != 2 {
		t.Fatalf("generation: got %d; want 2", d.Generation)
	}
}

// waitHeld waits until the hub holds n long-polls (or the test's context ends).
func waitHeld(t *testing.T, h *Server, n int64) {
	t.Helper()
	for h.HeldPolls() != n {
		select {
		case <-t.Context().Done():
			t.Fatalf("the hub never held %d long-polls", n)
		case <-time.After(time.Millisecond):
		}
	}
}

func TestLongPoll(t *testing.T) {
	e := newEnv(t)
	tok := e.enroll("pve-a")
	e.must(200, "PUT", "/v1/hosts/pve-a/desired", e.opTok, []byte(docA), nil)

	t.Run("answers at once when past after", func(t *testing.T) {
		var d wire.Desired
		e.must(200, "GET", "/v1/agent/hosts/pve-a/desired?after=0&wait=10m", tok, nil, &d)
		if d.Generation != 1 {
			t.Fatalf("got generation %d; want 1", d.Generation)
		}
	})
	t.Run("wakes on PUT", func(t *testing.T) {
		type res struct {
			code int
			body []byte
		}
		ch := make(chan res, 1)
		go func() {
			c, b := e.do("GET", "/v1/agent/hosts/pve-a/desired?after=1&wait=10m", tok, nil)
			ch <- res{c, b}
		}()
		waitHeld(t, e.hub, 1)
		e.must(200, "PUT", "/v1/hosts/pve-a/desired", e.opTok, []byte(strings.Replace(docA, "cores: 2", "cores: 8", 1)), nil)
		r := <-ch
		var d wire.Desired
		if r.code != 200 || json.Unmarshal(r.body, &d) != nil || d.Generation != 2 {
			t.Fatalf("woken long-poll: got %d %s; want 200 generation 2", r.code, r.body)
		}
	})
	t.Run("returns unchanged when wait passes", func(t *testing.T) {
		var d wire.Desired
		e.must(200, "GET", "/v1/agent/hosts/pve-a/desired?after=2&wait=20ms", tok, nil, &d)
		if d.Generation != 2 {
			t.Fatalf("timed-out long-poll: got generation %d; want 2 (unchanged)", d.Generation)
		}
	})
	t.Run("a PUT for another host does not answer it", func(t *testing.T) {
		e.enroll("pve-b")
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan int, 1)
		go func() {
			c, _ := e.doCtx(ctx, "GET", "/v1/agent/hosts/pve-a/desired?after=2&wait=10m", tok, nil)
			done <- c
		}()
		waitHeld(t, e.hub, 1)
		e.must(200, "PUT", "/v1/hosts/pve-b/desired", e.opTok, []byte(strings.ReplaceAll(docA, "pve-a", "pve-b")), nil)
		if e.hub.HeldPolls() != 1 {
			t.Fatalf("after a PUT for pve-b the hub holds %d polls; want pve-a's still held", e.hub.HeldPolls())
		}
		cancel()
		<-done
		waitHeld(t, e.hub, 0)
	})
	t.Run("answered on shutdown", func(t *testing.T) {
		ch := make(chan int, 1)
		go func() {
			c, _ := e.do("GET", "/v1/agent/hosts/pve-a/desired?after=2&wait=10m", tok, nil)
			ch <- c
		}()
		waitHeld(t, e.hub, 1)
		e.hub.Shutdown()
		if c := <-ch; c != 200 {
			t.Fatalf("long-poll at shutdown: got %d; want 200", c)
		}
		if code, _ := e.do("GET", "/readyz", "", nil); code != 503 {
			t.Fatalf("/readyz while shutting down: got %d; want 503", code)
		}
	})
	for _, q := range []string{"after=-1", "after=x", "wait=forever", "wait=-5s"} {
		code, b := e.do("GET", "/v1/agent/hosts/pve-a/desired?"+q, tok, nil)
		if code != 400 || errCode(t, b) != "bad_query" {
			t.Errorf("?%s: got %d %s; want 400 bad_query", q, code, b)
		}
	}
}

func TestParseWait(t *testing.T) {
	for _, c := range []struct {
		in   string
		want time.Duration
	}{{"", DefaultWait}, {"90s", 90 * time.Second}, {"30", 30 * time.Second}, {"1h", MaxWait}, {"0", 0}} {
		if got, err := parseWait(c.in); err != nil || got != c.want {
			t.Errorf("parseWait(%q): got %v, %v; want %v", c.in, got, err, c.want)
		}
	}
}

func report(host string) wire.Report {
	return wire.Report{Host: host, Time: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), Facts: wire.Facts{Node: host}, Guests: []wire.Guest{},
		Pending: []wire.Pending{{Action: wire.Action{Op: "destroy", VMID: 101, Kind: "lxc"}, Reason: "destroys a guest", Payload: []byte("payload\n")}}}
}

func TestReportHeartbeatPending(t *testing.T) {
	e := newEnv(t)
	tok := e.enroll("pve-a")
	body, err := wire.EncodeReport(report("pve-a"))
	if err != nil {
		t.Fatal(err)
	}
	code, b := e.do("POST", "/v1/agent/hosts/pve-a/heartbeat", tok, fmt.Appendf(nil, `{"hash":%q}`, ReportHash(body)))
	if code != 409 || errCode(t, b) != "report_required" {
		t.Fatalf("heartbeat before a report: got %d %s; want 409 report_required", code, b)
	}
	_, raw := e.do("POST", "/v1/agent/hosts/pve-a/report", tok, body)
	c, err := wire.DecodeControl(raw)
	if err != nil || c.PollInterval != 30*time.Second || c.DesiredGeneration != 0 || c.JobsWaiting || c.Blocked {
		t.Fatalf("control: got %+v, %v (%s); want 30s, generation 0", c, err, raw)
	}
	e.must(200, "POST", "/v1/agent/hosts/pve-a/heartbeat", tok, fmt.Appendf(nil, `{"hash":%q}`, ReportHash(body)), nil)

	e.must(200, "POST", "/v1/hosts/pve-a/block", e.opTok, []byte(`{"reason":"disk swap"}`), nil)
	_, raw = e.do("POST", "/v1/agent/hosts/pve-a/heartbeat", tok, fmt.Appendf(nil, `{"hash":%q}`, ReportHash(body)))
	if c, err := wire.DecodeControl(raw); err != nil || !c.Blocked || c.BlockedReason != "disk swap" {
		t.Fatalf("control after block: got %+v, %v; want blocked, disk swap", c, err)
	}

	var p struct{ Pending []wire.Pending }
	e.must(200, "GET", "/v1/hosts/pve-a/pending", e.opTok, nil, &p)
	if len(p.Pending) != 1 || string(p.Pending[0].Payload) != "payload\n" {
		t.Fatalf("pending: got %+v; want the report's one, payload byte for byte", p)
	}
	var h HostJSON
	e.must(200, "GET", "/v1/hosts/pve-a", e.opTok, nil, &h)
	if !bytes.Equal(h.Report, body) || h.LastSeen == nil || !h.Blocked {
		t.Fatalf("host: got %+v; want the report, last seen, blocked", h)
	}
}

func TestBodies(t *testing.T) {
	e := newEnv(t)
	tok := e.enroll("pve-a")
	big := bytes.Repeat([]byte(" "), wire.MaxReportSize+1)
	cases := []struct {
		name, method, path, token string
		body                      []byte
		want                      int
		code                      string
	}{
		{"oversized report", "POST", "/v1/agent/hosts/pve-a/report", tok, big, 413, "too_large"},
		{"oversized desired", "PUT", "/v1/hosts/pve-a/desired", e.opTok, big[:wire.MaxDesiredSize+1], 413, "too_large"},
		{"oversized heartbeat", "POST", "/v1/agent/hosts/pve-a/heartbeat", tok, big[:2000], 413, "too_large"},
		{"malformed report", "POST", "/v1/agent/hosts/pve-a/report", tok, []byte(`{"host":`), 400, "bad_report"},
		{"report with an unknown field", "POST", "/v1/agent/hosts/pve-a/report", tok, []byte(`{"host":"pve-a","time":"2026-01-01T00:00:00Z","facts":{"node":"n1"},"guests":[],"evil":1}`), 400, "bad_report"},
		{"two JSON values", "POST", "/v1/agent/hosts/pve-a/heartbeat", tok, []byte(`{"hash":"a"}{"hash":"b"}`), 400, "bad_body"},
		{"enroll with an unknown field", "POST", "/v1/enroll", "", []byte(`{"join_token":"x","host":"pve-z"}`), 400, "bad_body"},
		{"block without a reason", "POST", "/v1/hosts/pve-a/block", e.opTok, []byte(`{}`), 400, "bad_body"},
		{"malformed job results", "POST", "/v1/agent/hosts/pve-a/job-results", tok, []byte(`{"host":"pve-a","results":[{"job":"zz","state":"done"}]}`), 400, "bad_job_results"},
		{"unknown endpoint", "GET", "/v1/nope", e.opTok, nil, 404, "not_found"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, b := e.do(c.method, c.path, c.token, c.body)
			if code != c.want || errCode(t, b) != c.code {
				t.Fatalf("got %d %s; want %d %s", code, b, c.want, c.code)
			}
		})
	}
}

// signedJob returns a payload for host and one signature of it.
func signedJob(t *testing.T, host string) ([]byte, []byte) {
	t.Helper()
	p, err := signedop.NewPayload(host, action.Action{Op: action.Start, VMID: 101, Kind: guest.LXC}, time.Now(), time.Hour, "test")
	if err != nil {
		t.Fatal(err)
	}
	payload := p.Canonical()
	key := signedoptest.NewKey(t, signedoptest.Ed25519)
	sig, err := signedop.Sign(payload, key.Signer)
	if err != nil {
		t.Fatal(err)
	}
	return payload, sig
}

func TestJobs(t *testing.T) {
	e := newEnv(t)
	tokA := e.enroll("pve-a")
	tokB := e.enroll("pve-b")
	payload, sig := signedJob(t, "pve-a")
	upload := mustJSON(t, JobJSON{Payload: payload, Signatures: [][]byte{sig}})

	if code, b := e.do("POST", "/v1/hosts/pve-b/jobs", e.opTok, upload); code != 400 || errCode(t, b) != "wrong_host" {
		t.Fatalf("a job for pve-a uploaded to pve-b: got %d %s; want 400 wrong_host", code, b)
	}
	for name, body := range map[string][]byte{
		"unsigned":    mustJSON(t, JobJSON{Payload: payload, Signatures: [][]byte{}}),
		"bad sig":     mustJSON(t, JobJSON{Payload: payload, Signatures: [][]byte{[]byte("not a signature")}}),
		"bad payload": mustJSON(t, JobJSON{Payload: []byte("{}"), Signatures: [][]byte{sig}}),
	} {
		if code, b := e.do("POST", "/v1/hosts/pve-a/jobs", e.opTok, body); code != 400 {
			t.Errorf("%s: got %d %s; want 400", name, code, b)
		}
	}
	var up struct{ ID string }
	e.must(200, "POST", "/v1/hosts/pve-a/jobs", e.opTok, upload, &up)
	if up.ID != wire.JobID(payload) {
		t.Fatalf("job id: got %s; want %s", up.ID, wire.JobID(payload))
	}
	var again UploadJSON
	e.must(200, "POST", "/v1/hosts/pve-a/jobs", e.opTok, upload, &again)
	if again.ID != up.ID || again.Created || again.Added != 0 || again.Signatures != 1 {
		t.Fatalf("same job twice: got %+v; want the waiting job, nothing added (idempotent)", again)
	}

	var jobs struct{ Jobs []JobJSON }
	e.must(200, "GET", "/v1/agent/hosts/pve-a/jobs", tokA, nil, &jobs)
	if len(jobs.Jobs) != 1 || !bytes.Equal(jobs.Jobs[0].Payload, payload) || !bytes.Equal(jobs.Jobs[0].Signatures[0], sig) {
		t.Fatalf("agent's jobs: got %+v; want the job byte for byte", jobs)
	}
	e.must(200, "GET", "/v1/agent/hosts/pve-b/jobs", tokB, nil, &jobs)
	if len(jobs.Jobs) != 0 {
		t.Fatalf("pve-b sees %d jobs; want none", len(jobs.Jobs))
	}
	body, _ := wire.EncodeReport(report("pve-a"))
	_, raw := e.do("POST", "/v1/agent/hosts/pve-a/report", tokA, body)
	if c, _ := wire.DecodeControl(raw); !c.JobsWaiting {
		t.Fatalf("control with a job waiting: got %s; want jobs_waiting", raw)
	}

	res := wire.JobResults{Host: "pve-b", Results: []wire.JobResult{{Job: up.ID, State: wire.JobDone}}}
	if code, b := e.do("POST", "/v1/agent/hosts/pve-b/job-results", tokB, mustJSON(t, res)); code != 404 {
		t.Fatalf("pve-b reporting pve-a's job: got %d %s; want 404", code, b)
	}
	res.Host = "pve-a"
	e.must(200, "POST", "/v1/agent/hosts/pve-a/job-results", tokA, mustJSON(t, res), nil)
	e.must(200, "GET", "/v1/agent/hosts/pve-a/jobs", tokA, nil, &jobs)
	if len(jobs.Jobs) != 0 {
		t.Fatalf("jobs after done: got %d waiting; want 0", len(jobs.Jobs))
	}
	e.must(200, "GET", "/v1/hosts/pve-a/jobs", e.opTok, nil, &jobs)
	if len(jobs.Jobs) != 1 || jobs.Jobs[0].State != store.JobDone {
		t.Fatalf("operator's view: got %+v; want one done job", jobs)
	}
}

// TestJobSignaturesMerge is the hub's half of the four-eyes flow: a
// second operator's signature of the same payload joins the waiting job
// (byte for byte, the payload untouched); the same key again adds
// nothing; a signature that does not verify over the payload, a payload
// that reuses a waiting job's nonce, and a job that ended are refused and
// change nothing.
func TestJobSignaturesMerge(t *testing.T) {
	e := newEnv(t)
	tokA := e.enroll("pve-a")
	p, err := signedop.NewPayload("pve-a", action.Action{Op: action.Start, VMID: 101, Kind: guest.LXC}, time.Now(), time.Hour, "test")
	if err != nil {
		t.Fatal(err)
	}
	payload := p.Canonical()
	alice := signedoptest.NewKey(t, signedoptest.Ed25519)
	bob := signedoptest.NewKeyN(t, signedoptest.Ed25519, 1)
	carol := signedoptest.NewKey(t, signedoptest.ECDSAP256)
	sign := func(k *signedoptest.Key, b []byte) []byte {
		s, err := signedop.Sign(b, k.Signer)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	sa, sb := sign(alice, payload), sign(bob, payload)
	upload := func(sigs ...[]byte) []byte { return mustJSON(t, JobJSON{Payload: payload, Signatures: sigs}) }
	agentJob := func() JobJSON {
		t.Helper()
		var jobs struct{ Jobs []JobJSON }
		e.must(200, "GET", "/v1/agent/hosts/pve-a/jobs", tokA, nil, &jobs)
		if len(jobs.Jobs) != 1 || !bytes.Equal(jobs.Jobs[0].Payload, payload) {
			t.Fatalf("agent's jobs: got %+v; want the one job, its payload byte for byte", jobs)
		}
		return jobs.Jobs[0]
	}

	var up UploadJSON
	e.must(200, "POST", "/v1/hosts/pve-a/jobs", e.opTok, upload(sa), &up)
	if !up.Created || up.Added != 1 || up.Signatures != 1 || up.ID != wire.JobID(payload) {
		t.Fatalf("alice's upload: got %+v; want a new job with one signature", up)
	}
	e.must(200, "POST", "/v1/hosts/pve-a/jobs", e.opTok, upload(sb), &up)
	if up.Created || up.Added != 1 || up.Signatures != 2 {
		t.Fatalf("bob's upload: got %+v; want his signature added, two in all", up)
	}
	if j := agentJob(); len(j.Signatures) != 2 || !bytes.Equal(j.Signatures[0], sa) || !bytes.Equal(j.Signatures[1], sb) {
		t.Fatalf("agent's job after the merge: %d signatures; want alice's then bob's, byte for byte", len(j.Signatures))
	}
	e.must(200, "POST", "/v1/hosts/pve-a/jobs", e.opTok, upload(sign(bob, payload), sa), &up)
	if up.Added != 0 || up.Signatures != 2 {
		t.Fatalf("bob and alice again: got %+v; want nothing added (a key counts once)", up)
	}

	other := p
	other.Reason = "same nonce, other bytes"
	for name, c := range map[string]struct {
		body       []byte
		code, what string
	}{
		"a signature over another payload":   {upload(sign(carol, []byte("other"))), "bad_signatures", "does not verify"},
		"a signature in another namespace":   {upload(signedoptest.RawSign(t, payload, carol.Signer, signedoptest.SignOpts{Namespace: "git"})), "bad_signatures", "namespace"},
		"other bytes, a waiting job's nonce": {mustJSON(t, JobJSON{Payload: other.Canonical(), Signatures: [][]byte{sign(carol, other.Canonical())}}), "nonce_conflict", p.Nonce},
	} {
		code, b := e.do("POST", "/v1/hosts/pve-a/jobs", e.opTok, c.body)
		want := 400
		if c.code == "nonce_conflict" {
			want = 409
		}
		if code != want || errCode(t, b) != c.code || !strings.Contains(string(b), c.what) {
			t.Errorf("%s: got %d %s; want %d %s saying %q", name, code, b, want, c.code, c.what)
		}
	}
	if j := agentJob(); len(j.Signatures) != 2 {
		t.Fatalf("after refused uploads: %d signatures; want 2", len(j.Signatures))
	}

	res := wire.JobResults{Host: "pve-a", Results: []wire.JobResult{{Job: up.ID, State: wire.JobDone}}}
	e.must(200, "POST", "/v1/agent/hosts/pve-a/job-results", tokA, mustJSON(t, res), nil)
	code, b := e.do("POST", "/v1/hosts/pve-a/jobs", e.opTok, upload(sign(carol, payload)))
	if code != 409 || errCode(t, b) != "job_final" || !strings.Contains(string(b), "already done") {
		t.Fatalf("a signature for a job that ran: got %d %s; want 409 job_final", code, b)
	}
	var jobs struct{ Jobs []JobJSON }
	e.must(200, "GET", "/v1/hosts/pve-a/jobs", e.opTok, nil, &jobs)
	if len(jobs.Jobs) != 1 || len(jobs.Jobs[0].Signatures) != 2 || jobs.Jobs[0].State != store.JobDone {
		t.Fatalf("operator's view: got %+v; want the one done job with its two signatures", jobs)
	}
}

func TestReceipts(t *testing.T) {
	e := newEnv(t)
	tok := e.enroll("pve-a")
	rs := make([]wire.Receipt, 4)
	for i := range rs {
		rs[i] = wire.Receipt{Time: time.Date(2026, 1, 1, 0, 0, i, 0, time.UTC), Type: wire.ReceiptBegin, Op: fmt.Sprint("op", i)}
	}
	wire.Chain(0, wire.ZeroHash, rs)
	batch := func(r []wire.Receipt) []byte { return mustJSON(t, wire.Receipts{Host: "pve-a", Receipts: r}) }
	var head struct{ Seq uint64 }
	e.must(200, "POST", "/v1/agent/hosts/pve-a/receipts", tok, batch(rs[:2]), &head)
	if head.Seq != 2 {
		t.Fatalf("head: got %d; want 2", head.Seq)
	}
	code, b := e.do("POST", "/v1/agent/hosts/pve-a/receipts", tok, batch(rs[3:]))
	if code != 409 || errCode(t, b) != "chain_gap" || !strings.Contains(string(b), "send from 3") {
		t.Fatalf("a gap: got %d %s; want 409 chain_gap naming seq 3", code, b)
	}
	var gap wire.Error
	if err := json.Unmarshal(b, &gap); err != nil || gap.HaveSeq == nil || *gap.HaveSeq != 2 {
		t.Fatalf("a gap: %s; want have_seq 2 as a field", b)
	}
	e.must(200, "POST", "/v1/agent/hosts/pve-a/receipts", tok, batch(rs[2:]), &head)
	if head.Seq != 4 {
		t.Fatalf("head: got %d; want 4", head.Seq)
	}
}

func TestAuditAndNoTokenInLogs(t *testing.T) {
	e := newEnv(t)
	tok := e.enroll("pve-a")
	e.must(200, "PUT", "/v1/hosts/pve-a/desired", e.opTok, []byte(docA), nil)
	e.must(200, "POST", "/v1/hosts/pve-a/block", e.opTok, []byte(`{"reason":"maintenance"}`), nil)
	e.do("GET", "/v1/agent/hosts/pve-a/desired", tok, nil)
	e.do("GET", "/v1/hosts", "wrong-token", nil)
	var a struct{ Entries []store.AuditEntry }
	e.must(200, "GET", "/v1/audit", e.opTok, nil, &a)
	var actions []string
	for _, en := range a.Entries {
		if en.Actor != "alice" {
			t.Errorf("audit entry %+v: actor %q; want alice", en, en.Actor)
		}
		actions = append(actions, en.Action)
	}
	if want := "host.join_token desired.put host.block"; strings.Join(actions, " ") != want {
		t.Fatalf("audit actions: got %q; want %q", strings.Join(actions, " "), want)
	}
	logs := e.log.String()
	if !strings.Contains(logs, "latency=") || !strings.Contains(logs, "path=/v1/hosts/pve-a/desired") {
		t.Fatalf("request log lacks path or latency:\n%s", logs)
	}
	for _, secret := range []string{tok, e.opTok, "wrong-token"} {
		if strings.Contains(logs, secret) {
			t.Fatalf("the log contains a token:\n%s", logs)
		}
	}
}

func TestPlan(t *testing.T) {
	e := newEnv(t)
	tok := e.enroll("pve-a")
	if code, b := e.do("GET", "/v1/hosts/pve-a/plan", e.opTok, nil); code != 404 || errCode(t, b) != "no_report" {
		t.Fatalf("plan before a report: got %d %s; want 404 no_report", code, b)
	}
	rep := report("pve-a")
	rep.Guests = []wire.Guest{{VMID: 101, Kind: "lxc", Status: "stopped", Digest: "d1", Config: map[string]string{"cores": "1"}}}
	body, _ := wire.EncodeReport(rep)
	e.must(200, "POST", "/v1/agent/hosts/pve-a/report", tok, body, nil)
	e.must(200, "PUT", "/v1/hosts/pve-a/desired", e.opTok, []byte(docA), nil)
	var p PlanJSON
	e.must(200, "GET", "/v1/hosts/pve-a/plan", e.opTok, nil, &p)
	if p.DesiredGeneration != 1 || len(p.Steps) != 2 || len(p.Guests) != 1 || p.Guests[0].Phase != "converging" {
		t.Fatalf("plan: got %+v; want generation 1, a config step and a start, guest 101 converging", p)
	}
	cfg, start := p.Steps[0], p.Steps[1]
	if cfg.Action.Op != "config" || cfg.Action.Params["cores"] != "2" || cfg.Class != "benign" || start.Action.Op != "start" {
		t.Fatalf("steps: got %+v; want config cores=2 (benign) then start", p.Steps)
	}
	if !strings.Contains(p.Text, "101") {
		t.Fatalf("plan text names no guest:\n%s", p.Text)
	}
}

func TestMetrics(t *testing.T) {
	e := newEnv(t)
	tok := e.enroll("pve-a")
	body, _ := wire.EncodeReport(report("pve-a"))
	e.must(200, "POST", "/v1/agent/hosts/pve-a/report", tok, body, nil)
	e.must(200, "POST", "/v1/agent/hosts/pve-a/heartbeat", tok, fmt.Appendf(nil, `{"hash":%q}`, ReportHash(body)), nil)
	e.must(200, "PUT", "/v1/hosts/pve-a/desired", e.opTok, []byte(docA), nil)
	e.must(200, "GET", "/v1/agent/hosts/pve-a/desired?after=0", tok, nil, nil)
	e.must(200, "GET", "/v1/agent/hosts/pve-a/desired?after=0", tok, nil, nil)
	e.hub.sweep(t.Context(), time.Now(), false)
	code, b := e.do("GET", "/metrics", "", nil)
	if code != 200 {
		t.Fatalf("/metrics: got %d", code)
	}
	for _, want := range []string{
		`steward_hub_reports_total{kind="report"} 1`,
		`steward_hub_reports_total{kind="heartbeat"} 1`,
		`steward_hub_desired_propagation_seconds_count 1`,
		`steward_hub_long_polls_held 0`,
		`steward_hub_request_duration_seconds_count{code="OK",route="GET /v1/agent/hosts/{host}/desired"} 2`,
		`steward_hub_connected_agents 1`,
		`steward_hub_enrolled_hosts 1`,
		`steward_hub_poll_interval_seconds 30`,
		`steward_hub_pending_signatures 1`,
		`steward_hub_event_polls_held 0`,
		`steward_hub_store_duration_seconds_count{op="PutReport"} 1`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if strings.Contains(string(b), "pve-a") {
		t.Error("/metrics names a host: label values must stay bounded")
	}
}
