// Package pvetest is the conformance suite for steward's PVE client: the
// same checks run against the simulator (always, in tests) and against a
// real Proxmox VE host when STEWARD_PVE_URL, STEWARD_PVE_TOKEN and
// STEWARD_PVE_FINGERPRINT are set, so the simulator is held to what real
// PVE does. Read-only checks are the default; write checks run only when
// asked for and only on a VMID the caller declares scratch.
package pvetest

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/pve"
)

// Environment variables naming a real PVE host for FromEnv.
const (
	EnvURL         = "STEWARD_PVE_URL"
	EnvToken       = "STEWARD_PVE_TOKEN"
	EnvFingerprint = "STEWARD_PVE_FINGERPRINT"
	EnvNode        = "STEWARD_PVE_NODE" // optional; default: the node that answers
)

// Config tells RunConformance what it may do.
type Config struct {
	// Node is the PVE node to check. Required.
	Node string
	// MaxGuests bounds how many guests per kind get per-guest reads
	// (config, status, pending, snapshots); 0 means 20.
	MaxGuests int
	// NewClient, when set, builds a client for the same endpoint with
	// another token; the suite uses it to check that a bad token gets 401.
	NewClient func(pve.Token) (*pve.Client, error)

	// Mutate enables the write checks: create, config writes with digest,
	// start, snapshot, shutdown, destroy. Never against a production host.
	Mutate bool
	// ScratchVMID is a VMID that does not exist and that the write checks
	// may create and destroy (as a QEMU VM). Required when Mutate.
	ScratchVMID int
	// ScratchStorage is the storage (with content "images") where the
	// write checks allocate the scratch VM's 1 GiB disk to resize it;
	// default "local-lvm".
	ScratchStorage string
	// Wait is the polling for WaitTask; zero means the client default.
	Wait pve.WaitOptions
}

var digestRE = regexp.MustCompile(`^[0-9a-f]{40}$`)

// FromEnv builds a client for the real PVE host named by the environment.
// ok is false when STEWARD_PVE_URL is unset; then nothing else is read.
// The node is STEWARD_PVE_NODE, or the node that answers the API.
func FromEnv(t testing.TB) (c *pve.Client, node string, ok bool) {
	t.Helper()
	u := os.Getenv(EnvURL)
	if u == "" {
		return nil, "", false
	}
	tok, err := pve.LoadToken("")
	if err != nil {
		t.Fatalf("pvetest: %s is set but the token is not: %v", EnvURL, err)
	}
	fp := os.Getenv(EnvFingerprint)
	if fp == "" {
		t.Fatalf("pvetest: %s is set; set %s to the node's ssl_fingerprint too (pvenode cert info)", EnvURL, EnvFingerprint)
	}
	c, err = pve.New(pve.Options{URL: u, Token: tok, Fingerprint: fp})
	if err != nil {
		t.Fatalf("pvetest: %v", err)
	}
	node = os.Getenv(EnvNode)
	if node == "" {
		node, err = c.LocalNode(t.Context())
		if err != nil {
			t.Fatalf("pvetest: find the node name (or set %s): %v", EnvNode, err)
		}
	}
	return c, node, true
}

// RunConformance checks c against the PVE API at its endpoint. It runs
// subtests and reports every deviation as a test failure.
func RunConformance(t *testing.T, c *pve.Client, cfg Config) {
	t.Helper()
	if cfg.Node == "" {
		t.Fatal("pvetest: Config.Node is required")
	}
	if cfg.MaxGuests <= 0 {
		cfg.MaxGuests = 20
	}
	ctx := t.Context()

	t.Run("version", func(t *testing.T) {
		v, err := c.Version(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if v.Version == "" || v.Release == "" {
			t.Errorf("version %+v; want version and release set", v)
		}
	})

	t.Run("nodes", func(t *testing.T) {
		ns, err := c.Nodes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, n := range ns {
			if n.Node != cfg.Node {
				continue
			}
			found = true
			if n.Status != "online" {
				t.Errorf("node %s status %q; want online", n.Node, n.Status)
			}
			if n.SSLFingerprint != "" {
				fp, err := pve.ParseFingerprint(n.SSLFingerprint)
				if err != nil || pve.FormatFingerprint(fp[:]) != n.SSLFingerprint {
					t.Errorf("ssl_fingerprint %q is not upper-case colon-hex SHA-256", n.SSLFingerprint)
				}
			}
			if n.MaxMem <= 0 || n.MaxCPU <= 0 {
				t.Errorf("node %+v; want maxmem and maxcpu", n)
			}
		}
		if !found {
			t.Errorf("GET /nodes has no node %q", cfg.Node)
		}
	})

	t.Run("node status", func(t *testing.T) {
		s, err := c.NodeStatus(ctx, cfg.Node)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(s.PVEVersion, "pve-manager/") {
			t.Errorf("pveversion %q; want pve-manager/…", s.PVEVersion)
		}
		if s.Memory.Total <= 0 || s.Memory.Used > s.Memory.Total {
			t.Errorf("memory %+v; want 0 < used <= total", s.Memory)
		}
	})

	t.Run("local node", func(t *testing.T) {
		items, err := c.ClusterStatus(ctx)
		if err != nil {
			t.Fatal(err)
		}
		locals := 0
		for _, it := range items {
			if it.Type == "node" && it.Local {
				locals++
			}
		}
		if locals != 1 {
			t.Errorf("cluster status has %d local node rows; want 1", locals)
		}
	})

	var resources []pve.Resource
	t.Run("cluster resources", func(t *testing.T) {
		var err error
		resources, err = c.ClusterResources(ctx, "vm")
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range resources {
			if (r.Type != "qemu" && r.Type != "lxc") || r.VMID < 100 || r.ID != fmt.Sprintf("%s/%d", r.Type, r.VMID) {
				t.Errorf("vm resource %+v; want type qemu|lxc, id type/vmid", r)
			}
		}
	})

	used := map[int]bool{}
	for _, r := range resources {
		used[r.VMID] = true
	}
	for _, kind := range []guest.Kind{guest.QEMU, guest.LXC} {
		t.Run("guests "+string(kind), func(t *testing.T) {
			gs, err := c.Guests(ctx, cfg.Node, kind)
			if err != nil {
				t.Fatal(err)
			}
			for i, g := range gs {
				used[g.VMID] = true
				if g.VMID < 100 || g.Kind != kind || (g.Status != "running" && g.Status != "stopped") {
					t.Errorf("guest %+v; want vmid >= 100, kind %s, status running|stopped", g, kind)
				}
				if i < cfg.MaxGuests {
					checkGuest(t, c, cfg.Node, g)
				}
			}
		})
	}

	t.Run("missing guest is not found", func(t *testing.T) {
		vmid := 999999999
		for used[vmid] {
			vmid--
		}
		_, err := c.GuestConfig(ctx, cfg.Node, guest.QEMU, vmid)
		if !pve.IsNotFound(err) || pve.IsRetryable(err) {
			t.Errorf("config of missing VMID %d: %v; want not-found, not retryable", vmid, err)
		}
		var ae *pve.APIError
		if errors.As(err, &ae) && ae.StatusCode != 500 {
			t.Errorf("status %d; want PVE's 500", ae.StatusCode)
		}
	})

	t.Run("storage", func(t *testing.T) {
		ss, err := c.Storage(ctx, cfg.Node)
		if err != nil {
			t.Fatal(err)
		}
		if len(ss) == 0 {
			t.Errorf("no storage on %s; PVE always has at least one", cfg.Node)
		}
		for _, s := range ss {
			if s.Storage == "" || s.Type == "" {
				t.Errorf("storage %+v; want name and type", s)
			}
		}
	})

	t.Run("own permissions", func(t *testing.T) {
		// Any token may read its own privileges; steward agent check
		// depends on it. The whole tree never lists a path without
		// privileges, and a path asked for comes back under that key.
		all, err := c.Permissions(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		for p, privs := range all {
			if len(privs) == 0 || !strings.HasPrefix(p, "/") {
				t.Errorf("whole tree lists %q with %v; want an ACL path with privileges", p, privs)
			}
		}
		one, err := c.Permissions(ctx, "/vms")
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := one["/vms"]; !ok || len(one) != 1 {
			t.Errorf("path=/vms answered %v; want exactly the key /vms", one)
		}
		for priv := range all["/vms"] {
			if !one.Has("/vms", priv) {
				t.Errorf("whole tree holds %s on /vms but path=/vms does not", priv)
			}
		}
	})

	t.Run("tasks", func(t *testing.T) {
		ts, err := c.Tasks(ctx, cfg.Node, pve.TaskQuery{Limit: 5})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range ts {
			if s.UPID.IsZero() || s.UPID.String() != s.RawUPID {
				t.Errorf("task upid %q does not round-trip (%v)", s.RawUPID, s.UPID)
				continue
			}
			st, err := c.TaskStatus(ctx, cfg.Node, s.UPID)
			if err != nil {
				t.Errorf("status of listed task %s: %v", s.UPID, err)
				continue
			}
			if st.Status != "stopped" || st.ExitStatus != s.Status {
				t.Errorf("task %s: status %q exit %q; list says finished with %q", s.UPID, st.Status, st.ExitStatus, s.Status)
			}
			lines, err := c.TaskLog(ctx, cfg.Node, s.UPID, 0, 0)
			if err != nil || len(lines) == 0 || lines[0].N != 1 {
				t.Errorf("log of %s: %v, %v; want lines numbered from 1", s.UPID, lines, err)
			}
		}
	})

	if cfg.NewClient != nil {
		t.Run("bad token is 401", func(t *testing.T) {
			bad, err := cfg.NewClient(pve.Token{ID: "nobody@pve!nothing", Secret: "00000000-0000-0000-0000-000000000000"})
			if err != nil {
				t.Fatal(err)
			}
			_, err = bad.Version(ctx)
			var ae *pve.APIError
			if !errors.As(err, &ae) || ae.StatusCode != 401 || pve.IsRetryable(err) {
				t.Errorf("bad token: %v; want a 401 APIError, not retryable", err)
			}
		})
	}

	if cfg.Mutate {
		t.Run("mutations", func(t *testing.T) { runMutations(t, c, cfg) })
	}
}

func checkGuest(t *testing.T, c *pve.Client, node string, g pve.GuestSummary) {
	t.Helper()
	ctx := t.Context()
	gc, err := c.GuestConfig(ctx, node, g.Kind, g.VMID)
	if err != nil {
		t.Errorf("config of %s %d: %v", g.Kind, g.VMID, err)
		return
	}
	if !digestRE.MatchString(gc.Digest) {
		t.Errorf("%d: digest %q; want 40 hex digits", g.VMID, gc.Digest)
	}
	if _, ok := gc.Values["digest"]; ok {
		t.Errorf("%d: digest left in config values", g.VMID)
	}
	if g.Kind == guest.QEMU {
		if d, ok := gc.Values["description"]; ok && strings.HasSuffix(d, "\n") {
			t.Errorf("%d: QEMU description %q ends in a newline; PVE strips it", g.VMID, d)
		}
	}
	st, err := c.GuestStatus(ctx, node, g.Kind, g.VMID)
	if err != nil {
		t.Errorf("status of %d: %v", g.VMID, err)
	} else if st.Status != g.Status && st.Lock == "" && g.Lock == "" {
		// Lists and status/current are separate reads; a guest changing
		// state in between is possible, but not on a quiet host.
		t.Logf("%d: list status %q, status/current %q", g.VMID, g.Status, st.Status)
	}
	if pc, err := c.ConfigWithPending(ctx, node, g.Kind, g.VMID); err != nil {
		t.Errorf("pending of %d: %v", g.VMID, err)
	} else if g.Lock == "" {
		// One GET …/pending must tell what GET …/config tells (the agent
		// reads only the former): the same digest and pending-applied
		// values, except keys PVE keeps as lists, which it does not list.
		if pc.Config.Digest != gc.Digest {
			t.Errorf("%d: pending digest %q, config digest %q; want equal on a quiet host", g.VMID, pc.Config.Digest, gc.Digest)
		}
		for k, v := range gc.Values {
			if strings.HasPrefix(v, "[") || strings.HasPrefix(v, "{") {
				continue
			}
			if pv, ok := pc.Config.Values[k]; !ok || pv != v {
				t.Errorf("%d: config %s=%q, pending view %q (present %v); want equal", g.VMID, k, v, pv, ok)
			}
		}
		for k := range pc.Config.Values {
			if _, ok := gc.Values[k]; !ok {
				t.Errorf("%d: pending view has %s, config does not", g.VMID, k)
			}
		}
	}
	snaps, err := c.Snapshots(ctx, node, g.Kind, g.VMID)
	if err != nil {
		t.Errorf("snapshots of %d: %v", g.VMID, err)
		return
	}
	current := 0
	for _, s := range snaps {
		if s.IsCurrent() {
			current++
		}
	}
	if current != 1 {
		t.Errorf("%d: %d \"current\" snapshot entries; PVE always sends exactly one", g.VMID, current)
	}
}

func runMutations(t *testing.T, c *pve.Client, cfg Config) {
	ctx := t.Context()
	node, vmid := cfg.Node, cfg.ScratchVMID
	if vmid < 100 {
		t.Fatal("pvetest: Config.ScratchVMID is required for mutations")
	}
	if _, err := c.GuestConfig(ctx, node, guest.QEMU, vmid); !pve.IsNotFound(err) {
		t.Fatalf("scratch VMID %d: %v; want it not to exist", vmid, err)
	}
	wait := func(t *testing.T, what string, r pve.Result, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if u, ok := r.Task(); ok {
			if _, err := c.WaitTask(ctx, u, cfg.Wait); err != nil {
				t.Fatalf("%s: task %s: %v", what, u, err)
			}
		}
	}
	r, err := c.Create(ctx, node, guest.QEMU, vmid, map[string]string{"name": "steward-conformance", "memory": "512", "cores": "1"})
	if _, ok := r.Task(); err == nil && !ok {
		t.Errorf("create returned synchronously; PVE always runs it as a task")
	}
	wait(t, "create", r, err)
	defer func() {
		// Best effort: leave the host as found.
		if st, err := c.GuestStatus(t.Context(), node, guest.QEMU, vmid); err == nil && st.Status == "running" {
			r, err := c.Stop(t.Context(), node, guest.QEMU, vmid)
			if u, ok := r.Task(); err == nil && ok {
				c.WaitTask(t.Context(), u, cfg.Wait)
			}
		}
		r, err := c.Destroy(t.Context(), node, guest.QEMU, vmid, pve.DestroyOptions{Purge: true})
		if u, ok := r.Task(); err == nil && ok {
			c.WaitTask(t.Context(), u, cfg.Wait)
		}
	}()

	_, err = c.Create(ctx, node, guest.QEMU, vmid, map[string]string{"name": "again"})
	if err == nil || pve.IsRetryable(err) || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("create of existing %d: %v; want a synchronous \"already exists\", not retryable", vmid, err)
	}

	gc, err := c.GuestConfig(ctx, node, guest.QEMU, vmid)
	if err != nil {
		t.Fatal(err)
	}
	if gc.Values["name"] != "steward-conformance" || gc.Values["memory"] != "512" {
		t.Errorf("created config %v; want name and memory as sent", gc.Values)
	}

	r, err = c.SetConfig(ctx, node, guest.QEMU, vmid, pve.ConfigChange{Set: map[string]string{"cores": "2", "description": "conformance"}, Digest: gc.Digest})
	if _, ok := r.Task(); err == nil && ok {
		t.Errorf("PUT config returned a task; PVE's PUT is synchronous")
	}
	wait(t, "config", r, err)
	gc2, err := c.GuestConfig(ctx, node, guest.QEMU, vmid)
	if err != nil {
		t.Fatal(err)
	}
	if gc2.Values["cores"] != "2" || gc2.Digest == gc.Digest || gc2.Values["description"] != "conformance" {
		t.Errorf("after write: cores %q digest %q (was %q) description %q; want 2, a new digest, no trailing newline",
			gc2.Values["cores"], gc2.Digest, gc.Digest, gc2.Values["description"])
	}
	_, err = c.SetConfig(ctx, node, guest.QEMU, vmid, pve.ConfigChange{Set: map[string]string{"cores": "3"}, Digest: gc.Digest})
	if !pve.IsDigestMismatch(err) || pve.IsRetryable(err) {
		t.Errorf("write with stale digest: %v; want a digest mismatch, not retryable", err)
	}
	r, err = c.SetConfig(ctx, node, guest.QEMU, vmid, pve.ConfigChange{Set: map[string]string{"onboot": "1"}, Async: true})
	wait(t, "async config", r, err)

	checkResize(t, c, cfg, wait)

	r, err = c.Start(ctx, node, guest.QEMU, vmid)
	wait(t, "start", r, err)
	if st, err := c.GuestStatus(ctx, node, guest.QEMU, vmid); err != nil || st.Status != "running" {
		t.Errorf("after start: %+v, %v; want running", st, err)
	}
	r, err = c.Start(ctx, node, guest.QEMU, vmid)
	if u, ok := r.Task(); err == nil && ok {
		_, err = c.WaitTask(ctx, u, cfg.Wait)
		var te *pve.TaskError
		if !errors.As(err, &te) || !strings.Contains(te.ExitStatus, "already running") {
			t.Errorf("second start: %v; want task error \"VM %d already running\"", err, vmid)
		}
	} else {
		t.Errorf("second start: %v, task %v; want a task that fails", err, ok)
	}

	// A change the running VM cannot take live (cores, without cpu
	// hotplug) waits in the pending section; a reboot applies it.
	r, err = c.SetConfig(ctx, node, guest.QEMU, vmid, pve.ConfigChange{Set: map[string]string{"cores": "3"}})
	wait(t, "config on running", r, err)
	pc, err := c.ConfigWithPending(ctx, node, guest.QEMU, vmid)
	if err != nil {
		t.Fatal(err)
	}
	if pc.Config.Values["cores"] != "3" || pc.Current["cores"] != "2" || !slices.Equal(pc.Pending, []string{"cores"}) {
		t.Errorf("after cores=3 on the running VM: config %q current %q pending %v; want 3, 2, [cores]",
			pc.Config.Values["cores"], pc.Current["cores"], pc.Pending)
	}
	if gc3, err := c.GuestConfig(ctx, node, guest.QEMU, vmid); err != nil || gc3.Values["cores"] != "3" || gc3.Digest != pc.Config.Digest {
		t.Errorf("GET config after the pending write: cores %q digest %q, %v; want 3 and the pending listing's digest %q", gc3.Values["cores"], gc3.Digest, err, pc.Config.Digest)
	}
	r, err = c.Reboot(ctx, node, guest.QEMU, vmid, 60*time.Second)
	if _, ok := r.Task(); err == nil && !ok {
		t.Errorf("reboot returned synchronously; PVE always runs it as a task")
	}
	wait(t, "reboot", r, err)
	// PVE restarts the VM right after the reboot task ends.
	for i := 0; ; i++ {
		pc, err = c.ConfigWithPending(ctx, node, guest.QEMU, vmid)
		st, serr := c.GuestStatus(ctx, node, guest.QEMU, vmid)
		if err == nil && serr == nil && len(pc.Pending) == 0 && st.Status == "running" {
			break
		}
		if i == 60 {
			t.Fatalf("after reboot: pending %v (%v), status %+v (%v); want nothing pending and running", pc.Pending, err, st, serr)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if pc.Current["cores"] != "3" {
		t.Errorf("after reboot: current cores %q; want 3", pc.Current["cores"])
	}

	r, err = c.SnapshotCreate(ctx, node, guest.QEMU, vmid, "conformance", "pvetest")
	wait(t, "snapshot", r, err)
	snaps, err := c.Snapshots(ctx, node, guest.QEMU, vmid)
	if err != nil {
		t.Fatal(err)
	}
	var named, parent string
	for _, s := range snaps {
		if s.IsCurrent() {
			parent = s.Parent
		} else {
			named = s.Name
		}
	}
	if named != "conformance" || parent != "conformance" {
		t.Errorf("snapshots %+v; want \"conformance\" as the current parent", snaps)
	}
	r, err = c.SnapshotDelete(ctx, node, guest.QEMU, vmid, "conformance")
	wait(t, "snapshot delete", r, err)

	r, err = c.Shutdown(ctx, node, guest.QEMU, vmid, pve.ShutdownOptions{Timeout: 30 * time.Second, ForceStop: true})
	wait(t, "shutdown", r, err)
	if st, err := c.GuestStatus(ctx, node, guest.QEMU, vmid); err != nil || st.Status != "stopped" {
		t.Errorf("after shutdown: %+v, %v; want stopped", st, err)
	}

	r, err = c.Destroy(ctx, node, guest.QEMU, vmid, pve.DestroyOptions{Purge: true})
	wait(t, "destroy", r, err)
	if _, err := c.GuestConfig(ctx, node, guest.QEMU, vmid); !pve.IsNotFound(err) {
		t.Errorf("config after destroy: %v; want not found", err)
	}
}

// checkResize holds PVE's disk sizes: size= in a drive string is
// informational, so a config write naming a larger size grows nothing
// (PVE keeps the volume's real size); PUT …/resize grows the volume in a
// task and rewrites size=; a shrink is refused.
func checkResize(t *testing.T, c *pve.Client, cfg Config, wait func(*testing.T, string, pve.Result, error)) {
	ctx := t.Context()
	node, vmid := cfg.Node, cfg.ScratchVMID
	storage := cfg.ScratchStorage
	if storage == "" {
		storage = "local-lvm"
	}
	disk := func() (vol, size, digest string) {
		t.Helper()
		gc, err := c.GuestConfig(ctx, node, guest.QEMU, vmid)
		if err != nil {
			t.Fatal(err)
		}
		v := gc.Values["scsi0"]
		vol, _, _ = strings.Cut(v, ",")
		for _, p := range strings.Split(v, ",") {
			if n, ok := strings.CutPrefix(p, "size="); ok {
				size = n
			}
		}
		return vol, size, gc.Digest
	}
	r, err := c.SetConfig(ctx, node, guest.QEMU, vmid, pve.ConfigChange{Set: map[string]string{"scsi0": storage + ":1"}})
	wait(t, "allocate scsi0", r, err)
	vol, size, _ := disk()
	if size != "1G" || !strings.HasPrefix(vol, storage+":") {
		t.Fatalf("allocated scsi0: volume %q size %q; want a volume on %s of 1G", vol, size, storage)
	}
	r, err = c.SetConfig(ctx, node, guest.QEMU, vmid, pve.ConfigChange{Set: map[string]string{"scsi0": vol + ",size=2G"}})
	wait(t, "config write with a larger size", r, err)
	if _, size, _ := disk(); size != "1G" {
		t.Errorf("after a config write naming size=2G: size %q; want 1G (size= is informational, the volume did not grow)", size)
	}
	_, _, digest := disk()
	r, err = c.Resize(ctx, node, guest.QEMU, vmid, "scsi0", "2G", digest)
	if _, ok := r.Task(); err == nil && !ok {
		t.Errorf("resize returned synchronously; PVE >= 8.0.5 runs it as a task of type resize")
	}
	if u, ok := r.Task(); ok && u.Type != "resize" {
		t.Errorf("resize task type %q; want resize", u.Type)
	}
	wait(t, "resize", r, err)
	if _, size, _ := disk(); size != "2G" {
		t.Errorf("after resize to 2G: size %q; want 2G", size)
	}
	r, err = c.Resize(ctx, node, guest.QEMU, vmid, "scsi0", "1G", "")
	if u, ok := r.Task(); err == nil && ok {
		_, err = c.WaitTask(ctx, u, cfg.Wait)
	}
	if err == nil || !strings.Contains(err.Error(), "shrinking disks is not supported") {
		t.Errorf("shrink to 1G: %v; want \"shrinking disks is not supported\"", err)
	}
}
