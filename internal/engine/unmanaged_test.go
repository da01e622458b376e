package engine_test

import (
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/pve"
	"github.com/steward-pve/steward/internal/sim"
)

// TestUnmanagedConfigsReported: the configs of guests desired state does
// not name are read when first seen, again only after UnmanagedEvery, at
// most 32 a tick, and reported as wire.Guest.Observed: the adoptable keys
// normalized, never a secret; managed guests carry no Observed.
func TestUnmanagedConfigsReported(t *testing.T) {
	guests := []sim.GuestSpec{
		qemuGuest(100, true, map[string]string{"cipassword": "hunter2", "sshkeys": "ssh-ed25519%20AAAA", "ciuser": "root",
			"description": "web front\n", "tags": "b;a", "onboot": "1"}),
		lxcGuest(101, false, map[string]string{"mp0": "local-lvm:vm-101-disk-1,mp=/srv,size=4G"}),
	}
	for id := 200; id < 240; id++ {
		guests = append(guests, qemuGuest(id, false, nil))
	}
	h := newHarness(t, sim.Options{}, guests...)
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	h.now = func() time.Time { return now }
	h.open()
	h.eng.UnmanagedEvery = 10 * time.Minute
	want := mustParse(t, `
apiVersion: steward/v1
kind: Fleet
hosts:
  pve:
    guests:
      239: {state: stopped}
`)
	before := h.requests.n.Load()
	w := h.tick(want).Wire()
	// 2 lists + 1 managed config + 32 unmanaged (the cap) of 41.
	if n := h.requests.n.Load() - before; n != 35 {
		t.Errorf("first tick made %d PVE requests; want 35 (2 lists, 1 managed config, 32 unmanaged configs)", n)
	}
	byID := map[int]map[string]string{}
	for _, g := range w.Guests {
		byID[g.VMID] = g.Observed
	}
	g100 := byID[100]
	for _, secret := range []string{"cipassword", "sshkeys", "ciuser"} {
		if _, ok := g100[secret]; ok {
			t.Errorf("guest 100's observed config carries %s: %v", secret, g100)
		}
	}
	for k, v := range map[string]string{"cores": "1", "memory": "1024", "ostype": "l26", "onboot": "1", "description": "web front",
		"tags": "a;b", "scsi0": "file=local-lvm:vm-100-disk-0,size=32G"} {
		if g100[k] != v {
			t.Errorf("guest 100 observed %s = %q; want %q (all: %v)", k, g100[k], v, g100)
		}
	}
	if byID[101]["mp0"] == "" || byID[101]["rootfs"] == "" {
		t.Errorf("guest 101 (lxc) observed %v; want its rootfs and mp0", byID[101])
	}
	if byID[239] != nil {
		t.Errorf("managed guest 239 carries observed config %v; want none", byID[239])
	}

	// The next tick reads only the 9 unmanaged guests not read yet.
	before = h.requests.n.Load()
	h.tick(want)
	if n := h.requests.n.Load() - before; n != 2+1+9 {
		t.Errorf("second tick made %d PVE requests; want 12 (2 lists, 1 managed, the 9 unmanaged not yet read)", n)
	}
	before = h.requests.n.Load()
	w = h.tick(want).Wire()
	if n := h.requests.n.Load() - before; n != 3 {
		t.Errorf("third tick made %d PVE requests; want 3 (nothing unmanaged is due)", n)
	}
	count := 0
	for _, g := range w.Guests {
		if g.Observed != nil {
			count++
		}
	}
	if count != 41 {
		t.Errorf("third tick reports observed config of %d guests; want 41", count)
	}
	// After UnmanagedEvery they are read again (32 a tick), and a change
	// made meanwhile shows.
	if _, err := h.client.SetConfig(t.Context(), h.srv.Sim.Node(), guest.QEMU, 100, pve.ConfigChange{Set: map[string]string{"cores": "4"}}); err != nil {
		t.Fatal(err)
	}
	now = now.Add(11 * time.Minute)
	before = h.requests.n.Load()
	w = h.tick(want).Wire()
	if n := h.requests.n.Load() - before; n != 35 {
		t.Errorf("tick after UnmanagedEvery made %d PVE requests; want 35", n)
	}
	for _, g := range w.Guests {
		if g.VMID == 100 && g.Observed["cores"] != "4" {
			t.Errorf("guest 100 observed cores %q after the refresh; want 4", g.Observed["cores"])
		}
	}
}
