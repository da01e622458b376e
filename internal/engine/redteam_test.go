package engine_test

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/desired"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/signedop"
	"github.com/steward-pve/steward/internal/sim"
)

// Red-team tests of "the hub can never destroy data on its own" that pass:
// each documents a defended path. The failing ones are in
// redteam_holes_test.go.

func rtGuests() []sim.GuestSpec {
	return []sim.GuestSpec{
		qemuGuest(101, false, map[string]string{
			"ide2":    "local-lvm:vm-101-disk-5,size=8G", // a data disk in the cdrom alias's slot
			"unused0": "local-lvm:vm-101-disk-3",
		}),
		qemuGuest(102, false, nil),
		lxcGuest(201, false, map[string]string{"mp0": "local-lvm:vm-201-disk-1,mp=/data,size=8G"}),
	}
}

// TestRedteamUnsignedJobs presents jobs without signatures (the attacker
// writes the jobs directory) that try to destroy data through parameter
// spellings PVE might read differently: none may reach the simulator.
func TestRedteamUnsignedJobs(t *testing.T) {
	q, l := guest.QEMU, guest.LXC
	tests := []struct {
		name   string
		vmid   int
		kind   guest.Kind
		op     action.Op
		params map[string]string
	}{
		{"delete unused0 behind semicolon", 101, q, action.SetConfig, map[string]string{"delete": "cores;unused0"}},
		{"delete unused0 behind NUL", 101, q, action.SetConfig, map[string]string{"delete": "cores\x00unused0"}},
		{"delete scsi0 behind tab", 101, q, action.SetConfig, map[string]string{"delete": "cores\tscsi0"}},
		{"delete mp0 behind NBSP", 201, l, action.SetConfig, map[string]string{"delete": "memory\u00a0mp0"}},
		{"delete cdrom alias (data disk in ide2)", 101, q, action.SetConfig, map[string]string{"delete": "cdrom"}},
		{"cdrom none over data disk in ide2", 101, q, action.SetConfig, map[string]string{"cdrom": "none"}},
		{"upper-case SCSI0", 101, q, action.SetConfig, map[string]string{"SCSI0": "local-lvm:4"}},
		{"leading zero scsi00", 101, q, action.SetConfig, map[string]string{"scsi00": "local-lvm:4"}},
		{"duplicate file option", 101, q, action.SetConfig, map[string]string{"scsi0": "local-lvm:vm-101-disk-0,file=local-lvm:vm-102-disk-0,size=32G"}},
		{"lxc duplicate volume option", 201, l, action.SetConfig, map[string]string{"rootfs": "local-lvm:vm-201-disk-0,volume=local-lvm:vm-102-disk-0,size=8G"}},
		{"shrink in another unit", 101, q, action.SetConfig, map[string]string{"scsi0": "local-lvm:vm-101-disk-0,size=32767M"}},
		{"media=cdrom on a disk", 101, q, action.SetConfig, map[string]string{"scsi0": "local-lvm:vm-101-disk-0,media=cdrom,size=32G"}},
		{"skiplock write", 101, q, action.SetConfig, map[string]string{"cores": "2", "skiplock": "1"}},
		{"revert", 101, q, action.SetConfig, map[string]string{"revert": "scsi0"}},
		{"import another guest's disk", 101, q, action.SetConfig, map[string]string{"scsi1": "local-lvm:0,import-from=local-lvm:vm-102-disk-0"}},
		{"resize to the same size in MiB", 101, q, action.Resize, map[string]string{"disk": "scsi0", "size": "32768M"}},
		{"resize negative", 101, q, action.Resize, map[string]string{"disk": "scsi0", "size": "-1G"}},
		{"create over existing with archive", 101, q, action.Create, map[string]string{"archive": "local:backup/vzdump-qemu-102.vma.zst"}},
		{"lxc restore over existing", 201, l, action.Create, map[string]string{"ostemplate": "local:backup/vzdump-lxc-201.tar.zst", "restore": "1", "unprivileged": "1"}},
		{"create with force", 150, q, action.Create, map[string]string{"scsi0": "local-lvm:8", "force": "1"}},
		{"create attaching another guest's disk", 150, q, action.Create, map[string]string{"scsi0": "local-lvm:vm-102-disk-0"}},
		{"unknown op", 101, q, "purge", nil},
		{"destroy with destroy-unreferenced-disks", 101, q, action.Destroy, map[string]string{"destroy-unreferenced-disks": "1"}},
		{"rollback", 101, q, action.SnapshotRollback, map[string]string{"snapname": "s1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, sim.Options{}, rtGuests()...)
			env := signingEnv(t)
			useVerifier(h, env)
			g, _ := h.srv.Sim.Guest(tt.vmid)
			env.Action = action.Action{Op: tt.op, VMID: tt.vmid, Kind: tt.kind, Params: tt.params, Digest: g.Digest}
			job := env.Job(nil)
			job.Signatures = nil
			rep := h.tick(nil, job)
			if m := h.mutations(); len(m) != 0 {
				t.Fatalf("mutations = %v; want none (rejected %+v)", m, rep.Rejected)
			}
			if len(rep.Rejected) != 1 {
				t.Fatalf("rejected = %+v; want the job rejected", rep.Rejected)
			}
		})
	}
}

// TestRedteamDuplicatedSignedJob: the attacker presents one validly signed
// destructive job several times in one tick and again later; it runs once.
func TestRedteamDuplicatedSignedJob(t *testing.T) {
	h := newHarness(t, sim.Options{}, qemuGuest(101, false, map[string]string{"unused0": "local-lvm:vm-101-disk-3"}))
	env := signingEnv(t)
	useVerifier(h, env)
	g, _ := h.srv.Sim.Guest(101)
	env.Action = action.Action{Op: action.SetConfig, VMID: 101, Kind: guest.QEMU, Params: map[string]string{"delete": "unused0"}, Digest: g.Digest}
	job := env.Job(nil, env.Alice.Signer)
	rep := h.tick(nil, job, job, job)
	if m := h.mutations(); !slices.Equal(m, []string{"config 101"}) {
		t.Fatalf("mutations = %v; want exactly one config 101", m)
	}
	if len(rep.Rejected) == 0 {
		t.Errorf("no duplicate was rejected; want the duplicates refused as replays")
	}
	h.tick(nil, job)
	if n := len(h.mutations()); n != 1 {
		t.Fatalf("after a replay, %d mutations; want 1", n)
	}
}

// TestRedteamSignedPayloadMutations: a validly signed payload whose bytes
// are re-encoded (duplicate JSON keys, escapes, reordered fields, extra
// whitespace, case, truncation) or whose signature is moved to another
// payload never runs.
func TestRedteamSignedPayloadMutations(t *testing.T) {
	h := newHarness(t, sim.Options{}, qemuGuest(101, false, nil), qemuGuest(102, false, nil))
	env := signingEnv(t)
	useVerifier(h, env)
	g, _ := h.srv.Sim.Guest(101)
	env.Action = action.Action{Op: action.Destroy, VMID: 101, Kind: guest.QEMU, Params: map[string]string{"purge": "1"}, Digest: g.Digest}
	honest := env.Job(nil, env.Alice.Signer)
	pl := honest.Payload
	edits := map[string][]byte{
		"duplicate vmid key":   bytes.Replace(pl, []byte(`"vmid":101}`), []byte(`"vmid":101,"vmid":102}`), 1),
		"escaped op":           bytes.Replace(pl, []byte(`"op":"destroy"`), []byte(`"op":"\u0064estroy"`), 1),
		"whitespace":           bytes.Replace(pl, []byte(`,"host"`), []byte(`, "host"`), 1),
		"upper-case field":     bytes.Replace(pl, []byte(`"vmid"`), []byte(`"VMID"`), 1),
		"no trailing newline":  bytes.TrimSuffix(pl, []byte("\n")),
		"truncated":            pl[:len(pl)/2],
		"duplicate param":      bytes.Replace(pl, []byte(`"params":{"purge":"1"}`), []byte(`"params":{"purge":"1","purge":"0"}`), 1),
		"vmid with leading 0":  bytes.Replace(pl, []byte(`"vmid":101}`), []byte(`"vmid":0101}`), 1),
		"vmid as float":        bytes.Replace(pl, []byte(`"vmid":101}`), []byte(`"vmid":101.0}`), 1),
		"second JSON document": append(append([]byte{}, pl...), pl...),
	}
	for name, b := range edits {
		if bytes.Equal(b, pl) {
			t.Fatalf("%s: edit did not change the payload", name)
		}
		// Signed over the edited bytes by a listed operator? No: the
		// attacker only has the honest signature.
		h.tick(nil, signedop.Job{Payload: b, Signatures: honest.Signatures})
		if m := h.mutations(); len(m) != 0 {
			t.Fatalf("%s: mutations = %v; want none", name, m)
		}
	}
	// The honest signature on another honest-looking payload (guest 102).
	g2, _ := h.srv.Sim.Guest(102)
	other := env.Job(func(p *signedop.Payload) { p.VMID, p.Digest = 102, g2.Digest })
	h.tick(nil, signedop.Job{Payload: other.Payload, Signatures: honest.Signatures})
	if m := h.mutations(); len(m) != 0 {
		t.Fatalf("moved signature: mutations = %v; want none", m)
	}
	// Finally the honest job runs, once.
	h.tick(nil, honest)
	if m := h.mutations(); !slices.Equal(m, []string{"destroy 101"}) {
		t.Fatalf("honest job: mutations = %v; want [destroy 101]", m)
	}
}

// TestRedteamHostileDesiredAliases: desired documents using aliases, case
// and numbering tricks; each is refused by desired.Parse or held, and
// nothing touching the data-bearing slot reaches the simulator.
func TestRedteamHostileDesiredAliases(t *testing.T) {
	tests := []struct {
		name, config string
		vmid         int
		kind         guest.Kind
		slots        []string
	}{
		{"cdrom none over ide2 data disk", `cdrom: none`, 101, guest.QEMU, []string{"cdrom", "ide2"}},
		{"ide2 cdrom over data disk", `ide2: "none,media=cdrom"`, 101, guest.QEMU, []string{"ide2"}},
		{"upper-case SCSI0", `SCSI0: "local-lvm:4"`, 101, guest.QEMU, []string{"SCSI0", "scsi0"}},
		{"leading zero scsi00", `scsi00: "local-lvm:4"`, 101, guest.QEMU, []string{"scsi00", "scsi0"}},
		{"leading zero mp00", `mp00: "/,mp=/host"`, 201, guest.LXC, []string{"mp00", "mp0"}},
		{"duplicate file option", `scsi0: "local-lvm:vm-101-disk-0,file=local-lvm:vm-102-disk-0,size=32G"`, 101, guest.QEMU, []string{"scsi0"}},
		{"shrink in MiB", `scsi0: "local-lvm:vm-101-disk-0,size=32767M"`, 101, guest.QEMU, []string{"scsi0"}},
		{"unused0 replaced", `unused0: "local-lvm:vm-102-disk-0"`, 101, guest.QEMU, []string{"unused0"}},
		{"lxc privileged switch", `unprivileged: 0`, 201, guest.LXC, []string{"unprivileged"}},
		{"lock field", `lock: backup`, 101, guest.QEMU, []string{"lock"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := desired.Parse([]byte(fleet(tt.vmid, tt.kind, tt.config)))
			if err != nil {
				return // refused, naming its path (desired's own tests check the path)
			}
			h := newHarness(t, sim.Options{}, rtGuests()...)
			h.tick(d.ForHost("pve"))
			h.tick(d.ForHost("pve"))
			for _, m := range h.srv.Sim.Mutations() {
				for _, k := range tt.slots {
					if _, ok := m.Params[k]; ok || strings.Contains(m.Params["delete"], k) {
						t.Errorf("mutation %s %d touches %s: %v", m.Op, m.VMID, k, m.Params)
					}
				}
			}
			for _, id := range []int{101, 102, 201} {
				if _, ok := h.srv.Sim.Guest(id); !ok {
					t.Errorf("guest %d is gone", id)
				}
			}
		})
	}
}

// TestRedteamKindMismatchNeverRecreates: desired state naming the wrong
// kind for a guest is an error, never a destroy and create.
func TestRedteamKindMismatchNeverRecreates(t *testing.T) {
	h := newHarness(t, sim.Options{}, rtGuests()...)
	want := mustParse(t, fleet(101, guest.LXC, `cores: 2`))
	h.tick(want)
	h.tick(want)
	if m := h.mutations(); len(m) != 0 {
		t.Fatalf("mutations = %v; want none", m)
	}
}

// TestRedteamSignedJobThenStaleSecond: two destructive jobs an operator
// signed against the same state; after the first runs, the second is stale
// in PVE's eyes for config writes (digest) and must not apply.
func TestRedteamSignedConfigJobsSameDigest(t *testing.T) {
	h := newHarness(t, sim.Options{}, qemuGuest(101, false, map[string]string{
		"unused0": "local-lvm:vm-101-disk-3", "unused1": "local-lvm:vm-101-disk-4"}))
	env := signingEnv(t)
	useVerifier(h, env)
	g, _ := h.srv.Sim.Guest(101)
	env.Action = action.Action{Op: action.SetConfig, VMID: 101, Kind: guest.QEMU, Params: map[string]string{"delete": "unused0"}, Digest: g.Digest}
	a := env.Job(nil, env.Alice.Signer)
	env.Action.Params = map[string]string{"delete": "unused1"}
	b := env.Job(nil, env.Alice.Signer)
	h.tick(nil, a, b)
	g, _ = h.srv.Sim.Guest(101)
	_, has0 := g.Config["unused0"]
	_, has1 := g.Config["unused1"]
	if has0 == has1 {
		t.Fatalf("unused0 present %v, unused1 present %v; want exactly one deleted (the second write is stale)", has0, has1)
	}
}
