package agent_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/agent"
	"github.com/steward-pve/steward/internal/desired"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/pve"
	"github.com/steward-pve/steward/internal/signedop"
	"github.com/steward-pve/steward/internal/sim"
	"github.com/steward-pve/steward/internal/sim/simtest"
)

// memDesired is a DesiredSource held in memory, as a hub source will
// hold the last document it fetched.
type memDesired struct {
	mu  sync.Mutex
	doc *desired.Document
}

func (m *memDesired) set(t *testing.T, text string) {
	t.Helper()
	d, err := desired.Parse([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.doc = d
}

func (m *memDesired) Desired(ctx context.Context) (*desired.Document, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.doc == nil {
		return &desired.Document{}, ctx.Err()
	}
	return m.doc, ctx.Err()
}

// simAgent builds an agent over a simulator on loopback.
func simAgent(t *testing.T, srv *simtest.Server, dir string, src agent.DesiredSource) *agent.Agent {
	t.Helper()
	tok, err := pve.ParseToken(srv.Token)
	if err != nil {
		t.Fatal(err)
	}
	client, err := pve.New(pve.Options{URL: srv.URL, Token: tok, HTTPClient: srv.Client})
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(agent.Config{Node: srv.Sim.Node(), Host: "pve", PVE: client, TaskUser: tok.ID, StateDir: dir,
		Desired: src, TaskWait: pve.WaitOptions{Initial: time.Millisecond, Max: 5 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestOnceConvergesWhatTheSourceSays: each tick converges toward the
// document the source returns at that tick.
func TestOnceConvergesWhatTheSourceSays(t *testing.T) {
	srv := simtest.Start(t, sim.Options{TaskDuration: 2 * time.Millisecond})
	if err := srv.Sim.AddGuest(sim.GuestSpec{VMID: 101, Kind: guest.QEMU, Name: "web", Config: map[string]string{"cores": "1"}}); err != nil {
		t.Fatal(err)
	}
	src := &memDesired{}
	a := simAgent(t, srv, t.TempDir(), src)
	if _, err := a.Once(t.Context()); err != nil {
		t.Fatal(err)
	}
	if m := srv.Sim.Mutations(); len(m) != 0 {
		t.Fatalf("nothing desired, yet PVE was changed: %+v", m)
	}
	src.set(t, "apiVersion: steward/v1\nkind: Fleet\nhosts:\n  pve:\n    guests:\n      101: {config: {cores: 2}}\n")
	rep, err := a.Once(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if m := srv.Sim.Mutations(); len(m) != 1 || m[0].Params["cores"] != "2" {
		t.Fatalf("mutations %+v; want the one cores write the source asked for", m)
	}
	if len(rep.Results) != 1 || rep.Results[0].Err != nil {
		t.Errorf("results %+v; want one successful action", rep.Results)
	}
}

// TestPendingOutbox: a held change's payload is written once, under its
// PendingFile name, mode 0600, and offered unchanged by the next tick and
// by a restarted agent; once the change is no longer wanted the file goes.
func TestPendingOutbox(t *testing.T) {
	srv := simtest.Start(t, sim.Options{TaskDuration: 2 * time.Millisecond})
	if err := srv.Sim.AddGuest(sim.GuestSpec{VMID: 103, Kind: guest.QEMU, Name: "db",
		Config: map[string]string{"scsi0": "local-lvm:vm-103-disk-0,size=32G", "scsi1": "local-lvm:vm-103-disk-1,size=10G"}}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	src := &memDesired{}
	src.set(t, "apiVersion: steward/v1\nkind: Fleet\nhosts:\n  pve:\n    guests:\n      103: {config: {scsi1: \"local-lvm:vm-103-disk-7,size=10G\"}}\n")
	a := simAgent(t, srv, dir, src)
	rep, err := a.Once(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Pending) != 1 {
		t.Fatalf("pending %+v; want the scsi1 replacement held", rep.Pending)
	}
	base := agent.PendingFile(rep.Pending[0].Offer)
	if nonce := rep.Pending[0].Offer.Nonce; len(nonce) < 8 || base != "103-config-"+nonce[:8]+".json" {
		t.Fatalf("pending file name %q; want 103-config-NONCE8.json", base)
	}
	name := filepath.Join(a.PendingDir(), base)
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatalf("pending payload file: %v", err)
	}
	if !bytes.Equal(b, rep.Pending[0].Payload) {
		t.Errorf("%s holds %q; want the payload offered", name, b)
	}
	if st, _ := os.Stat(name); st.Mode().Perm() != 0o600 {
		t.Errorf("%s mode %v; want 0600 (a payload carries the action's parameters)", name, st.Mode().Perm())
	}
	if p, err := signedop.ParsePayload(b); err != nil || p.VMID != 103 || p.Op != "config" {
		t.Errorf("payload file parses to %+v, %v; want a config of 103", p, err)
	}

	// A restarted agent offers the same payload: operators sign one thing.
	again, err := simAgent(t, srv, dir, src).Once(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(again.Pending) != 1 || !bytes.Equal(again.Pending[0].Payload, b) {
		t.Errorf("after a restart the pending payload changed:\n%s\nwant\n%s", again.Pending[0].Payload, b)
	}
	if files, _ := filepath.Glob(filepath.Join(a.PendingDir(), "*.json")); len(files) != 1 {
		t.Errorf("pending files %v; want exactly one", files)
	}
	if m := srv.Sim.Mutations(); len(m) != 0 {
		t.Fatalf("a held change reached PVE: %+v", m)
	}

	src.set(t, "apiVersion: steward/v1\nkind: Fleet\n")
	if _, err := a.Once(t.Context()); err != nil {
		t.Fatal(err)
	}
	if files, _ := filepath.Glob(filepath.Join(a.PendingDir(), "*.json")); len(files) != 0 {
		t.Errorf("pending files %v after the change is no longer wanted; want none", files)
	}
}

// TestPlanNeedsNoState: Plan observes and plans without touching the
// state directory or PVE.
func TestPlanNeedsNoState(t *testing.T) {
	srv := simtest.Start(t, sim.Options{})
	if err := srv.Sim.AddGuest(sim.GuestSpec{VMID: 101, Kind: guest.QEMU, Name: "web", Config: map[string]string{"cores": "1"}}); err != nil {
		t.Fatal(err)
	}
	src := &memDesired{}
	src.set(t, "apiVersion: steward/v1\nkind: Fleet\nhosts:\n  pve:\n    guests:\n      101: {config: {cores: 2}}\n")
	dir := filepath.Join(t.TempDir(), "state")
	rep, err := simAgent(t, srv, dir, src).Plan(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Plan.Steps) != 1 {
		t.Errorf("plan %+v; want the cores step", rep.Plan.Steps)
	}
	if m := srv.Sim.Mutations(); len(m) != 0 {
		t.Errorf("Plan changed PVE: %+v", m)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("Plan created the state directory (stat: %v)", err)
	}
}
