package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/agent"
	"github.com/steward-pve/steward/internal/allowedsigners"
	"github.com/steward-pve/steward/internal/backoff"
	"github.com/steward-pve/steward/internal/desired"
	"github.com/steward-pve/steward/internal/engine"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/hub"
	"github.com/steward-pve/steward/internal/hub/store"
	"github.com/steward-pve/steward/internal/hub/store/sqlite"
	"github.com/steward-pve/steward/internal/hubclient"
	"github.com/steward-pve/steward/internal/pve"
	"github.com/steward-pve/steward/internal/signedop"
	"github.com/steward-pve/steward/internal/signedop/signedoptest"
	"github.com/steward-pve/steward/internal/sim"
	"github.com/steward-pve/steward/internal/sim/simtest"
	"github.com/steward-pve/steward/internal/tlspin"
	"github.com/steward-pve/steward/internal/wire"
)

// testHub is an in-process hub (SQLite store, TLS on loopback) that can
// be stopped and started again on the same address and database.
type testHub struct {
	t      *testing.T
	dbPath string
	addr   string
	opTok  string
	fp     string

	st  store.Store
	srv *hub.Server
	web *httptest.Server
	op  *hubclient.Client
	// wrap, when set before start, wraps the hub's handler.
	wrap func(http.Handler) http.Handler
}

func startHub(t *testing.T) *testHub {
	t.Helper()
	h := &testHub{t: t, dbPath: filepath.Join(t.TempDir(), "hub.db"), opTok: hub.NewToken("stwo_")}
	h.start()
	if err := h.st.CreateOperator(t.Context(), "alice", store.HashToken(h.opTok)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.stop)
	return h
}

// start opens the store and serves the hub on h.addr (a fresh loopback
// port the first time).
func (h *testHub) start() {
	h.t.Helper()
	st, err := sqlite.Open(context.Background(), h.dbPath, sqlite.Options{})
	if err != nil {
		h.t.Fatal(err)
	}
	h.st = st
	h.srv = hub.New(st, hub.Options{PollInterval: time.Second})
	addr := h.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		h.t.Fatalf("listening on %s: %v", addr, err)
	}
	h.addr = ln.Addr().String()
	var handler http.Handler = h.srv.Handler()
	if h.wrap != nil {
		handler = h.wrap(handler)
	}
	h.web = httptest.NewUnstartedServer(handler)
	h.web.Listener.Close()
	h.web.Listener = ln
	h.web.StartTLS()
	h.fp = tlspin.Of(h.web.Certificate().Raw)
	h.op, err = hubclient.New(hubclient.Options{URL: h.url(), Fingerprint: h.fp, Token: h.opTok})
	if err != nil {
		h.t.Fatal(err)
	}
}

func (h *testHub) url() string { return "https://" + h.addr }

// stop answers held long polls, closes the server and the store.
func (h *testHub) stop() {
	if h.web == nil {
		return
	}
	h.srv.Shutdown()
	h.web.CloseClientConnections()
	h.web.Close()
	h.st.Close()
	h.web = nil
}

func (h *testHub) joinToken(host string) string {
	h.t.Helper()
	var out struct {
		JoinToken string `json:"join_token"`
	}
	if err := h.op.JSON(h.t.Context(), http.MethodPost, "/v1/hosts/"+host+"/join-token", nil, nil, &out); err != nil {
		h.t.Fatal(err)
	}
	return out.JoinToken
}

func (h *testHub) putDesired(host, doc string) int64 {
	h.t.Helper()
	resp, err := h.op.Do(h.t.Context(), hubclient.Request{Method: http.MethodPut, Path: "/v1/hosts/" + host + "/desired",
		Body: []byte(doc), Header: http.Header{"Content-Type": {"application/yaml"}}})
	if err == nil {
		err = resp.Err(http.MethodPut, "desired")
	}
	if err != nil {
		h.t.Fatal(err)
	}
	var out struct {
		Generation int64 `json:"generation"`
	}
	json.Unmarshal(resp.Body, &out)
	return out.Generation
}

// lastReport returns the host's last report on the hub (zero if none).
func (h *testHub) lastReport(host string) wire.Report {
	h.t.Helper()
	var out hub.HostJSON
	if err := h.op.JSON(h.t.Context(), http.MethodGet, "/v1/hosts/"+host, nil, nil, &out); err != nil {
		h.t.Fatal(err)
	}
	if len(out.Report) == 0 {
		return wire.Report{}
	}
	rep, err := wire.DecodeReport(out.Report)
	if err != nil {
		h.t.Fatalf("the hub's last report does not decode: %v", err)
	}
	return rep
}

func (h *testHub) pending(host string) []wire.Pending {
	h.t.Helper()
	var out struct {
		Pending []wire.Pending `json:"pending"`
	}
	if err := h.op.JSON(h.t.Context(), http.MethodGet, "/v1/hosts/"+host+"/pending", nil, nil, &out); err != nil {
		h.t.Fatal(err)
	}
	return out.Pending
}

func (h *testHub) uploadJob(host string, payload []byte, sigs ...[]byte) string {
	h.t.Helper()
	var out struct {
		ID string `json:"id"`
	}
	if err := h.op.JSON(h.t.Context(), http.MethodPost, "/v1/hosts/"+host+"/jobs", nil, hub.JobJSON{Payload: payload, Signatures: sigs}, &out); err != nil {
		h.t.Fatal(err)
	}
	return out.ID
}

func (h *testHub) jobs(host string) []hub.JobJSON {
	h.t.Helper()
	var out struct {
		Jobs []hub.JobJSON `json:"jobs"`
	}
	if err := h.op.JSON(h.t.Context(), http.MethodGet, "/v1/hosts/"+host+"/jobs", nil, nil, &out); err != nil {
		h.t.Fatal(err)
	}
	return out.Jobs
}

// eventually polls cond until it holds or the test's patience ends.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// hubAgent is an agent enrolled with a hub, over a simulator.
type hubAgent struct {
	t      *testing.T
	dir    string
	srv    *simtest.Server
	cancel context.CancelFunc
	done   chan error

	mu    sync.Mutex
	ticks []engine.Report
}

func testHubOptions(c *hubclient.Client, host string) agent.HubOptions {
	return agent.HubOptions{Client: c, Host: host, Wait: 2 * time.Second, RequestTimeout: 5 * time.Second,
		Backoff: backoff.Policy{Initial: 10 * time.Millisecond, Max: 200 * time.Millisecond, Multiplier: 2, Jitter: 0.5}, MinInterval: 100 * time.Millisecond}
}

// runHubAgent connects (enrolling with joinToken when given) and runs the
// agent until the test ends or stop is called.
func runHubAgent(t *testing.T, h *testHub, srv *simtest.Server, dir, joinToken, signers string) *hubAgent {
	t.Helper()
	return runHubAgentWith(t, h, srv, dir, joinToken, signers, nil)
}

// runHubAgentWith is runHubAgent with mod applied to the agent's config
// before it starts (nil: none).
func runHubAgentWith(t *testing.T, h *testHub, srv *simtest.Server, dir, joinToken, signers string, mod func(*agent.Config)) *hubAgent {
	t.Helper()
	client, e, err := agent.Connect(t.Context(), agent.ConnectOptions{StateDir: dir, URL: h.url(), Fingerprint: h.fp, JoinToken: joinToken})
	if err != nil {
		t.Fatal(err)
	}
	hb, err := agent.NewHub(testHubOptions(client, e.Host))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := pve.ParseToken(srv.Token)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := pve.New(pve.Options{URL: srv.URL, Token: tok, HTTPClient: srv.Client})
	if err != nil {
		t.Fatal(err)
	}
	ha := &hubAgent{t: t, dir: dir, srv: srv, done: make(chan error, 1)}
	cfg := agent.Config{Node: srv.Sim.Node(), PVE: pc, TaskUser: tok.ID, StateDir: dir, Hub: hb, Logger: testLogger(t),
		Interval: 200 * time.Millisecond, TaskWait: pve.WaitOptions{Initial: time.Millisecond, Max: 5 * time.Millisecond},
		OnTick: func(rep engine.Report, err error) {
			ha.mu.Lock()
			defer ha.mu.Unlock()
			if err == nil {
				ha.ticks = append(ha.ticks, rep)
			}
		}}
	if signers != "" {
		set, err := allowedsigners.Parse(strings.NewReader(signers))
		if err != nil {
			t.Fatal(err)
		}
		cfg.Signers = set
	}
	if mod != nil {
		mod(&cfg)
	}
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ha.cancel = cancel
	go func() { ha.done <- a.Run(ctx) }()
	t.Cleanup(ha.stop)
	return ha
}

func (ha *hubAgent) stop() {
	if ha.cancel == nil {
		return
	}
	ha.cancel()
	ha.cancel = nil
	if err := <-ha.done; err != nil {
		ha.t.Errorf("agent.Run: %v", err)
	}
}

func (ha *hubAgent) tickCount() int {
	ha.mu.Lock()
	defer ha.mu.Unlock()
	return len(ha.ticks)
}

// mutationsOf returns the simulator's mutations of vmid.
func mutationsOf(srv *simtest.Server, vmid int) []sim.Mutation {
	var out []sim.Mutation
	for _, m := range srv.Sim.Mutations() {
		if m.VMID == vmid {
			out = append(out, m)
		}
	}
	return out
}

const (
	disk0   = "local-lvm:vm-101-disk-0,size=32G"
	newDisk = "local-lvm:vm-101-disk-9,size=32G"
)

func fleetYAML(host, config string) string {
	return fmt.Sprintf("apiVersion: steward/v1\nkind: Fleet\nhosts:\n  %s:\n    guests:\n      101:\n        kind: qemu\n        config: {%s}\n", host, config)
}

func startSim(t *testing.T) *simtest.Server {
	t.Helper()
	srv := simtest.Start(t, sim.Options{TaskDuration: 2 * time.Millisecond})
	if err := srv.Sim.AddGuest(sim.GuestSpec{VMID: 101, Kind: guest.QEMU, Name: "web", Config: map[string]string{"cores": "1", "scsi0": disk0}}); err != nil {
		t.Fatal(err)
	}
	return srv
}

// TestHubEndToEnd: enroll, converge to what the hub holds, report, hold a
// destructive change as pending on the hub, run the operator's signed
// job once and clear it; keep converging to the persisted document while
// the hub is down, and resume when it is back.
func TestHubEndToEnd(t *testing.T) {
	h := startHub(t)
	srv := startSim(t)
	env := signedoptest.NewEnv(t)
	dir := t.TempDir()

	ha := runHubAgent(t, h, srv, dir, h.joinToken("pve"), env.AllowedSigners)
	b, err := os.ReadFile(filepath.Join(dir, agent.EnrollmentFile))
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(filepath.Join(dir, agent.EnrollmentFile)); st.Mode().Perm() != 0o600 {
		t.Errorf("%s mode %v; want 0600 (it holds the host token)", agent.EnrollmentFile, st.Mode().Perm())
	}
	var e agent.Enrollment
	if err := json.Unmarshal(b, &e); err != nil || e.Host != "pve" || e.URL != h.url() || e.Fingerprint != h.fp || !strings.HasPrefix(e.Token, "stwh_") {
		t.Fatalf("enrollment %+v (%v); want host pve, the hub's URL and fingerprint and a host token", e, err)
	}

	// Benign desired state converges, and the report reaches the hub.
	gen := h.putDesired("pve", fleetYAML("pve", "cores: 2"))
	eventually(t, "the agent sets cores=2", func() bool {
		g, _ := srv.Sim.Guest(101)
		return g.Config["cores"] == "2"
	})
	eventually(t, "the hub holds a report in sync at the new generation", func() bool {
		r := h.lastReport("pve")
		return r.DesiredGeneration == gen && len(r.Sync) == 1 && r.Sync[0].Phase == wire.PhaseInSync
	})

	// A destructive change is pending on the hub and never runs.
	h.putDesired("pve", fleetYAML("pve", "cores: 2, scsi0: \""+newDisk+"\""))
	var pend []wire.Pending
	eventually(t, "the disk replacement is pending on the hub", func() bool {
		pend = h.pending("pve")
		return len(pend) == 1 && len(pend[0].Payload) > 0
	})
	before := ha.tickCount()
	eventually(t, "two more ticks", func() bool { return ha.tickCount() >= before+2 })
	for _, m := range mutationsOf(srv, 101) {
		if m.Params["scsi0"] != "" {
			t.Fatalf("the unsigned disk replacement reached PVE: %+v", m)
		}
	}

	// The operator signs the payload; the job runs once and is cleared.
	payload := pend[0].Payload
	id := h.uploadJob("pve", payload, env.Sign(payload, env.Alice.Signer))
	eventually(t, "the hub shows the job done", func() bool {
		js := h.jobs("pve")
		return len(js) == 1 && js[0].State == wire.JobDone
	})
	if id != wire.JobID(payload) {
		t.Errorf("hub job id %s; want the payload's %s", id, wire.JobID(payload))
	}
	ran := 0
	for _, m := range mutationsOf(srv, 101) {
		if m.Params["scsi0"] == newDisk {
			ran++
		}
	}
	if ran != 1 {
		t.Fatalf("the signed disk replacement ran %d times; want once", ran)
	}
	eventually(t, "nothing pending on the hub", func() bool { return len(h.pending("pve")) == 0 })
	// The journal reached the hub as a verified chain naming the signer.
	eventually(t, "the hub holds the signed op's receipts", func() bool {
		rs, err := h.st.Receipts(t.Context(), "pve", 0, 10000)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := wire.VerifyChain(0, wire.ZeroHash, rs); err != nil {
			t.Fatalf("the hub's receipt chain: %v", err)
		}
		for _, r := range rs {
			if r.Type == wire.ReceiptBegin && r.Source == "signed" && len(r.Signers) == 1 && r.Signers[0] == env.Alice.Fingerprint() {
				return true
			}
		}
		return false
	})

	// The hub goes away: the agent keeps converging to the document it
	// persisted.
	h.stop()
	setCores(t, srv, "4") // someone changes the guest meanwhile
	ha.stop()
	ha = runHubAgent(t, h, srv, dir, "", env.AllowedSigners) // restarted while the hub is down
	eventually(t, "the agent restores cores=2 without the hub", func() bool {
		g, _ := srv.Sim.Guest(101)
		return g.Config["cores"] == "2"
	})

	// The hub is back: a new generation reaches the agent.
	h.start()
	gen = h.putDesired("pve", fleetYAML("pve", "cores: 3, scsi0: \""+newDisk+"\""))
	eventually(t, "the agent sets cores=3 from the restarted hub", func() bool {
		g, _ := srv.Sim.Guest(101)
		return g.Config["cores"] == "3"
	})
	eventually(t, "the restarted hub holds a report at the new generation", func() bool {
		return h.lastReport("pve").DesiredGeneration == gen
	})
	for _, m := range mutationsOf(srv, 101) {
		if m.Op == "destroy" {
			t.Fatalf("a destructive call reached PVE: %+v", m)
		}
	}
}

// TestEnrollOnce: a join token given again after enrollment is ignored;
// an agent whose --host is not the enrolled host is refused; a hub URL
// without an enrollment or a join token is refused.
func TestEnrollOnce(t *testing.T) {
	h := startHub(t)
	dir := t.TempDir()
	if _, _, err := agent.Connect(t.Context(), agent.ConnectOptions{StateDir: dir, URL: h.url(), Fingerprint: h.fp}); !errors.Is(err, agent.ErrNotEnrolled) {
		t.Fatalf("a hub without a join token or an enrollment: got %v; want ErrNotEnrolled", err)
	}
	tok := h.joinToken("pve-a")
	c, e, err := agent.Connect(t.Context(), agent.ConnectOptions{StateDir: dir, URL: h.url(), Fingerprint: h.fp, JoinToken: tok})
	if err != nil || c == nil || e.Host != "pve-a" {
		t.Fatalf("enrolling: %v, %+v", err, e)
	}
	// Again, with the (now used) token: ignored, the enrollment is kept.
	_, e2, err := agent.Connect(t.Context(), agent.ConnectOptions{StateDir: dir, JoinToken: tok})
	if err != nil || e2.Token != e.Token {
		t.Fatalf("reconnecting with a used join token: %v; want the saved enrollment kept", err)
	}
	// Without any hub flag the state directory is enough.
	c, _, err = agent.Connect(t.Context(), agent.ConnectOptions{StateDir: dir})
	if err != nil || c == nil {
		t.Fatalf("reconnecting from the state directory alone: %v", err)
	}
	if _, err := c.Jobs(t.Context(), "pve-a"); err != nil {
		t.Errorf("the saved token does not authenticate: %v", err)
	}
	_, _, err = agent.Connect(t.Context(), agent.ConnectOptions{StateDir: dir, Host: "pve-b"})
	if err == nil || !strings.Contains(err.Error(), `enrolled this agent as host "pve-a" but --host is "pve-b"`) {
		t.Errorf("a host id mismatch: got %v; want it refused naming both ids", err)
	}
	// No hub at all: file-only operation.
	if c, e, err := agent.Connect(t.Context(), agent.ConnectOptions{StateDir: t.TempDir()}); c != nil || e != nil || err != nil {
		t.Errorf("no hub: got %v, %v, %v; want nothing", c, e, err)
	}
}

// setCores changes guest 101's cores behind the agent's back.
func setCores(t *testing.T, srv *simtest.Server, cores string) {
	t.Helper()
	tok, err := pve.ParseToken(srv.Token)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := pve.New(pve.Options{URL: srv.URL, Token: tok, HTTPClient: srv.Client})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pc.SetConfig(t.Context(), srv.Sim.Node(), guest.QEMU, 101, pve.ConfigChange{Set: map[string]string{"cores": cores}}); err != nil {
		t.Fatal(err)
	}
}

// hostileHub is a test double of a hub in the wrong hands: it serves
// whatever desired envelope and jobs the test sets, at once, and records
// the job results it is sent.
type hostileHub struct {
	mu          sync.Mutex
	desired     wire.Desired
	jobs        []hubclient.Job
	results     map[string]string // job id -> state
	desiredGets int
}

func (hh *hostileHub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hh.mu.Lock()
	defer hh.mu.Unlock()
	reply := func(v any) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(v)
	}
	switch {
	case r.URL.Path == "/v1/enroll":
		reply(wire.EnrollResponse{Host: "pve", Token: "stwh_hostile"})
	case strings.HasSuffix(r.URL.Path, "/report"), strings.HasSuffix(r.URL.Path, "/heartbeat"):
		reply(wire.Control{PollInterval: time.Second, DesiredGeneration: hh.desired.Generation})
	case strings.HasSuffix(r.URL.Path, "/desired"):
		hh.desiredGets++
		reply(hh.desired)
	case strings.HasSuffix(r.URL.Path, "/jobs"):
		reply(map[string]any{"jobs": hh.jobs})
	case strings.HasSuffix(r.URL.Path, "/job-results"):
		var jr wire.JobResults
		json.NewDecoder(r.Body).Decode(&jr)
		for _, res := range jr.Results {
			hh.results[res.Job] = res.State
		}
		reply(map[string]int{"stored": len(jr.Results)})
	default:
		http.NotFound(w, r)
	}
}

func (hh *hostileHub) serve(d wire.Desired) {
	hh.mu.Lock()
	defer hh.mu.Unlock()
	hh.desired = d
}

func (hh *hostileHub) gets() int {
	hh.mu.Lock()
	defer hh.mu.Unlock()
	return hh.desiredGets
}

func (hh *hostileHub) result(id string) string {
	hh.mu.Lock()
	defer hh.mu.Unlock()
	return hh.results[id]
}

func docJSON(t *testing.T, host, config string) json.RawMessage {
	t.Helper()
	d, err := desiredParse(fleetYAML(host, config))
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestHostileHub: a hub that serves another host's document, rolls the
// generation back, changes the document without a new generation,
// rewrites a signed job's bytes or replays a job that ran causes no
// destructive call: the agent keeps converging to the last document it
// accepted, and a signed job runs exactly once.
func TestHostileHub(t *testing.T) {
	srv := startSim(t)
	if err := srv.Sim.AddGuest(sim.GuestSpec{VMID: 102, Kind: guest.QEMU, Name: "scratch", Config: map[string]string{"scsi0": "local-lvm:vm-102-disk-0,size=8G"}}); err != nil {
		t.Fatal(err)
	}
	env := signedoptest.NewEnv(t)
	hh := &hostileHub{results: map[string]string{}}
	web := httptest.NewTLSServer(hh)
	t.Cleanup(web.Close)
	dir := t.TempDir()
	h := &testHub{addr: strings.TrimPrefix(web.URL, "https://"), fp: tlspin.Of(web.Certificate().Raw)}

	hh.serve(wire.Desired{Host: "pve", Generation: 5, Document: docJSON(t, "pve", "cores: 2")})
	ha := runHubAgent(t, h, srv, dir, "stwj_any", env.AllowedSigners)
	eventually(t, "the agent converges to generation 5 (cores=2)", func() bool {
		g, _ := srv.Sim.Guest(101)
		return g.Config["cores"] == "2"
	})

	refused := []struct {
		name string
		d    wire.Desired
	}{
		{"another host's envelope", wire.Desired{Host: "other", Generation: 6, Document: docJSON(t, "other", "cores: 3, scsi0: \""+newDisk+"\"")}},
		{"a document naming another host", wire.Desired{Host: "pve", Generation: 6, Document: docJSON(t, "other", "cores: 3, scsi0: \""+newDisk+"\"")}},
		{"a rolled-back generation", wire.Desired{Host: "pve", Generation: 3, Document: docJSON(t, "pve", "cores: 1")}},
		{"another document at the held generation", wire.Desired{Host: "pve", Generation: 5, Document: docJSON(t, "pve", "cores: 4")}},
	}
	for _, tt := range refused {
		hh.serve(tt.d)
		n, ticks := hh.gets(), ha.tickCount()
		eventually(t, tt.name+" was fetched and two ticks ran", func() bool { return hh.gets() >= n+2 && ha.tickCount() >= ticks+2 })
		if g, _ := srv.Sim.Guest(101); g.Config["cores"] != "2" || g.Config["scsi0"] != disk0 {
			t.Fatalf("%s: guest 101 is now cores=%s scsi0=%s; want the accepted generation 5 kept (cores=2, %s)", tt.name, g.Config["cores"], g.Config["scsi0"], disk0)
		}
		b, _ := os.ReadFile(filepath.Join(dir, agent.HubStateFile))
		if !strings.Contains(string(b), `"generation":5`) {
			t.Errorf("%s: the persisted state is %s; want generation 5", tt.name, b)
		}
	}

	// An operator's signed destroy of 102, and the same signature over
	// bytes the hub rewrote to destroy 101.
	g102, _ := srv.Sim.Guest(102)
	p, err := signedopNewPayload("pve", 102, g102.Digest)
	if err != nil {
		t.Fatal(err)
	}
	honest := p.Canonical()
	sig := env.Sign(honest, env.Alice.Signer)
	g101, _ := srv.Sim.Guest(101)
	p.VMID, p.Digest = 101, g101.Digest
	rewritten := p.Canonical()
	hh.mu.Lock()
	hh.jobs = []hubclient.Job{{ID: wire.JobID(honest), Payload: rewritten, Signatures: [][]byte{sig}}, {ID: wire.JobID(honest), Payload: honest, Signatures: [][]byte{sig}}}
	hh.mu.Unlock()
	eventually(t, "the honest job is reported done", func() bool { return hh.result(wire.JobID(honest)) == wire.JobDone })
	if got := hh.result(wire.JobID(rewritten)); got != wire.JobRejected {
		t.Errorf("the rewritten job's result is %q; want rejected", got)
	}
	// The hub keeps serving both (a replay): nothing runs again.
	ticks := ha.tickCount()
	eventually(t, "three more ticks", func() bool { return ha.tickCount() >= ticks+3 })
	destroys := 0
	for _, m := range srv.Sim.Mutations() {
		if m.Op == "destroy" {
			destroys++
			if m.VMID != 102 {
				t.Errorf("destroy of %d reached PVE", m.VMID)
			}
		}
		if m.VMID == 101 && m.Params["scsi0"] != "" {
			t.Errorf("a disk change of 101 reached PVE: %+v", m)
		}
	}
	if destroys != 1 {
		t.Errorf("%d destroys reached PVE; want exactly the one signed", destroys)
	}
}

func desiredParse(s string) (*desired.Document, error) { return desired.Parse([]byte(s)) }

// signedopNewPayload is a payload authorizing the destroy of qemu vmid
// (at config digest) on host, valid from a minute ago for an hour.
func signedopNewPayload(host string, vmid int, digest string) (signedop.Payload, error) {
	a := action.Action{Op: action.Destroy, VMID: vmid, Kind: guest.QEMU, Params: map[string]string{"purge": "1", "destroy-unreferenced-disks": "1"}, Digest: digest}
	return signedop.NewPayload(host, a, time.Now().Add(-time.Minute), time.Hour, "test: destroy scratch VM")
}

// TestHubBlock: a host the hub blocked changes nothing, says so in its
// report, stays blocked across a restart while the hub is away, and
// converges once unblocked.
func TestHubBlock(t *testing.T) {
	h := startHub(t)
	srv := startSim(t)
	dir := t.TempDir()
	ha := runHubAgent(t, h, srv, dir, h.joinToken("pve"), "")
	if err := h.op.JSON(t.Context(), http.MethodPost, "/v1/hosts/pve/block", nil, map[string]string{"reason": "maintenance"}, nil); err != nil {
		t.Fatal(err)
	}
	blocked := func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, agent.HubStateFile))
		return strings.Contains(string(b), `"blocked":true`)
	}
	eventually(t, "the agent learns it is blocked", blocked)
	h.putDesired("pve", fleetYAML("pve", "cores: 2"))
	eventually(t, "the hub's report shows the held action", func() bool {
		r := h.lastReport("pve")
		return len(r.Actions) == 1 && r.Actions[0].Skipped == "blocked by the hub: maintenance"
	})
	// Restarted while the hub is down: still blocked.
	h.stop()
	ha.stop()
	ha = runHubAgent(t, h, srv, dir, "", "")
	ticks := ha.tickCount()
	eventually(t, "two ticks without the hub", func() bool { return ha.tickCount() >= ticks+2 })
	if m := mutationsOf(srv, 101); len(m) != 0 {
		t.Fatalf("a blocked agent changed PVE: %+v", m)
	}
	h.start()
	if err := h.op.JSON(t.Context(), http.MethodPost, "/v1/hosts/pve/unblock", nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the unblocked agent sets cores=2", func() bool {
		g, _ := srv.Sim.Guest(101)
		return g.Config["cores"] == "2"
	})
}

// TestHubBlockBeforeFirstTick: a block set on the hub while the agent was
// down holds from the restarted agent's first tick (which would otherwise
// correct drift before its first report is answered); a hub unreachable
// at start leaves the state last heard in force: converging to the
// document held.
func TestHubBlockBeforeFirstTick(t *testing.T) {
	h := startHub(t)
	srv := startSim(t)
	dir := t.TempDir()
	ha := runHubAgent(t, h, srv, dir, h.joinToken("pve"), "")
	h.putDesired("pve", fleetYAML("pve", "cores: 2"))
	cores := func() string { g, _ := srv.Sim.Guest(101); return g.Config["cores"] }
	eventually(t, "cores=2", func() bool { return cores() == "2" })
	ha.stop()

	// While the agent is down: drift on PVE, and a block on the hub.
	// (Each drift is to a value not seen before: the engine runs an
	// action with the idempotency key of one it completed only once.)
	setCores(t, srv, "3")
	if err := h.op.JSON(t.Context(), http.MethodPost, "/v1/hosts/pve/block", nil, map[string]string{"reason": "disk swap"}, nil); err != nil {
		t.Fatal(err)
	}
	before := len(mutationsOf(srv, 101))
	ha = runHubAgent(t, h, srv, dir, "", "")
	eventually(t, "the restarted agent learns it is blocked and ticks held", func() bool {
		r := h.lastReport("pve")
		return ha.tickCount() >= 2 && len(r.Actions) == 1 && r.Actions[0].Skipped == "blocked by the hub: disk swap"
	})
	if m := mutationsOf(srv, 101)[before:]; len(m) != 0 {
		t.Fatalf("the restarted agent changed PVE before it learnt the block: %+v", m)
	}
	ha.stop()

	// Unblocked, then restarted with the hub away: the state last heard
	// (unblocked) stands and the drift is corrected from the document
	// held.
	if err := h.op.JSON(t.Context(), http.MethodPost, "/v1/hosts/pve/unblock", nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	ha = runHubAgent(t, h, srv, dir, "", "")
	eventually(t, "the unblocked agent sets cores=2", func() bool { return cores() == "2" })
	ha.stop()
	setCores(t, srv, "4")
	h.stop()
	ha = runHubAgent(t, h, srv, dir, "", "")
	eventually(t, "cores=2 with the hub away", func() bool { return cores() == "2" })
}

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("AGENT_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, nil))
}

// TestEnrollmentReplicaURLs: --hub given to an enrolled agent replaces
// the saved URLs (several replicas, the agent reaching the one alive),
// unless the run changes nothing (a check, a dry run).
func TestEnrollmentReplicaURLs(t *testing.T) {
	h := startHub(t)
	dir := t.TempDir()
	if _, _, err := agent.Connect(t.Context(), agent.ConnectOptions{StateDir: dir, URL: h.url(), Fingerprint: h.fp, JoinToken: h.joinToken("pve-a")}); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "https://" + ln.Addr().String()
	ln.Close()
	both := dead + "," + h.url()
	c, _, err := agent.Connect(t.Context(), agent.ConnectOptions{StateDir: dir, URL: both})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Jobs(t.Context(), "pve-a"); err != nil {
		t.Fatalf("with one replica down: %v; want the live one to answer", err)
	}
	if e, _ := agent.LoadEnrollment(dir); e.URL != h.url() {
		t.Fatalf("without Update the enrollment holds %q; want it unchanged (%q)", e.URL, h.url())
	}
	if _, _, err := agent.Connect(t.Context(), agent.ConnectOptions{StateDir: dir, URL: both, Update: true}); err != nil {
		t.Fatal(err)
	}
	e, err := agent.LoadEnrollment(dir)
	if err != nil || e.URL != both || e.Fingerprint != h.fp {
		t.Fatalf("after Update: %+v, %v; want url %q and the fingerprint kept", e, err, both)
	}
	c, _, err = agent.Connect(t.Context(), agent.ConnectOptions{StateDir: dir})
	if err != nil || len(c.URLs()) != 2 {
		t.Fatalf("from the state directory alone: %v; want both replica URLs", err)
	}
	// A bad list is refused and leaves the enrollment as it was.
	if _, _, err := agent.Connect(t.Context(), agent.ConnectOptions{StateDir: dir, URL: h.url() + ",", Update: true}); err == nil {
		t.Fatal("a list with an empty URL was accepted")
	}
	if e, _ := agent.LoadEnrollment(dir); e.URL != both {
		t.Fatalf("after a refused update the enrollment holds %q; want %q", e.URL, both)
	}
}
