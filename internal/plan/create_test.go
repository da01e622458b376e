package plan

import (
	"reflect"
	"testing"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/desired"
	"github.com/steward-pve/steward/internal/guest"
)

func parseHost(t *testing.T, guests string) *desired.Host {
	t.Helper()
	d, err := desired.Parse([]byte("apiVersion: steward/v1\nkind: Fleet\nhosts:\n  h:\n    guests:\n" + guests))
	if err != nil {
		t.Fatalf("desired.Parse: %v", err)
	}
	return d.ForHost("h")
}

func TestDiffCreate(t *testing.T) {
	tests := []struct {
		name   string
		guests string
		phase  Phase
		err    string
		want   []action.Action
	}{
		{"missing without create", "      120: {kind: qemu, state: running}\n", Error, "not found on this host", nil},
		{"clone", "      120:\n        kind: qemu\n        state: running\n        create: {clone: 9000, full: true, storage: local-lvm, pool: prod}\n        config: {name: web-1, cores: 4, ciuser: admin}\n",
			Converging, "", []action.Action{{Op: action.Clone, VMID: 120, Kind: guest.QEMU,
				Params: map[string]string{"source": "9000", "full": "1", "storage": "local-lvm", "pool": "prod", "name": "web-1"}}}},
		{"linked clone named by create", "      120:\n        kind: qemu\n        create: {clone: 9000, full: false, name: other}\n        config: {name: web-1}\n",
			Converging, "", []action.Action{{Op: action.Clone, VMID: 120, Kind: guest.QEMU,
				Params: map[string]string{"source": "9000", "full": "0", "name": "other"}}}},
		{"qemu from scratch", "      121:\n        kind: qemu\n        state: running\n        description: hi\n        tags: [web, prod, web]\n        create: {disks: {scsi0: \"local-lvm:32\"}, pool: prod}\n        config: {name: s, onboot: yes, net0: \"virtio,bridge=vmbr0\", memory: 2048, cores: 2}\n        ignore: [cores]\n",
			Converging, "", []action.Action{{Op: action.Create, VMID: 121, Kind: guest.QEMU,
				Params: map[string]string{"scsi0": "local-lvm:32", "pool": "prod", "name": "s", "onboot": "1", "net0": "virtio,bridge=vmbr0", "memory": "2048", "description": "hi", "tags": "prod;web"}}}},
		{"lxc unprivileged by default", "      130:\n        kind: lxc\n        create: {ostemplate: \"local:vztmpl/d.tar.zst\", storage: local-lvm}\n        config: {hostname: ct}\n",
			Converging, "", []action.Action{{Op: action.Create, VMID: 130, Kind: guest.LXC,
				Params: map[string]string{"ostemplate": "local:vztmpl/d.tar.zst", "storage": "local-lvm", "hostname": "ct", "unprivileged": "1"}}}},
		{"lxc privileged as desired says", "      130:\n        kind: lxc\n        create: {ostemplate: \"local:vztmpl/d.tar.zst\"}\n        config: {unprivileged: false}\n",
			Converging, "", []action.Action{{Op: action.Create, VMID: 130, Kind: guest.LXC,
				Params: map[string]string{"ostemplate": "local:vztmpl/d.tar.zst", "unprivileged": "0"}}}},
		{"observe mode reports, creates nothing", "      120:\n        kind: qemu\n        mode: observe\n        create: {clone: 9000}\n", DriftObserved, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := Diff(parseHost(t, tt.guests), nil, Options{})
			if len(p.Guests) != 1 {
				t.Fatalf("guests = %+v; want one", p.Guests)
			}
			st := p.Guests[0]
			if st.Phase != tt.phase || st.Err != tt.err {
				t.Fatalf("status = %s %q; want %s %q", st.Phase, st.Err, tt.phase, tt.err)
			}
			var got []action.Action
			for _, s := range p.Steps {
				got = append(got, s.Action)
				if len(s.Changes) != 1 || s.Changes[0].Key != CreateKey {
					t.Errorf("changes = %+v; want one %q change", s.Changes, CreateKey)
				}
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("steps = %+v; want %+v", got, tt.want)
			}
			if tt.phase != Error && (len(st.Drift) != 1 || st.Drift[0].Key != CreateKey) {
				t.Errorf("drift = %+v; want the guest's creation", st.Drift)
			}
		})
	}
}

// Once the guest exists, its create block no longer matters: the plan is
// the config and run state of any guest, config first.
func TestDiffCreatedGuestPlansConfigThenState(t *testing.T) {
	want := parseHost(t, "      120:\n        kind: qemu\n        state: running\n        create: {clone: 9000}\n        config: {name: web-1, cores: 4}\n")
	actual := []guest.Observed{{VMID: 120, Kind: guest.QEMU, Status: "stopped", Digest: "d1",
		Config: guest.Config{"name": "Copy-of-VM-debian", "cores": "2"}}}
	p := Diff(want, actual, Options{})
	if len(p.Steps) != 2 || p.Steps[0].Action.Op != action.SetConfig || p.Steps[1].Action.Op != action.Start {
		t.Fatalf("steps = %+v; want config then start", p.Steps)
	}
}

func TestRenderCreate(t *testing.T) {
	p := Diff(parseHost(t, "      120:\n        kind: qemu\n        create: {clone: 9000, full: true, storage: local-lvm}\n"), nil, Options{})
	if got, want := p.Render(), "+ 120 create clone of 9000 (full onto local-lvm)\n"; got != want {
		t.Fatalf("Render = %q; want %q", got, want)
	}
}
