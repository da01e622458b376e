package crashtest

import (
	"crypto/sha256"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/crashpoint"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/proctest"
	"github.com/steward-pve/steward/internal/sim"
)

// agentBin is the crash agent (testdata/crashagent: steward plus a crash
// hook), built once by TestMain without the race detector so that the
// hundreds of agent runs stay fast; the test process itself keeps -race.
var agentBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "steward-crashtest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "crashtest:", err)
		os.Exit(1)
	}
	agentBin, err = proctest.Build(dir, "crashagent", "./testdata/crashagent")
	if err != nil {
		fmt.Fprintln(os.Stderr, "crashtest: building the crash agent:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// crash names where a run is killed: in the agent at a crash point, or by
// the simulator around the n-th mutation request it receives.
type crash struct {
	point  string // crashpoint name, or serverBeforeExec / serverAfterExec
	hits   int    // how many times point is reached in one tick of the scenario
	second string // optional crash point for the restart (a crash during recovery)
}

const (
	serverBeforeExec = "server-before-exec" // the request reached PVE, which never executed it
	serverAfterExec  = "server-after-exec"  // PVE executed it; the response never arrived
)

// The scenario: six mutations across four guests, three of them tasks.
var intended = []string{"config 101", "start 101", "shutdown 102", "config 103", "config 104", "start 104"}

const desiredDoc = `apiVersion: steward/v1
kind: Fleet
hosts:
  pve:
    guests:
      101: {kind: qemu, state: running, config: {cores: 2}}
      102: {kind: lxc, state: stopped}
      103: {kind: qemu, config: {memory: 4096}}
      104: {kind: lxc, state: running, config: {cores: 3}}
`

func guests() []sim.GuestSpec {
	return []sim.GuestSpec{
		{VMID: 101, Kind: guest.QEMU, Name: "web", Config: map[string]string{"cores": "1", "memory": "2048", "scsi0": "local-lvm:vm-101-disk-0,size=32G"}},
		{VMID: 102, Kind: guest.LXC, Name: "db", Running: true, Config: map[string]string{"cores": "1", "memory": "512", "rootfs": "local-lvm:vm-102-disk-0,size=8G"}},
		// 103 runs with memory hotplug, so its memory write applies live
		// (without it, PVE keeps it pending until a restart).
		{VMID: 103, Kind: guest.QEMU, Name: "cache", Running: true, Config: map[string]string{"cores": "1", "memory": "2048", "hotplug": "network,disk,usb,memory", "numa": "1", "scsi0": "local-lvm:vm-103-disk-0,size=32G"}},
		{VMID: 104, Kind: guest.LXC, Name: "queue", Config: map[string]string{"cores": "1", "memory": "512", "rootfs": "local-lvm:vm-104-disk-0,size=8G"}},
		{VMID: 105, Kind: guest.QEMU, Name: "unmanaged", Running: true, Config: map[string]string{"cores": "1", "memory": "1024"}},
	}
}

// scenario is what a crash run converges: the guests the simulator starts
// with, the desired document, the mutations that must each run once, and
// the guests' final state.
type scenario struct {
	nodes     []string       // the simulator's cluster nodes (the agent's is "pve"); nil: one node
	wantNode  map[int]string // the node each of these guests must end on
	guests    []sim.GuestSpec
	templates bool // seed the simulator's creation templates
	doc       string
	intended  []string
	want      map[int]wantGuest
	// settle is how many restarts after the crash may change something
	// before one must find nothing left to do.
	settle int
}

type wantGuest struct {
	status     string
	key, value string
}

// configScenario converges existing guests: config writes and run states.
var configScenario = scenario{guests: guests(), doc: desiredDoc, intended: intended, settle: 2,
	want: map[int]wantGuest{101: {"running", "cores", "2"}, 102: {"stopped", "", ""}, 103: {"running", "memory", "4096"}, 104: {"running", "cores", "3"}}}

// createScenario creates guests (issue 12): a clone of the template, set
// up by cloud-init and started, a container from a template, started, and
// a clone of the container template, set up and started. The first tick
// clones and creates, the next writes config and starts.
var createScenario = scenario{templates: true, settle: 3,
	doc: `apiVersion: steward/v1
kind: Fleet
hosts:
  pve:
    guests:
      120:
        kind: qemu
        state: running
        create: {clone: 9000, full: true, storage: local-lvm}
        config: {name: web-1, cores: 4, ciuser: admin, ipconfig0: "ip=10.0.0.20/24,gw=10.0.0.1"}
      130:
        kind: lxc
        state: running
        create: {ostemplate: "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst", disks: {rootfs: "local-lvm:8"}}
        config: {hostname: ct130, memory: 1024}
      131:
        kind: lxc
        state: running
        create: {clone: 9001}
        config: {hostname: ct131, cores: 2}
`,
	intended: []string{"clone 9000", "config 120", "start 120", "create 130", "start 130", "clone 9001", "config 131", "start 131"},
	want:     map[int]wantGuest{120: {"running", "ciuser", "admin"}, 130: {"running", "unprivileged", "1"}, 131: {"running", "cores", "2"}},
}

// snapshotScenario takes a scheduled snapshot (issue 12 §3): one take,
// which must happen exactly once however the agent dies around it, and
// nothing deleted (the agent has no snapshot of its own to prune yet).
var snapshotScenario = scenario{settle: 2,
	guests: []sim.GuestSpec{{VMID: 140, Kind: guest.LXC, Name: "files", Config: map[string]string{"cores": "1", "memory": "512", "rootfs": "local-lvm:vm-140-disk-0,size=8G"}}},
	doc: `apiVersion: steward/v1
kind: Fleet
hosts:
  pve:
    guests:
      140: {kind: lxc, snapshots: {every: 24h, keep: 1}}
`,
	intended: []string{"snapshot 140"},
	want:     map[int]wantGuest{140: {"stopped", "", ""}},
}

// migrateScenario migrates a running VM and a stopped container to
// another node of the cluster because desired state names that node
// (issue 12 §4): one migrate each, a PVE task each, which must happen
// exactly once however the agent dies around them; afterwards the agent
// finds them moved and has nothing left to do.
var migrateScenario = scenario{settle: 2, nodes: []string{"pve", "pve-b"},
	guests: []sim.GuestSpec{
		{VMID: 150, Kind: guest.QEMU, Name: "app", Running: true, Config: map[string]string{"cores": "1", "memory": "1024", "scsi0": "local-lvm:vm-150-disk-0,size=16G"}},
		{VMID: 250, Kind: guest.LXC, Name: "cache", Config: map[string]string{"cores": "1", "memory": "512", "rootfs": "local-lvm:vm-250-disk-0,size=8G"}},
	},
	doc: `apiVersion: steward/v1
kind: Fleet
hosts:
  pve:
    guests:
      150: {kind: qemu, node: pve-b, state: running}
      250: {kind: lxc, node: pve-b}
`,
	intended: []string{"migrate 150", "migrate 250"},
	want:     map[int]wantGuest{150: {"running", "", ""}, 250: {"stopped", "", ""}},
	wantNode: map[int]string{150: "pve-b", 250: "pve-b"},
}

// migrateCases kill the agent at every point of the tick that migrates
// (two ops, both PVE tasks), and around the requests themselves.
var migrateCases = []crash{
	{point: crashpoint.BeforeBegin, hits: 2},
	{point: crashpoint.AfterBegin, hits: 2},
	{point: crashpoint.AfterTaskReturned, hits: 2},
	{point: crashpoint.AfterTaskRecorded, hits: 2},
	{point: crashpoint.AfterCall, hits: 2},
	{point: crashpoint.AfterEnd, hits: 2},
	{point: serverBeforeExec, hits: 2},
	{point: serverAfterExec, hits: 2},
	{point: crashpoint.AfterTaskReturned, hits: 2, second: crashpoint.AfterResolve},
}

// snapshotCases kill the agent at every point of the take (one op, a PVE
// task), run as subtests "snapshot/..." in parallel with the others; the
// engine's own tests stop a take and a prune at every crash point in
// process.
var snapshotCases = []crash{
	{point: crashpoint.BeforeBegin, hits: 1},
	{point: crashpoint.AfterBegin, hits: 1},
	{point: crashpoint.AfterTaskReturned, hits: 1},
	{point: crashpoint.AfterTaskRecorded, hits: 1},
	{point: crashpoint.AfterCall, hits: 1},
	{point: crashpoint.AfterEnd, hits: 1},
	{point: serverBeforeExec, hits: 1},
	{point: serverAfterExec, hits: 1},
}

// createCases kill the agent in the tick that creates guests
// (createScenario), run as subtests "create/..." of
// TestCrashRecoveryExactlyOnce, in parallel with its others. That tick
// runs three ops (clone, create, container clone), all PVE tasks. The
// engine's own tests (TestCreateSurvivesCrash, TestCloneCTSurvivesCrash)
// stop each at every crash point in process; here the agent dies by
// SIGKILL where that matters most: with the task's UPID not yet
// journaled, and around the request itself. Each case runs a tenth as
// often as the others (twice by default, hitting two of the three ops,
// the cases together each op; the package shares go test's ten-minute
// budget).
var createCases = []crash{
	{point: crashpoint.AfterTaskReturned, hits: 3},
	{point: serverBeforeExec, hits: 3},
	{point: serverAfterExec, hits: 3},
	{point: crashpoint.AfterTaskReturned, hits: 3, second: crashpoint.AfterResolve},
}

func TestCrashRecoveryExactlyOnce(t *testing.T) {
	runs := 20
	if s := os.Getenv("STEWARD_CRASHTEST_RUNS"); s != "" {
		runs, _ = strconv.Atoi(s)
	}
	cases := []crash{
		{point: crashpoint.BeforeBegin, hits: 6},
		{point: crashpoint.AfterBegin, hits: 6},
		{point: crashpoint.AfterTaskReturned, hits: 3},
		{point: crashpoint.AfterTaskRecorded, hits: 3},
		{point: crashpoint.AfterCall, hits: 6},
		{point: crashpoint.AfterEnd, hits: 6},
		{point: serverBeforeExec, hits: 6},
		{point: serverAfterExec, hits: 6},
		{point: crashpoint.AfterTaskReturned, hits: 3, second: crashpoint.AfterResolve},
		{point: crashpoint.AfterBegin, hits: 6, second: crashpoint.BeforeRecover},
		{point: serverAfterExec, hits: 6, second: crashpoint.AfterResolve},
	}
	exe := agentBin
	for ci, c := range createCases {
		name := "create/" + c.point
		if c.second != "" {
			name += "+restart-" + c.second
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			for i := range max(1, runs/10) {
				runScenario(t, exe, createScenario, c, 1+(ci+i)%c.hits)
			}
		})
	}
	for ci, c := range migrateCases {
		name := "migrate/" + c.point
		if c.second != "" {
			name += "+restart-" + c.second
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			for i := range max(1, runs/10) {
				runScenario(t, exe, migrateScenario, c, 1+(ci+i)%c.hits)
			}
		})
	}
	for _, c := range snapshotCases {
		t.Run("snapshot/"+c.point, func(t *testing.T) {
			t.Parallel()
			for range max(1, runs/10) {
				runScenario(t, exe, snapshotScenario, c, 1)
			}
		})
	}
	for _, c := range cases {
		name := c.point
		if c.second != "" {
			name += "+restart-" + c.second
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			for i := range runs {
				runScenario(t, exe, configScenario, c, 1+i%c.hits)
			}
		})
	}
}

// runScenario runs the agent until it is killed at the n-th hit of c's
// point, restarts it (killing it once more when c.second is set), lets it
// finish, and checks the simulator executed each of sc's intended
// mutations once.
func runScenario(t *testing.T, exe string, sc scenario, c crash, n int) {
	t.Helper()
	s, err := sim.New(sim.Options{Node: "pve", Nodes: sc.nodes, TaskDuration: 2 * time.Millisecond, Token: "root@pam!crash=7d9f0c54-crash-test", Templates: sc.templates})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, g := range sc.guests {
		if err := s.AddGuest(g); err != nil {
			t.Fatal(err)
		}
	}
	k := &killer{}
	if strings.HasPrefix(c.point, "server-") {
		k.at, k.n = c.point, n
	}
	srv := httptest.NewUnstartedServer(k.wrap(s.Handler()))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // killed agents leave half-open TLS connections
	srv.StartTLS()
	defer srv.Close()
	sum := sha256.Sum256(srv.Certificate().Raw)
	fp := make([]string, len(sum))
	for i, b := range sum {
		fp[i] = fmt.Sprintf("%02X", b)
	}

	dir := t.TempDir()
	desiredFile := filepath.Join(dir, "desired.yaml")
	if err := os.WriteFile(desiredFile, []byte(sc.doc), 0o600); err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(s.Token()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"agent", "--once", "--node", "pve", "--state-dir", filepath.Join(dir, "state"),
		"--pve-url", srv.URL, "--pve-fingerprint", strings.Join(fp, ":"), "--pve-token-file", tokenFile,
		"--desired", desiredFile, "--task-poll", "2ms", "--task-poll-max", "10ms", "--log-level", "warn"}

	at := ""
	if !strings.HasPrefix(c.point, "server-") {
		at = fmt.Sprintf("%s:%d", c.point, n)
	}
	first := k.run(t, exe, args, at)
	if !first.killed {
		t.Fatalf("%s:%d: first run was not killed (exit %v)\n%s", c.point, n, first.err, first.out)
	}
	if c.second != "" {
		k.disarm()
		second := k.run(t, exe, args, c.second+":1")
		if !second.killed {
			t.Fatalf("%s: restart was not killed at %s (exit %v)\n%s", c.point, c.second, second.err, second.out)
		}
	}
	k.disarm()
	// Restart until converged: runs that resolve and finish the plan,
	// then one that proves nothing is left to do.
	// `agent --once` exits 2 when it changed something, 0 when nothing
	// was left to change.
	for i := range sc.settle {
		r := k.run(t, exe, args, "")
		code := r.exitCode()
		if r.killed || code != 0 && (i == sc.settle-1 || code != 2) {
			t.Fatalf("%s:%d: restart %d failed (exit %d): %v\n%s", c.point, n, i+1, code, r.err, r.out)
		}
		if code == 0 && i > 0 {
			break
		}
	}

	var got []string
	for _, m := range s.Mutations() {
		got = append(got, m.Op+" "+strconv.Itoa(m.VMID))
	}
	a, b := slices.Clone(got), slices.Clone(sc.intended)
	slices.Sort(a)
	slices.Sort(b)
	if !slices.Equal(a, b) {
		t.Fatalf("crash at %s:%d (then %q): simulator executed %v; want each of %v exactly once", c.point, n, c.second, got, sc.intended)
	}
	for vmid, w := range sc.want {
		g, ok := s.Guest(vmid)
		if !ok || g.Status != w.status || (w.key != "" && g.Config[w.key] != w.value) {
			t.Errorf("crash at %s:%d: guest %d = %s %s=%q; want %s %s=%q", c.point, n, vmid, g.Status, w.key, g.Config[w.key], w.status, w.key, w.value)
		}
		if node := sc.wantNode[vmid]; node != "" && g.Node != node {
			t.Errorf("crash at %s:%d: guest %d on node %s; want %s", c.point, n, vmid, g.Node, node)
		}
	}
}

// killer runs the agent child and, when armed, kills it from the
// simulator's side around the n-th mutation request.
type killer struct {
	at string // serverBeforeExec, serverAfterExec or "" (disarmed)
	n  int

	mu    sync.Mutex
	seen  int
	child *os.Process
	dead  chan struct{} // closed once the current child has been reaped
}

func (k *killer) disarm() {
	k.mu.Lock()
	k.at = ""
	k.mu.Unlock()
}

func (k *killer) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet || !strings.HasPrefix(r.URL.Path, "/api2/json/") {
			next.ServeHTTP(w, r)
			return
		}
		k.mu.Lock()
		k.seen++
		hit := k.at != "" && k.seen == k.n
		at, child, dead := k.at, k.child, k.dead
		k.mu.Unlock()
		if !hit {
			next.ServeHTTP(w, r)
			return
		}
		if at == serverAfterExec {
			next.ServeHTTP(httptest.NewRecorder(), r)
		}
		child.Kill()
		<-dead                      // the agent is gone before the connection closes
		panic(http.ErrAbortHandler) // close the connection without a response
	})
}

type result struct {
	killed bool
	err    error
	out    string
}

// exitCode is the child's exit status: 0 on success, -1 when it did not
// exit normally.
func (r result) exitCode() int {
	if r.err == nil {
		return 0
	}
	if ee, ok := r.err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}

func (k *killer) run(t *testing.T, exe string, args []string, at string) result {
	t.Helper()
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), "STEWARD_CRASHTEST_AT="+at)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	dead := make(chan struct{})
	k.mu.Lock()
	k.child, k.dead = cmd.Process, dead
	k.mu.Unlock()
	done := make(chan error, 1)
	go func() {
		err := cmd.Wait()
		close(dead)
		done <- err
	}()
	var err error
	select {
	case err = <-done:
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		<-done
		t.Fatalf("agent child hung\n%s", out.String())
	}
	killed := false
	if ee, ok := err.(*exec.ExitError); ok {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			killed = true
		}
	}
	return result{killed: killed, err: err, out: out.String()}
}
