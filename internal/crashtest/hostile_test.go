package crashtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/desired"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/hubclient"
	"github.com/steward-pve/steward/internal/proctest"
	"github.com/steward-pve/steward/internal/sim"
	"github.com/steward-pve/steward/internal/tlspin"
	"github.com/steward-pve/steward/internal/wire"
)

// evilHub is a hub in the wrong hands, as a test double in the test
// process: it speaks the hub's agent API (enrollment, reports,
// heartbeats, desired long poll, jobs, job results, receipts) to the real
// built agent, and serves whatever the test sets: any desired envelope at
// any generation, jobs with rewritten bytes, old jobs again, and answers
// that are oversized, malformed or dripped a byte at a time.
type evilHub struct {
	mu      sync.Mutex
	desired []byte // the desired answer's body, as served
	jobs    []hubclient.Job
	// modes per call ("desired", "jobs", "report"): "" answers normally,
	// "oversize", "malformed" or "drip" answer so.
	modes   map[string]string
	reports int         // reports and heartbeats answered
	last    wire.Report // the last full report
	results map[string][]wire.JobResult
	drips   int // dripped answers begun
}

func newEvilHub() *evilHub {
	return &evilHub{modes: map[string]string{}, results: map[string][]wire.JobResult{}}
}

func (h *evilHub) set(f func(h *evilHub)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	f(h)
}

func (h *evilHub) get() (reports, drips int, last wire.Report) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.reports, h.drips, h.last
}

// serveDesired sets the desired envelope served, verbatim.
func (h *evilHub) serveDesired(host string, gen int64, doc string) {
	var raw json.RawMessage
	if doc != "" {
		raw = yamlDocJSON(doc)
	}
	b, _ := json.Marshal(wire.Desired{Host: host, Generation: gen, Document: raw})
	h.set(func(h *evilHub) { h.desired = b })
}

func (h *evilHub) mode(call string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.modes[call]
}

// answer writes body unless the call's mode says otherwise.
func (h *evilHub) answer(w http.ResponseWriter, r *http.Request, call string, body []byte) {
	switch h.mode(call) {
	case "oversize":
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"pad":"`))
		w.Write(bytes.Repeat([]byte("A"), 20<<20))
		w.Write([]byte(`"}`))
	case "malformed":
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"generation": "soon", "host": [1,2` + "\x00"))
	case "drip":
		h.set(func(h *evilHub) { h.drips++ })
		w.Header().Set("Content-Type", "application/json")
		fl, _ := w.(http.Flusher)
		for i := 0; ; i++ {
			if h.mode(call) != "drip" {
				return // the test ended the drip: a truncated answer
			}
			if _, err := w.Write(body[i%len(body) : i%len(body)+1]); err != nil {
				return // the agent gave up
			}
			if fl != nil {
				fl.Flush()
			}
			select {
			case <-r.Context().Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	default:
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	}
}

func (h *evilHub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	const prefix = "/v1/agent/hosts/pve/"
	body, _ := io.ReadAll(io.LimitReader(r.Body, 64<<20))
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/v1/enroll":
		w.Write([]byte(`{"host":"pve","token":"stwh_evil"}`))
	case r.Method == http.MethodPost && (r.URL.Path == prefix+"report" || r.URL.Path == prefix+"heartbeat"):
		h.mu.Lock()
		h.reports++
		if strings.HasSuffix(r.URL.Path, "report") {
			if rep, err := wire.DecodeReport(body); err == nil {
				h.last = rep
			}
		}
		var d wire.Desired
		json.Unmarshal(h.desired, &d)
		h.mu.Unlock()
		h.answer(w, r, "report", fmt.Appendf(nil, `{"poll_interval_s":1,"desired_generation":%d}`, d.Generation))
	case r.Method == http.MethodGet && r.URL.Path == prefix+"desired":
		h.mu.Lock()
		b := h.desired
		h.mu.Unlock()
		if b == nil {
			b = []byte(`{"host":"pve","generation":0}`)
		}
		h.answer(w, r, "desired", b)
	case r.Method == http.MethodGet && r.URL.Path == prefix+"jobs":
		h.mu.Lock()
		b, _ := json.Marshal(map[string]any{"jobs": h.jobs})
		h.mu.Unlock()
		h.answer(w, r, "jobs", b)
	case r.Method == http.MethodPost && r.URL.Path == prefix+"job-results":
		var jr wire.JobResults
		if json.Unmarshal(body, &jr) == nil {
			h.mu.Lock()
			for _, res := range jr.Results {
				h.results[res.Job] = append(h.results[res.Job], res)
			}
			h.mu.Unlock()
		}
		w.Write([]byte(`{}`))
	case r.Method == http.MethodPost && r.URL.Path == prefix+"receipts":
		var rs wire.Receipts
		if err := json.Unmarshal(body, &rs); err != nil || len(rs.Receipts) == 0 {
			http.Error(w, `{"error":"bad receipts","code":"bad_body"}`, http.StatusBadRequest)
			return
		}
		last := rs.Receipts[len(rs.Receipts)-1]
		fmt.Fprintf(w, `{"seq":%d,"hash":%q}`, last.Seq, last.Hash)
	default:
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte(`{"error":"no such path","code":"not_found"}`))
	}
}

// yamlDocJSON is a desired document as the hub serves it: parsed and
// encoded as JSON, as a real hub stores it.
func yamlDocJSON(doc string) json.RawMessage {
	d, err := desired.Parse([]byte(doc))
	if err != nil {
		panic("crashtest: a test document does not parse: " + err.Error())
	}
	b, err := json.Marshal(d)
	if err != nil {
		panic(err)
	}
	return b
}

// TestHostileHubEndToEnd runs the built simulator and agent against a
// hostile hub (evilHub, in the test process): whatever the hub serves —
// desired documents asking to remove, replace or shrink disks, to clear
// protection, to reuse a vmid; signed jobs with rewritten bytes; jobs
// that already ran; a generation rolled back; another host's document;
// oversized, malformed and dripped answers — no destructive call reaches
// PVE (the simulator's mutation record), the agent keeps running and
// says why it refuses, and benign changes still apply.
func TestHostileHubEndToEnd(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		t.Fatalf("ssh-keygen not found (install openssh-client): %v", err)
	}
	began := time.Now()
	e := &e2e{t: t, dir: t.TempDir()}
	e.startSim()
	disks := map[int]map[string]string{
		101: {"scsi0": "local-lvm:vm-101-disk-0,size=8G"},
		102: {"rootfs": "local-lvm:vm-102-disk-0,size=4G"},
		103: {"scsi0": "local-lvm:vm-103-disk-0,size=32G", "scsi1": "local-lvm:vm-103-disk-1,size=10G"},
		105: {"scsi0": "local-lvm:vm-105-disk-0,size=16G"},
	}
	for _, g := range []sim.GuestSpec{
		{VMID: 101, Kind: guest.QEMU, Name: "web", Config: map[string]string{"cores": "1", "memory": "1024", "protection": "1", "scsi0": disks[101]["scsi0"]}},
		{VMID: 102, Kind: guest.LXC, Name: "ct", Running: true, Config: map[string]string{"cores": "1", "memory": "512", "rootfs": disks[102]["rootfs"]}},
		{VMID: 103, Kind: guest.QEMU, Name: "db", Config: map[string]string{"scsi0": disks[103]["scsi0"], "scsi1": disks[103]["scsi1"]}},
		{VMID: 105, Kind: guest.QEMU, Name: "other", Config: map[string]string{"scsi0": disks[105]["scsi0"]}},
	} {
		e.simControl("/_sim/guests", g)
	}

	hub := newEvilHub()
	srv := httptest.NewUnstartedServer(hub)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	hubFP := tlspin.Of(srv.Certificate().Raw)

	// A fresh operator key the agent trusts.
	keys, allowed := e.trustedKeys("alice")
	key := keys["alice"]
	tokenFile := e.pveTokenFile()

	// Phase 1: desired state asking for destructive changes next to a
	// benign one: remove 103's scsi1 (by shrinking it) and move its scsi0
	// to another volume, replace 102's rootfs, clear 101's protection,
	// reuse vmid 105 (a QEMU guest) for a new container.
	hub.serveDesired("pve", 1, `apiVersion: steward/v1
kind: Fleet
hosts:
  pve:
    guests:
      101: {kind: qemu, state: running, config: {cores: 2, protection: 0}}
      102: {kind: lxc, config: {rootfs: "local-lvm:vm-102-disk-9,size=4G"}}
      103: {kind: qemu, config: {scsi0: "local-lvm:vm-103-disk-7,size=32G", scsi1: "local-lvm:vm-103-disk-1,size=1G"}}
      105: {kind: lxc, create: {ostemplate: "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"}}
`)
	state := filepath.Join(e.dir, "state")
	args := []string{"agent", "--node", "pve", "--state-dir", state, "--pve-url", e.simURL, "--pve-fingerprint", e.simFP,
		"--pve-token-file", tokenFile, "--allowed-signers", allowed, "--task-poll", "5ms", "--task-poll-max", "20ms"}
	e.agent = start(t, "agent", nil, append(args, "--hub", srv.URL, "--hub-fingerprint", hubFP, "--join-token", "stwj_whatever")...)
	logs := func() string { return "--- agent:\n" + tail(e.agent.Out.String(), 20000) }
	proctest.Eventually(t, "101 running with cores 2 (benign)", func() bool {
		return e.status(guest.QEMU, 101) == "running" && e.config(guest.QEMU, 101, "cores") == "2"
	}, logs)
	proctest.Eventually(t, "the destructive changes reported as pending signatures", func() bool {
		_, _, last := hub.get()
		held := map[int]bool{}
		for _, p := range last.Pending {
			held[p.Action.VMID] = true
		}
		return held[101] && held[102] && held[103]
	}, logs)
	var vmid105 string
	proctest.Eventually(t, "vmid 105 (a QEMU guest) refused as a container", func() bool {
		_, _, last := hub.get()
		for _, s := range last.Sync {
			if s.VMID == 105 && s.Phase == "error" {
				vmid105 = s.Reason
				return true
			}
		}
		return false
	}, logs)
	t.Logf("105: %s", vmid105)

	t.Logf("phase 2 at %s", time.Since(began).Round(time.Second))
	// Phase 2: a genuine signed job (stop 102) runs once; the hub then
	// serves it again (a replay) and with its bytes rewritten (another
	// vmid, the signature kept): neither runs.
	payload, err := exec.Command(agentBin, "op", "payload", "--host", "pve", "--vmid", "102", "--kind", "lxc", "--op", "stop").Output()
	if err != nil {
		t.Fatalf("op payload: %v", err)
	}
	pfile := filepath.Join(e.dir, "stop102.json")
	os.WriteFile(pfile, payload, 0o600)
	if out, err := exec.Command("ssh-keygen", "-Y", "sign", "-f", key, "-n", "steward-op@steward", pfile).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen -Y sign: %v: %s", err, out)
	}
	sig, _ := os.ReadFile(pfile + ".sig")
	good := hubclient.Job{ID: wire.JobID(payload), Payload: payload, Signatures: [][]byte{sig}}
	hub.set(func(h *evilHub) { h.jobs = []hubclient.Job{good} })
	proctest.Eventually(t, "the signed stop of 102 ran", func() bool { return e.count("stop", 102) == 1 }, logs)
	if _, err := e.pve.Start(t.Context(), "pve", guest.LXC, 102); err != nil {
		t.Fatal(err)
	}
	rewritten := bytes.Replace(payload, []byte(`"vmid":102`), []byte(`"vmid":101`), 1)
	if bytes.Equal(rewritten, payload) {
		t.Fatalf("payload %s has no \"vmid\":102 to rewrite", payload)
	}
	bad := hubclient.Job{ID: good.ID, Payload: rewritten, Signatures: [][]byte{sig}} // the hub even names it by the good job's id
	hub.set(func(h *evilHub) { h.jobs = []hubclient.Job{good, bad} })
	badID := wire.JobID(rewritten)
	proctest.Eventually(t, "the rewritten job rejected with a reason", func() bool {
		hub.mu.Lock()
		defer hub.mu.Unlock()
		rs := hub.results[badID]
		return len(rs) > 0 && rs[len(rs)-1].State == wire.JobRejected && rs[len(rs)-1].Reason != ""
	}, logs)
	reports, _, _ := hub.get()
	proctest.Eventually(t, "three more reports with the replay and the rewrite served", func() bool { r, _, _ := hub.get(); return r >= reports+3 }, logs)

	t.Logf("phase 3 at %s", time.Since(began).Round(time.Second))
	// Phase 3: a benign change at generation 2 applies; the hub then
	// rolls back to generation 1, serves another host's document, and
	// another document at generation 2: each is refused, with its reason.
	gen2 := `apiVersion: steward/v1
kind: Fleet
hosts:
  pve:
    guests:
      101: {kind: qemu, state: running, config: {cores: 3}}
`
	hub.serveDesired("pve", 2, gen2)
	proctest.Eventually(t, "101 cores 3 at generation 2", func() bool { return e.config(guest.QEMU, 101, "cores") == "3" }, logs)
	for _, c := range []struct {
		host string
		gen  int64
		doc  string
		want string
	}{
		{"pve", 1, strings.Replace(gen2, "cores: 3", "cores: 1", 1), "older than the generation 2"},
		{"other", 9, strings.Replace(strings.Replace(gen2, "pve:", "other:", 1), "cores: 3", "cores: 1", 1), `the hub served the desired document of host \"other\"`},
		{"pve", 2, strings.Replace(gen2, "cores: 3", "cores: 1", 1), "another document at generation 2"},
	} {
		hub.serveDesired(c.host, c.gen, c.doc)
		proctest.Eventually(t, "the agent refusing: "+c.want, func() bool { return strings.Contains(e.agent.Out.String(), c.want) }, logs)
	}

	// Phase 4: oversized, malformed and dripped answers. (The report
	// answer is spoilt once each: the agent backs off from a hub whose
	// reports fail, and the test need not wait out long backoffs.)
	t.Logf("phase 4 at %s", time.Since(began).Round(time.Second))
	for _, mode := range []string{"oversize", "malformed"} {
		hub.set(func(h *evilHub) { h.modes = map[string]string{"desired": mode, "jobs": mode, "report": mode} })
		r0, _, _ := hub.get()
		proctest.Eventually(t, "a report answered "+mode, func() bool { r, _, _ := hub.get(); return r >= r0+1 }, logs)
		hub.set(func(h *evilHub) { delete(h.modes, "report") })
		proctest.Eventually(t, "the agent still reporting with "+mode+" desired and jobs answers", func() bool { r, _, _ := hub.get(); return r >= r0+3 }, logs)
	}
	for _, want := range []string{"response larger than", "invalid character"} {
		if !strings.Contains(e.agent.Out.String(), want) {
			t.Errorf("the agent's log does not say %q about the spoilt answers\n%s", want, logs())
		}
	}
	hub.set(func(h *evilHub) { h.modes = map[string]string{"desired": "drip", "jobs": "drip"} })
	proctest.Eventually(t, "dripped answers", func() bool { _, d, _ := hub.get(); return d >= 2 }, logs)
	r0, _, _ := hub.get()
	proctest.Eventually(t, "the agent reporting while answers drip", func() bool { r, _, _ := hub.get(); return r >= r0+1 }, logs)
	hub.set(func(h *evilHub) { h.modes = map[string]string{} })
	t.Logf("phase 4 done at %s", time.Since(began).Round(time.Second))

	// Benign changes still apply afterwards.
	hub.serveDesired("pve", 3, strings.Replace(gen2, "cores: 3", "cores: 4", 1))
	proctest.Eventually(t, "101 cores 4 at generation 3", func() bool { return e.config(guest.QEMU, 101, "cores") == "4" }, logs)

	// The agent never stopped, and PVE saw nothing destructive.
	select {
	case <-e.agent.Done():
		t.Fatalf("the agent exited: %v\n%s", e.agent.Err(), logs())
	default:
	}
	got := map[string]int{}
	for _, m := range e.mutations() {
		got[fmt.Sprintf("%s %d", m.Op, m.VMID)]++
		if m.Op == "config" && m.VMID == 101 {
			for k := range m.Params {
				if k != "cores" && k != "digest" {
					t.Errorf("a config write on 101 carried %s: %+v", k, m.Params)
				}
			}
		}
	}
	want := map[string]int{"config 101": 3, "start 101": 1, "stop 102": 1, "start 102": 1}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("the simulator executed %v; want exactly %v\n%s", got, want, logs())
	}
	for vmid, ds := range disks {
		kind := guest.QEMU
		if vmid == 102 {
			kind = guest.LXC
		}
		for k, v := range ds {
			if g := e.config(kind, vmid, k); g != v {
				t.Errorf("%d %s = %s; want it untouched (%s)", vmid, k, g, v)
			}
		}
	}
	if g := e.config(guest.QEMU, 101, "protection"); g != "1" {
		t.Errorf("101 protection = %s; want it untouched (1)", g)
	}
	e.agent.Kill(syscall.SIGTERM)
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
