package preflight

import (
	"fmt"
	"io"
	"log"
	"net"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/desired"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/hub"
	"github.com/steward-pve/steward/internal/hub/store"
	"github.com/steward-pve/steward/internal/hub/store/sqlite"
	"github.com/steward-pve/steward/internal/hubclient"
	"github.com/steward-pve/steward/internal/pve"
	"github.com/steward-pve/steward/internal/sim"
)

// pveEnv is a simulator served over TLS on loopback.
type pveEnv struct {
	s   *sim.Sim
	srv *httptest.Server
}

func newPVE(t *testing.T) *pveEnv {
	t.Helper()
	s, err := sim.New(sim.Options{Node: "pve", TaskDuration: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	for _, g := range []sim.GuestSpec{
		{VMID: 101, Kind: guest.QEMU, Name: "web", Config: map[string]string{"cores": "1", "memory": "2048", "scsi0": "local-lvm:vm-101-disk-0,size=32G"}},
		{VMID: 102, Kind: guest.LXC, Name: "db", Config: map[string]string{"cores": "1", "memory": "512", "rootfs": "local-lvm:vm-102-disk-0,size=8G"}},
	} {
		if err := s.AddGuest(g); err != nil {
			t.Fatal(err)
		}
	}
	srv := httptest.NewUnstartedServer(s.Handler())
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // failed handshakes are the point of some tests
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return &pveEnv{s: s, srv: srv}
}

func (e *pveEnv) fingerprint() string { return pve.CertFingerprint(e.srv.Certificate().Raw) }

// client returns a client pinned to the simulator, with token tok
// (USER@REALM!TOKENID=SECRET).
func (e *pveEnv) client(t *testing.T, tok string) *pve.Client {
	t.Helper()
	tk, err := pve.ParseToken(tok)
	if err != nil {
		t.Fatal(err)
	}
	c, err := pve.New(pve.Options{URL: e.srv.URL, Token: tk, Fingerprint: e.fingerprint()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// restricted adds a token holding needs on each of paths and returns it.
func (e *pveEnv) restricted(id string, grants map[string][]Need) string {
	privs := map[string][]string{}
	for p, needs := range grants {
		for _, n := range needs {
			privs[p] = append(privs[p], n.Priv)
		}
	}
	e.s.AddToken(id, "s3cret-"+strings.ReplaceAll(id, "!", "-"), privs)
	return id + "=s3cret-" + strings.ReplaceAll(id, "!", "-")
}

func without(needs []Need, priv string) []Need {
	var out []Need
	for _, n := range needs {
		if n.Priv != priv {
			out = append(out, n)
		}
	}
	return out
}

func lines(rs []Result) string {
	var b strings.Builder
	for _, r := range rs {
		b.WriteString(r.String() + "\n")
	}
	return b.String()
}

// failed returns the failed results.
func failed(rs []Result) []Result {
	var out []Result
	for _, r := range rs {
		if !r.OK {
			out = append(out, r)
		}
	}
	return out
}

func TestAllPassWithTheNeededPrivileges(t *testing.T) {
	e := newPVE(t)
	for name, tok := range map[string]string{
		"admin":                                  e.s.Token(),
		"exactly the needs on /vms and /storage": e.restricted("steward@pve!agent", map[string][]Need{"/vms": GuestNeeds, "/storage": StorageNeeds}),
	} {
		t.Run(name, func(t *testing.T) {
			rs := Run(t.Context(), Config{PVE: e.client(t, tok), PVEURL: e.srv.URL, Node: "pve"})
			if !Passed(rs) {
				t.Fatalf("want every check to pass:\n%s", lines(rs))
			}
			var checks []string
			for _, r := range rs {
				checks = append(checks, r.Check)
			}
			want := "pve reachable,pve tls,pve token,pve node,pve privileges /vms,pve privileges /storage"
			if got := strings.Join(checks, ","); got != want {
				t.Errorf("checks %s; want %s", got, want)
			}
		})
	}
}

// TestEachMissingPrivilegeIsNamed: without any one needed privilege the
// check fails on the path it is missing on and names it.
func TestEachMissingPrivilegeIsNamed(t *testing.T) {
	e := newPVE(t)
	for i, n := range append(append([]Need{}, GuestNeeds...), StorageNeeds...) {
		path := "/vms"
		grants := map[string][]Need{"/vms": without(GuestNeeds, n.Priv), "/storage": StorageNeeds}
		if strings.HasPrefix(n.Priv, "Datastore.") {
			path = "/storage"
			grants = map[string][]Need{"/vms": GuestNeeds, "/storage": without(StorageNeeds, n.Priv)}
		}
		tok := e.restricted(fmt.Sprintf("steward@pve!t%d", i), grants)
		rs := Run(t.Context(), Config{PVE: e.client(t, tok), Node: "pve"})
		f := failed(rs)
		if len(f) != 1 || f[0].Check != "pve privileges "+path || !strings.Contains(f[0].Detail, "missing "+n.Priv+" (to "+n.For+")") ||
			!strings.Contains(f[0].Fix, path) {
			t.Errorf("without %s: want one failure on %s naming it:\n%s", n.Priv, path, lines(rs))
		}
		if Passed(rs) {
			t.Errorf("without %s: Passed = true", n.Priv)
		}
	}
}

// TestDesiredGuestsAndStorages: with desired state the check asks PVE
// about each managed guest and each storage its disks name, so grants on
// a guest, through a pool or on one storage count, and a config key
// needing a privilege beyond the usual ones is checked too.
func TestDesiredGuestsAndStorages(t *testing.T) {
	e := newPVE(t)
	if err := e.s.AddPool(sim.PoolSpec{PoolID: "web", VMIDs: []int{101}}); err != nil {
		t.Fatal(err)
	}
	doc, err := desired.Parse([]byte(`apiVersion: steward/v1
kind: Fleet
hosts:
  pve:
    guests:
      101: {kind: qemu, config: {cores: 2, scsi1: "local-lvm:4", ipconfig0: "ip=dhcp"}}
      102: {kind: lxc, state: running}
`))
	if err != nil {
		t.Fatal(err)
	}
	want := doc.ForHost("pve")
	cloudinit := append([]Need{{Priv: "VM.Config.Cloudinit"}}, GuestNeeds...)
	ok := e.restricted("steward@pve!pool", map[string][]Need{"/pool/web": cloudinit, "/vms/102": GuestNeeds, "/storage/local-lvm": StorageNeeds})
	rs := Run(t.Context(), Config{PVE: e.client(t, ok), Node: "pve", Desired: want})
	if !Passed(rs) {
		t.Fatalf("grants through a pool, on a guest and on one storage: want all to pass:\n%s", lines(rs))
	}
	var checks []string
	for _, r := range rs[4:] {
		checks = append(checks, r.Check)
	}
	if got := strings.Join(checks, ","); got != "pve privileges /vms/101,pve privileges /vms/102,pve privileges /storage/local-lvm" {
		t.Errorf("privilege checks %s; want /vms/101, /vms/102, /storage/local-lvm", got)
	}

	short := e.restricted("steward@pve!short", map[string][]Need{"/pool/web": GuestNeeds, "/vms/102": GuestNeeds})
	f := failed(Run(t.Context(), Config{PVE: e.client(t, short), Node: "pve", Desired: want}))
	if len(f) != 2 || f[0].Check != "pve privileges /vms/101" || !strings.Contains(f[0].Detail, "VM.Config.Cloudinit (to set ipconfig0)") ||
		f[1].Check != "pve privileges /storage/local-lvm" || !strings.Contains(f[1].Detail, "Datastore.AllocateSpace") {
		t.Errorf("want /vms/101 missing VM.Config.Cloudinit and /storage/local-lvm missing Datastore.AllocateSpace; got:\n%s", lines(f))
	}
}

// TestNeedsSuffice: a token holding exactly GuestNeeds on /vms and
// StorageNeeds on /storage can make every call the engine and executor
// make, against the simulator's permission checks (PVE's schema plus the
// handlers' per-key and storage checks).
func TestNeedsSuffice(t *testing.T) {
	e := newPVE(t)
	c := e.client(t, e.restricted("steward@pve!exact", map[string][]Need{"/vms": GuestNeeds, "/storage": StorageNeeds}))
	ctx := t.Context()
	wait := func(what string, r pve.Result, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if upid, ok := r.Task(); ok {
			if _, err := c.WaitTask(ctx, upid, pve.WaitOptions{Initial: time.Millisecond, Max: 5 * time.Millisecond}); err != nil {
				t.Fatalf("%s task: %v", what, err)
			}
		}
	}
	for _, k := range []guest.Kind{guest.QEMU, guest.LXC} {
		if _, err := c.Guests(ctx, "pve", k); err != nil {
			t.Fatalf("list %s: %v", k, err)
		}
	}
	if _, err := c.ConfigWithPending(ctx, "pve", guest.QEMU, 101); err != nil {
		t.Fatalf("pending: %v", err)
	}
	if _, err := c.Tasks(ctx, "pve", pve.TaskQuery{Limit: 5}); err != nil {
		t.Fatalf("tasks: %v", err)
	}
	r, err := c.SetConfig(ctx, "pve", guest.QEMU, 101, pve.ConfigChange{Set: map[string]string{
		"cores": "2", "memory": "4096", "net0": "virtio,bridge=vmbr0", "name": "web2", "description": "d", "tags": "a", "onboot": "1", "startup": "order=1"}})
	wait("config qemu", r, err)
	r, err = c.SetConfig(ctx, "pve", guest.LXC, 102, pve.ConfigChange{Set: map[string]string{"cores": "2", "memory": "1024", "hostname": "db2"}})
	wait("config lxc", r, err)
	r, err = c.Resize(ctx, "pve", guest.QEMU, 101, "scsi0", "+1G", "")
	wait("resize", r, err)
	r, err = c.Start(ctx, "pve", guest.QEMU, 101)
	wait("start", r, err)
	r, err = c.Reboot(ctx, "pve", guest.QEMU, 101, time.Second)
	wait("reboot", r, err)
	r, err = c.Shutdown(ctx, "pve", guest.QEMU, 101, pve.ShutdownOptions{Timeout: time.Second, ForceStop: true})
	wait("shutdown", r, err)
	r, err = c.SnapshotCreate(ctx, "pve", guest.QEMU, 101, "before", "")
	wait("snapshot", r, err)
	if _, err := c.Snapshots(ctx, "pve", guest.QEMU, 101); err != nil {
		t.Fatalf("snapshots: %v", err)
	}
	r, err = c.SnapshotRollback(ctx, "pve", guest.QEMU, 101, "before")
	wait("rollback", r, err)
	r, err = c.SnapshotDelete(ctx, "pve", guest.QEMU, 101, "before")
	wait("snapshot delete", r, err)
	r, err = c.Start(ctx, "pve", guest.LXC, 102)
	wait("start lxc", r, err)
	r, err = c.Stop(ctx, "pve", guest.LXC, 102)
	wait("stop lxc", r, err)
	r, err = c.Create(ctx, "pve", guest.QEMU, 110, map[string]string{"name": "new", "memory": "1024", "cores": "1", "scsi0": "local-lvm:4", "net0": "virtio,bridge=vmbr0"})
	wait("create qemu", r, err)
	r, err = c.Destroy(ctx, "pve", guest.QEMU, 110, pve.DestroyOptions{Purge: true})
	wait("destroy", r, err)
}

func TestConnectionFailures(t *testing.T) {
	e := newPVE(t)
	tok, err := pve.ParseToken(e.s.Token())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "https://" + ln.Addr().String()
	ln.Close()
	bad, _ := pve.ParseToken("nobody@pve!none=00000000-0000-0000-0000-000000000000")
	tests := []struct {
		name      string
		opts      pve.Options
		passed    []string
		failCheck string
		failHas   string
	}{
		{"nothing listens", pve.Options{URL: closed, Token: tok, InsecureSkipVerify: true},
			nil, "pve reachable", "connection refused"},
		{"wrong pin", pve.Options{URL: e.srv.URL, Token: tok, Fingerprint: strings.Repeat("AB:", 31) + "AB"},
			[]string{"pve reachable"}, "pve tls", "does not match the pinned"},
		{"CA not trusted", pve.Options{URL: e.srv.URL, Token: tok},
			[]string{"pve reachable"}, "pve tls", "--pve-ca-file /etc/pve/pve-root-ca.pem"},
		{"token refused", pve.Options{URL: e.srv.URL, Token: bad, Fingerprint: e.fingerprint()},
			[]string{"pve reachable", "pve tls"}, "pve token", "refused the API token"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := pve.New(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			rs := Run(t.Context(), Config{PVE: c, Node: "pve"})
			if len(rs) != len(tc.passed)+1 {
				t.Fatalf("got:\n%s; want %v passed, then %s failed", lines(rs), tc.passed, tc.failCheck)
			}
			for i, p := range tc.passed {
				if rs[i].Check != p || !rs[i].OK {
					t.Errorf("result %d = %s; want PASS %s", i, rs[i], p)
				}
			}
			last := rs[len(rs)-1]
			if last.OK || last.Check != tc.failCheck || !strings.Contains(last.String(), tc.failHas) {
				t.Errorf("last = %s; want FAIL %s containing %q", last, tc.failCheck, tc.failHas)
			}
			if strings.Contains(lines(rs), tok.Secret) {
				t.Errorf("the token secret appears in the results")
			}
		})
	}

	rs := Run(t.Context(), Config{PVE: e.client(t, e.s.Token()), Node: "elsewhere"})
	if f := failed(rs); len(f) != 1 || f[0].Check != "pve node" || !strings.Contains(f[0].String(), `"elsewhere" is not in this cluster (nodes: pve)`) {
		t.Errorf("unknown node: got\n%s", lines(rs))
	}
}

// hubEnv is a real hub (SQLite) on loopback TLS with one enrolled host.
type hubEnv struct {
	url, fp, hostTok, opTok string
}

func newHub(t *testing.T) *hubEnv {
	t.Helper()
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "hub.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	opTok := hub.NewToken("stwo_")
	if err := st.CreateOperator(t.Context(), "alice", store.HashToken(opTok)); err != nil {
		t.Fatal(err)
	}
	h := hub.New(st, hub.Options{})
	srv := httptest.NewUnstartedServer(h.Handler())
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(func() { h.Shutdown(); srv.Close() })
	fp := pve.CertFingerprint(srv.Certificate().Raw)
	op, err := hubclient.New(hubclient.Options{URL: srv.URL, Fingerprint: fp, Token: opTok})
	if err != nil {
		t.Fatal(err)
	}
	var jt struct {
		JoinToken string `json:"join_token"`
	}
	if err := op.JSON(t.Context(), "POST", "/v1/hosts/pve/join-token", nil, nil, &jt); err != nil {
		t.Fatal(err)
	}
	er, err := op.WithToken("").Enroll(t.Context(), jt.JoinToken)
	if err != nil {
		t.Fatal(err)
	}
	return &hubEnv{url: srv.URL, fp: fp, hostTok: er.Token, opTok: opTok}
}

func TestHubChecks(t *testing.T) {
	e := newPVE(t)
	h := newHub(t)
	pc := e.client(t, e.s.Token())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "https://" + ln.Addr().String()
	ln.Close()
	other := strings.Repeat("01:", 31) + "01"
	tests := []struct {
		name      string
		opts      hubclient.Options
		host      string
		failCheck string // "" all pass
		failHas   string
	}{
		{"enrolled", hubclient.Options{URL: h.url, Fingerprint: h.fp, Token: h.hostTok}, "pve", "", ""},
		{"nothing listens", hubclient.Options{URL: closed, Fingerprint: h.fp, Token: h.hostTok}, "pve", "hub reachable", "connection refused"},
		{"another certificate", hubclient.Options{URL: h.url, Fingerprint: other, Token: h.hostTok}, "pve", "hub certificate", "does not match the pinned"},
		{"no pin, self-signed", hubclient.Options{URL: h.url, Token: h.hostTok}, "pve", "hub certificate", "--hub-fingerprint"},
		{"revoked or unknown token", hubclient.Options{URL: h.url, Fingerprint: h.fp, Token: "stwh_" + strings.Repeat("0", 64)}, "pve", "hub authentication", "enroll again"},
		{"token of another host", hubclient.Options{URL: h.url, Fingerprint: h.fp, Token: h.hostTok}, "pve-b", "hub authentication", "belongs to another host"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hc, err := hubclient.New(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			rs := Run(t.Context(), Config{PVE: pc, Node: "pve", Hub: hc, HubHost: tc.host, HubPinned: tc.opts.Fingerprint != ""})
			f := failed(rs)
			if tc.failCheck == "" {
				if len(f) != 0 || rs[len(rs)-1].Check != "hub authentication" {
					t.Fatalf("want all to pass, ending with hub authentication:\n%s", lines(rs))
				}
				return
			}
			if len(f) != 1 || f[0].Check != tc.failCheck || !strings.Contains(f[0].String(), tc.failHas) || f != nil && rs[len(rs)-1] != f[0] {
				t.Errorf("want the last line FAIL %s containing %q; got:\n%s", tc.failCheck, tc.failHas, lines(rs))
			}
			if strings.Contains(lines(rs), h.hostTok) {
				t.Errorf("the host token appears in the results")
			}
		})
	}
}

// TestCreateNeeds: desired state that creates guests adds the checks
// creation needs: VM.Clone on a clone's source, Datastore.Audit where a
// container template or ISO lives, Datastore.AllocateSpace where disks
// are allocated, Datastore.Allocate where cicustom snippets live. A token
// holding exactly those clones and creates on the simulator; one missing
// any of them fails naming it on its path.
func TestCreateNeeds(t *testing.T) {
	e := newPVE(t)
	if err := e.s.AddTemplates(); err != nil {
		t.Fatal(err)
	}
	doc, err := desired.Parse([]byte(`apiVersion: steward/v1
kind: Fleet
hosts:
  pve:
    guests:
      120: {kind: qemu, create: {clone: 9000, full: true, storage: local-lvm}, config: {cicustom: "user=local:snippets/u.yaml"}}
      130: {kind: lxc, create: {ostemplate: "` + sim.TemplateVztmpl + `", storage: local-lvm}}
`))
	if err != nil {
		t.Fatal(err)
	}
	want := doc.ForHost("pve")
	pcs := pathChecks(want)
	var got []string
	grants := map[string][]Need{}
	for _, pc := range pcs {
		var privs []string
		for _, n := range pc.needs {
			privs = append(privs, n.Priv)
		}
		got = append(got, pc.path+"="+strings.Join(privs, "+"))
		grants[pc.path] = pc.needs
	}
	for _, w := range []string{"/vms/9000=VM.Clone+VM.Audit", "/storage/local=Datastore.Allocate+Datastore.Audit", "/storage/local-lvm=Datastore.AllocateSpace"} {
		if !slices.Contains(got, w) {
			t.Errorf("checks %v; want %s among them", got, w)
		}
	}

	// Exactly these grants pass the check and let PVE clone and create.
	exact := e.restricted("steward@pve!create", grants)
	if rs := Run(t.Context(), Config{PVE: e.client(t, exact), Node: "pve", Desired: want}); !Passed(rs) {
		t.Fatalf("the needs themselves: want all to pass:\n%s", lines(rs))
	}
	c := e.client(t, exact)
	waitOK := func(what string, r pve.Result, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s with exactly the needs: %v", what, err)
		}
		if upid, ok := r.Task(); ok {
			if res, err := c.WaitTask(t.Context(), upid, pve.WaitOptions{Initial: time.Millisecond, Max: 5 * time.Millisecond}); err != nil {
				t.Fatalf("%s task with exactly the needs: %+v, %v", what, res, err)
			}
		}
	}
	r, err := c.Clone(t.Context(), "pve", guest.QEMU, 9000, 120, map[string]string{"full": "1", "storage": "local-lvm", "name": "web-1"})
	waitOK("clone", r, err)
	r, err = c.Create(t.Context(), "pve", guest.LXC, 130, map[string]string{"ostemplate": sim.TemplateVztmpl, "rootfs": "local-lvm:4", "unprivileged": "1"})
	waitOK("create lxc", r, err)

	// Each one missing is named on its path.
	for _, pc := range pcs {
		for _, n := range pc.needs {
			g := map[string][]Need{}
			for p, ns := range grants {
				g[p] = ns
			}
			g[pc.path] = without(pc.needs, n.Priv)
			tok := e.restricted(fmt.Sprintf("steward@pve!no-%s-%s", strings.ReplaceAll(pc.path, "/", "-"), n.Priv), g)
			f := failed(Run(t.Context(), Config{PVE: e.client(t, tok), Node: "pve", Desired: want}))
			if len(f) != 1 || f[0].Check != "pve privileges "+pc.path || !strings.Contains(f[0].Detail, "missing "+n.Priv+" (to "+n.For+")") {
				t.Errorf("without %s on %s: want one failure naming it there; got:\n%s", n.Priv, pc.path, lines(f))
			}
		}
	}
}
