package crashtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/steward-pve/steward/internal/crashpoint"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/hub"
	"github.com/steward-pve/steward/internal/hubclient"
	"github.com/steward-pve/steward/internal/proctest"
	"github.com/steward-pve/steward/internal/pve"
	"github.com/steward-pve/steward/internal/sim"
	"github.com/steward-pve/steward/internal/tlspin"
	"github.com/steward-pve/steward/internal/wire"
)

// start runs the built steward (agentBin: steward with the crash hook,
// inert unless env sets STEWARD_CRASHTEST_AT) with args.
func start(t *testing.T, name string, env []string, args ...string) *proctest.Proc {
	t.Helper()
	return proctest.Start(t, name, agentBin, env, args...)
}

// e2e is the running system: simulator, hub, agent.
type e2e struct {
	t                   *testing.T
	dir                 string
	simURL, simFP, tok  string
	simHTTP             *http.Client
	pve                 *pve.Client
	hubAddr, hubFP      string
	op                  *hubclient.Client
	hub, agent, simProc *proctest.Proc
	agentArgs           []string
}

func (e *e2e) mutations() []sim.Mutation {
	e.t.Helper()
	req, _ := http.NewRequest("GET", e.simURL+"/_sim/mutations", nil)
	req.Header.Set("Authorization", "PVEAPIToken="+e.tok)
	resp, err := e.simHTTP.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct{ Data []sim.Mutation }
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		e.t.Fatal(err)
	}
	return out.Data
}

// count is how many times the simulator executed op on vmid.
func (e *e2e) count(op string, vmid int) int {
	n := 0
	for _, m := range e.mutations() {
		if m.Op == op && m.VMID == vmid {
			n++
		}
	}
	return n
}

func (e *e2e) simControl(path string, body any) {
	e.t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", e.simURL+path, bytes.NewReader(b))
	req.Header.Set("Authorization", "PVEAPIToken="+e.tok)
	resp, err := e.simHTTP.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		e.t.Fatalf("POST %s: %s", path, resp.Status)
	}
}

func (e *e2e) status(kind guest.Kind, vmid int) string {
	st, err := e.pve.GuestStatus(context.Background(), "pve", kind, vmid)
	if err != nil {
		return "error: " + err.Error()
	}
	return st.Status
}

func (e *e2e) config(kind guest.Kind, vmid int, key string) string {
	c, err := e.pve.GuestConfig(context.Background(), "pve", kind, vmid)
	if err != nil {
		return "error: " + err.Error()
	}
	return fmt.Sprint(c.Values[key])
}

// putDesired PUTs doc as host pve's desired state and returns its
// generation.
func (e *e2e) putDesired(doc string) int64 {
	e.t.Helper()
	resp, err := e.op.Do(e.t.Context(), hubclient.Request{Method: http.MethodPut, Path: "/v1/hosts/pve/desired", Body: []byte(doc)})
	if err == nil {
		err = resp.Err(http.MethodPut, "desired")
	}
	if err != nil {
		e.t.Fatal(err)
	}
	var out struct{ Generation int64 }
	if err := json.Unmarshal(resp.Body, &out); err != nil || out.Generation == 0 {
		e.t.Fatalf("desired PUT answered %s (%v); want its generation", resp.Body, err)
	}
	return out.Generation
}

// trustedKeys makes a fresh ed25519 key with ssh-keygen for each name
// (e.dir/NAME) and an allowed_signers file trusting each as
// NAME@example.com; it returns the keys' paths by name and the file's.
func (e *e2e) trustedKeys(names ...string) (keys map[string]string, allowedFile string) {
	e.t.Helper()
	var allowed strings.Builder
	keys = map[string]string{}
	for _, name := range names {
		key := filepath.Join(e.dir, name)
		if out, err := exec.Command("ssh-keygen", "-q", "-N", "", "-t", "ed25519", "-C", name, "-f", key).CombinedOutput(); err != nil {
			e.t.Fatalf("ssh-keygen: %v: %s", err, out)
		}
		pub, err := os.ReadFile(key + ".pub")
		if err != nil {
			e.t.Fatal(err)
		}
		pf := strings.Fields(string(pub))
		allowed.WriteString(name + "@example.com " + pf[0] + " " + pf[1] + "\n")
		keys[name] = key
	}
	allowedFile = filepath.Join(e.dir, "allowed_signers")
	if err := os.WriteFile(allowedFile, []byte(allowed.String()), 0o600); err != nil {
		e.t.Fatal(err)
	}
	return keys, allowedFile
}

// pveTokenFile writes the simulator's API token where the agent's
// --pve-token-file reads it, and returns that path.
func (e *e2e) pveTokenFile() string {
	e.t.Helper()
	f := filepath.Join(e.dir, "pve-token")
	if err := os.WriteFile(f, []byte(e.tok+"\n"), 0o600); err != nil {
		e.t.Fatal(err)
	}
	return f
}

// startSim runs the simulator (no guests, no templates) and builds the
// clients the test reads it with, pinned to its printed fingerprint.
func (e *e2e) startSim() {
	e.t.Helper()
	e.simProc = start(e.t, "sim", nil, "sim", "--listen", "127.0.0.1:0", "--guests", "0", "--templates=false", "--task-duration", "20ms")
	e.simURL = e.simProc.Line(e.t, `^URL: +(https://\S+)`)
	e.simFP = e.simProc.Line(e.t, `^Fingerprint: +(\S+)`)
	e.tok = e.simProc.Line(e.t, `^Token: +(\S+)`)
	fp, err := tlspin.Parse(e.simFP)
	if err != nil {
		e.t.Fatal(err)
	}
	e.simHTTP = &http.Client{Transport: &http.Transport{TLSClientConfig: tlspin.Config(fp, func(w, g string) error { return fmt.Errorf("sim fingerprint %s, want %s", g, w) })}}
	ptok, err := pve.ParseToken(e.tok)
	if err != nil {
		e.t.Fatal(err)
	}
	if e.pve, err = pve.New(pve.Options{URL: e.simURL, Token: ptok, Fingerprint: e.simFP}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *e2e) startHub() {
	e.hub = start(e.t, "hub", nil, "hub", "--data-dir", filepath.Join(e.dir, "hub"), "--listen", e.hubAddr, "--poll-interval", "5s")
	url := e.hub.Line(e.t, `^URL: +(https://\S+)`)
	fp := e.hub.Line(e.t, `^Fingerprint: +(\S+)`)
	if e.hubFP != "" && fp != e.hubFP {
		e.t.Fatalf("hub restarted with fingerprint %s; want the kept %s", fp, e.hubFP)
	}
	e.hubFP = fp
	e.hubAddr = strings.TrimPrefix(url, "https://")
}

// startOperatorHub starts the hub, logs an operator client in with the
// token it wrote (pinned to its printed fingerprint) and returns a join
// token for host "pve".
func (e *e2e) startOperatorHub() string {
	e.t.Helper()
	e.startHub()
	tokFile := e.hub.Line(e.t, `^Operator token \("admin"\): written to (\S+) `)
	tokBytes, err := os.ReadFile(tokFile)
	if err != nil {
		e.t.Fatal(err)
	}
	opTok := strings.TrimSpace(string(tokBytes))
	if e.op, err = hubclient.New(hubclient.Options{URL: "https://" + e.hubAddr, Fingerprint: e.hubFP, Token: opTok}); err != nil {
		e.t.Fatal(err)
	}
	var jt struct {
		JoinToken string `json:"join_token"`
	}
	if err := e.op.JSON(e.t.Context(), http.MethodPost, "/v1/hosts/pve/join-token", nil, nil, &jt); err != nil {
		e.t.Fatal(err)
	}
	return jt.JoinToken
}

func (e *e2e) logs() string {
	s := "--- agent:\n" + e.agent.Out.String() + "\n--- hub:\n" + e.hub.Out.String()
	if len(s) > 20000 {
		s = s[len(s)-20000:]
	}
	return s
}

// TestEndToEnd runs the built binaries on loopback: simulator, hub and
// agent as processes. The agent enrolls with a join token, converges to
// the desired state an operator PUTs on the hub, holds a destructive
// change (pending on the hub, never executed) until a payload signed
// with a fresh key through ssh-keygen -Y sign is uploaded, runs it once,
// keeps working across a hub restart, and after a SIGKILL in the middle
// of a task runs nothing twice and converges.
func TestEndToEnd(t *testing.T) {
	t.Parallel() // overlaps the crash tests' parallel runs: the package stays within go test's timeout
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		t.Fatalf("ssh-keygen not found (install openssh-client): %v", err)
	}
	e := &e2e{t: t, dir: t.TempDir(), hubAddr: "127.0.0.1:0"}

	// The simulator, with three guests.
	e.startSim()
	for _, g := range []sim.GuestSpec{
		{VMID: 101, Kind: guest.QEMU, Name: "web", Config: map[string]string{"cores": "1", "memory": "1024", "scsi0": "local-lvm:vm-101-disk-0,size=8G"}},
		{VMID: 102, Kind: guest.LXC, Name: "ct", Running: true, Config: map[string]string{"cores": "1", "memory": "512", "rootfs": "local-lvm:vm-102-disk-0,size=4G"}},
		{VMID: 103, Kind: guest.QEMU, Name: "db", Config: map[string]string{"scsi0": "local-lvm:vm-103-disk-0,size=32G", "scsi1": "local-lvm:vm-103-disk-1,size=10G"}},
	} {
		e.simControl("/_sim/guests", g)
	}

	// The hub, and an operator client pinned to its printed fingerprint.
	joinToken := e.startOperatorHub()

	// A fresh operator key the agent trusts.
	keys, allowed := e.trustedKeys("alice")
	key := keys["alice"]
	tokenFile := e.pveTokenFile()

	// Enroll: the join token is needed once; later starts use the state
	// directory alone.
	state := filepath.Join(e.dir, "state")
	e.agentArgs = []string{"agent", "--node", "pve", "--state-dir", state, "--pve-url", e.simURL, "--pve-fingerprint", e.simFP,
		"--pve-token-file", tokenFile, "--allowed-signers", allowed, "--task-poll", "5ms", "--task-poll-max", "20ms", "--log-level", "debug"}
	e.agent = start(t, "agent", nil, append(e.agentArgs, "--hub", "https://"+e.hubAddr, "--hub-fingerprint", e.hubFP, "--join-token", joinToken)...)
	proctest.Eventually(t, "enrollment", func() bool {
		_, err := os.Stat(filepath.Join(state, "hub.json"))
		return err == nil
	}, e.logs)

	// agent check, with the agent's flags and the state directory alone,
	// passes every check, the hub's included.
	check := exec.Command(agentBin, append([]string{"agent", "check"}, e.agentArgs[1:]...)...)
	if out, err := check.CombinedOutput(); err != nil || !strings.Contains(string(out), "PASS hub authentication") || strings.Contains(string(out), "FAIL") {
		t.Fatalf("agent check after enrollment: %v\n%s", err, out)
	}

	// Desired state through the hub: converge (the simulator's mutation
	// record says what ran), and a destructive disk swap on 103 that only
	// shows as pending.
	e.putDesired(`apiVersion: steward/v1
kind: Fleet
hosts:
  pve:
    guests:
      101: {kind: qemu, state: running, config: {cores: 2}}
      103: {kind: qemu, config: {scsi1: "local-lvm:vm-103-disk-7,size=10G"}}
`)
	proctest.Eventually(t, "101 converged", func() bool {
		return e.status(guest.QEMU, 101) == "running" && e.config(guest.QEMU, 101, "cores") == "2"
	}, e.logs)
	var pending struct{ Pending []wire.Pending }
	proctest.Eventually(t, "103's disk swap pending on the hub", func() bool {
		if err := e.op.JSON(t.Context(), http.MethodGet, "/v1/hosts/pve/pending", nil, nil, &pending); err != nil {
			t.Fatal(err)
		}
		return len(pending.Pending) == 1
	}, e.logs)
	if p := pending.Pending[0]; p.Action.VMID != 103 || len(p.Payload) == 0 {
		t.Fatalf("pending = %+v; want 103's config with a payload to sign", p)
	}
	if n := e.count("config", 103); n != 0 {
		t.Fatalf("the destructive change ran %d times without a signature", n)
	}

	// Sign the payload byte for byte with ssh-keygen and upload it.
	payload := filepath.Join(e.dir, "payload.json")
	os.WriteFile(payload, pending.Pending[0].Payload, 0o600)
	if out, err := exec.Command("ssh-keygen", "-Y", "sign", "-f", key, "-n", "steward-op@steward", payload).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen -Y sign: %v: %s", err, out)
	}
	sig, _ := os.ReadFile(payload + ".sig")
	if err := e.op.JSON(t.Context(), http.MethodPost, "/v1/hosts/pve/jobs", nil, hub.JobJSON{Payload: pending.Pending[0].Payload, Signatures: [][]byte{sig}}, nil); err != nil {
		t.Fatal(err)
	}
	proctest.Eventually(t, "the signed job ran", func() bool { return e.count("config", 103) == 1 }, e.logs)
	if got := e.config(guest.QEMU, 103, "scsi1"); !strings.HasPrefix(got, "local-lvm:vm-103-disk-7") {
		t.Fatalf("103 scsi1 = %s after the signed job; want the signed value", got)
	}

	// The hub restarts (same data directory, same address and
	// certificate); the agent keeps converging and comes back to it.
	e.hub.Kill(syscall.SIGTERM)
	e.startHub()
	e.putDesired(`apiVersion: steward/v1
kind: Fleet
hosts:
  pve:
    guests:
      101: {kind: qemu, state: running, config: {cores: 2}}
      102: {kind: lxc, config: {memory: 1024}}
      103: {kind: qemu, config: {scsi1: "local-lvm:vm-103-disk-7,size=10G"}}
`)
	proctest.Eventually(t, "102's memory after the hub restart", func() bool { return e.config(guest.LXC, 102, "memory") == "1024" }, e.logs)

	// The agent is killed with SIGKILL while a task runs (its UPID
	// durable, the task not yet waited on), then started again.
	e.agent.Kill(syscall.SIGTERM)
	e.agent = start(t, "agent", []string{"STEWARD_CRASHTEST_AT=" + crashpoint.AfterTaskRecorded + ":1"}, e.agentArgs...)
	gen := e.putDesired(`apiVersion: steward/v1
kind: Fleet
hosts:
  pve:
    guests:
      101: {kind: qemu, state: running, config: {cores: 2}}
      102: {kind: lxc, state: stopped, config: {memory: 1024}}
      103: {kind: qemu, config: {scsi1: "local-lvm:vm-103-disk-7,size=10G"}}
`)
	<-e.agent.Done()
	if ee, ok := e.agent.Err().(*exec.ExitError); !ok || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("agent was not killed by SIGKILL during the task: %v\n%s", e.agent.Err(), e.logs())
	}
	metricsAddr := proctest.FreeAddr(t)
	e.agent = start(t, "agent", nil, append(e.agentArgs, "--metrics-listen", metricsAddr)...)
	proctest.Eventually(t, "102 stopped after the restart", func() bool { return e.status(guest.LXC, 102) == "stopped" }, e.logs)
	// The restarted agent (the killed one never reported this
	// generation) resolves the interrupted shutdown, ticks over the
	// converged host and reports every guest in sync at this generation.
	proctest.Eventually(t, "the restarted agent reporting the host in sync", func() bool {
		var h struct {
			Report *wire.Report `json:"report"`
		}
		if err := e.op.JSON(t.Context(), http.MethodGet, "/v1/hosts/pve", nil, nil, &h); err != nil || h.Report == nil || h.Report.DesiredGeneration != gen {
			return false
		}
		in := 0
		for _, g := range h.Report.Sync {
			if g.Phase == "in_sync" {
				in++
			}
		}
		return in == 3
	}, e.logs)

	// The restarted agent's metrics count its ticks and time its PVE
	// requests and journal fsyncs (recovery finished the interrupted op).
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatalf("%v\n%s", err, e.logs())
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, w := range []string{`steward_agent_ticks_total{outcome="ok"}`, `steward_agent_pve_request_duration_seconds_count{code="200",method="GET",route="/nodes/{node}/lxc"}`,
		"steward_agent_journal_fsync_duration_seconds_count"} {
		if !strings.Contains(string(body), w) {
			t.Errorf("agent metrics lack %s", w)
		}
	}

	// Nothing ran twice.
	got := map[string]int{}
	for _, m := range e.mutations() {
		got[fmt.Sprintf("%s %d", m.Op, m.VMID)]++
	}
	want := map[string]int{"config 101": 1, "start 101": 1, "config 103": 1, "config 102": 1, "shutdown 102": 1}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("simulator executed %v; want each of %v once\n%s", got, want, e.logs())
	}
}
