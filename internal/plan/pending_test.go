package plan

import (
	"reflect"
	"testing"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/desired"
	"github.com/steward-pve/steward/internal/guest"
)

// pendingObs is a guest whose config (as written) has cores 4, with the
// given keys still pending in PVE.
func pendingObs(vmid int, kind guest.Kind, status string, pending ...string) guest.Observed {
	o := obs(vmid, kind, status, map[string]string{"cores": "4", "memory": "2048", "bios": "ovmf"})
	o.Pending = pending
	return o
}

func rebootStep(vmid int, kind guest.Kind, timeout string, keys ...string) Step {
	var ch []Change
	for _, k := range keys {
		ch = append(ch, Change{k, "pending", "applied by reboot"})
	}
	return Step{Action: action.Action{Op: action.Reboot, VMID: vmid, Kind: kind, Params: map[string]string{"timeout": timeout}}, Changes: ch}
}

func TestDiffPendingRestart(t *testing.T) {
	const Q = guest.QEMU
	cores := map[string]string{"cores": "4"}
	tests := []struct {
		name   string
		want   *desired.Guest
		actual guest.Observed
		steps  []Step
		status GuestStatus
	}{
		{name: "written, pending, restart never: pending_restart, nothing planned",
			want: &desired.Guest{Config: cores}, actual: pendingObs(101, Q, "running", "cores"),
			status: GuestStatus{VMID: 101, Phase: PendingRestart, Pending: []string{"cores"}}},
		{name: "restart allowed on a running guest: one reboot with the shutdown timeout",
			want: &desired.Guest{Config: cores, Restart: desired.RestartAllowed}, actual: pendingObs(101, Q, "running", "cores"),
			steps:  []Step{rebootStep(101, Q, "180", "cores")},
			status: GuestStatus{VMID: 101, Phase: Converging, Pending: []string{"cores"}}},
		{name: "pending keys the desired state does not manage are not its business",
			want: &desired.Guest{Config: cores, Restart: desired.RestartAllowed}, actual: pendingObs(101, Q, "running", "bios"),
			status: GuestStatus{VMID: 101, Phase: InSync}},
		{name: "an ignored key pending is not reported",
			want: &desired.Guest{Config: cores, Ignore: []string{"cores"}, Restart: desired.RestartAllowed}, actual: pendingObs(101, Q, "running", "cores"),
			status: GuestStatus{VMID: 101, Phase: InSync}},
		{name: "something still to write: write first, reboot on a later tick",
			want: &desired.Guest{Config: map[string]string{"cores": "4", "memory": "4096"}, Restart: desired.RestartAllowed}, actual: pendingObs(101, Q, "running", "cores"),
			steps:  []Step{cfgStep(101, Q, map[string]string{"memory": "4096"}, Change{"memory", "2048", "4096"})},
			status: GuestStatus{VMID: 101, Phase: Converging, Drift: []Change{{"memory", "2048", "4096"}}, Pending: []string{"cores"}}},
		{name: "observe never reboots",
			want: &desired.Guest{Mode: desired.Observe, Config: cores, Restart: desired.RestartAllowed}, actual: pendingObs(101, Q, "running", "cores"),
			status: GuestStatus{VMID: 101, Phase: PendingRestart, Pending: []string{"cores"}}},
		{name: "a stopped guest is not rebooted",
			want: &desired.Guest{Config: cores, Restart: desired.RestartAllowed}, actual: pendingObs(201, guest.LXC, "stopped", "cores"),
			status: GuestStatus{VMID: 201, Phase: PendingRestart, Pending: []string{"cores"}}},
		{name: "desired stopped: the shutdown applies it, no reboot",
			want: &desired.Guest{Config: cores, State: desired.Stopped, Restart: desired.RestartAllowed}, actual: pendingObs(101, Q, "running", "cores"),
			steps:  []Step{shutdownStep(101, Q, "180")},
			status: GuestStatus{VMID: 101, Phase: Converging, Drift: []Change{{"state", "running", "stopped"}}, Pending: []string{"cores"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := Diff(host(map[int]*desired.Guest{tt.actual.VMID: tt.want}), []guest.Observed{tt.actual}, Options{})
			if !reflect.DeepEqual(p.Steps, tt.steps) {
				t.Errorf("steps:\ngot  %+v\nwant %+v", p.Steps, tt.steps)
			}
			if len(p.Guests) != 1 || !reflect.DeepEqual(p.Guests[0], tt.status) {
				t.Errorf("status:\ngot  %+v\nwant %+v", p.Guests, tt.status)
			}
		})
	}
}

func TestRenderPendingRestart(t *testing.T) {
	p := Diff(host(map[int]*desired.Guest{
		101: {Config: map[string]string{"cores": "4"}},
		102: {Config: map[string]string{"cores": "4"}, Restart: desired.RestartAllowed},
	}), []guest.Observed{pendingObs(101, guest.QEMU, "running", "cores"), pendingObs(102, guest.QEMU, "running", "cores")}, Options{})
	want := "* 101 pending restart: cores\n~ 102 reboot to apply pending cores (timeout 180s)\n"
	if got := p.Render(); got != want {
		t.Errorf("Render:\ngot\n%s\nwant\n%s", got, want)
	}
}
