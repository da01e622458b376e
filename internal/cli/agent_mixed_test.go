package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/signedop"
	"github.com/steward-pve/steward/internal/sim"
)

// Issue 8 §4 through the commands: a change mixing a benign key (cores)
// with a destructive one (a new scsi1 volume). The first run writes the
// benign part and the payload for the rest, bound to the digest that write
// left; a second run offers the same file unchanged; that file, signed
// with ssh-keygen through `steward op sign`, is accepted and run.
func TestAgentMixedChangeOnePayloadToSign(t *testing.T) {
	f := newAgentFixture(t)
	if err := f.srv.Sim.AddGuest(sim.GuestSpec{VMID: 103, Kind: guest.QEMU, Name: "db",
		Config: map[string]string{"cores": "1", "scsi0": "local-lvm:vm-103-disk-0,size=32G", "scsi1": "local-lvm:vm-103-disk-1,size=10G"}}); err != nil {
		t.Fatal(err)
	}
	ops := newOpFixture(t, "alice")
	doc := f.desired(t, `apiVersion: steward/v1
kind: Fleet
hosts:
  pve:
    guests:
      103: {config: {cores: 4, scsi1: "local-lvm:vm-103-disk-7,size=10G"}}
`)
	jobs := filepath.Join(f.state, "jobs")
	withSigners := f.args("--once", "--desired", doc, "--allowed-signers", ops.allowed)
	out, _, err := runCLI(t, withSigners...)
	if ExitCode(err) != ExitChanged || !strings.Contains(out, "ok    config 103 cores=4") || !strings.Contains(out, "PENDING SIGNATURE  config 103 scsi1=") {
		t.Fatalf("first run: exit %d (%v); want 2, the benign write and the held scsi1\n%s", ExitCode(err), err, out)
	}
	pending, _ := filepath.Glob(filepath.Join(f.state, "pending", "103-config-*.json"))
	if len(pending) != 1 {
		t.Fatalf("pending payload files = %v; want one", pending)
	}
	first, _ := os.ReadFile(pending[0])
	p, err := signedop.ParsePayload(first)
	if err != nil {
		t.Fatal(err)
	}
	if g, _ := f.srv.Sim.Guest(103); p.Digest != g.Digest || g.Config["cores"] != "4" {
		t.Fatalf("payload digest %s, guest digest %s cores %s; want the payload bound to the digest the benign write left", p.Digest, g.Digest, g.Config["cores"])
	}

	if _, _, err := runCLI(t, withSigners...); ExitCode(err) != ExitChanged {
		t.Fatalf("second run: %v; want exit 2", err)
	}
	again, _ := filepath.Glob(filepath.Join(f.state, "pending", "103-config-*.json"))
	if b, _ := os.ReadFile(pending[0]); len(again) != 1 || again[0] != pending[0] || string(b) != string(first) {
		t.Fatalf("pending files after a second run = %v; want %s unchanged", again, pending[0])
	}

	job := filepath.Join(jobs, filepath.Base(pending[0]))
	if err := os.WriteFile(job, first, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runCLI(t, "op", "sign", "--key", ops.keys["alice"], job); err != nil {
		t.Fatalf("op sign: %v", err)
	}
	out, _, err = runCLI(t, withSigners...)
	if ExitCode(err) != ExitChanged || !strings.Contains(out, "ran       "+job) || !strings.Contains(out, "103 in_sync (changed)") {
		t.Fatalf("signed run: exit %d (%v); want 2, the job run and 103 in sync\n%s", ExitCode(err), err, out)
	}
	if g, _ := f.srv.Sim.Guest(103); g.Config["scsi1"] != "local-lvm:vm-103-disk-7,size=10G" {
		t.Errorf("scsi1 = %s; want the signed volume", g.Config["scsi1"])
	}
	if m := f.srv.Sim.Mutations(); len(m) != 2 {
		t.Errorf("mutations = %+v; want the benign write and the signed one", m)
	}
	out, _, err = runCLI(t, withSigners...)
	if err != nil || !strings.Contains(out, "103 in_sync") {
		t.Errorf("run after convergence: exit %d (%v); want 0 and 103 in sync\n%s", ExitCode(err), err, out)
	}
}
