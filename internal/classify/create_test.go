package classify

import (
	"strings"
	"testing"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/guest"
)

func TestClassifyClone(t *testing.T) {
	existing := guest.Config{"scsi0": "local-lvm:vm-120-disk-0,size=32G"}
	tests := []struct {
		name   string
		params map[string]string
		actual guest.Config
		kind   guest.Kind
		want   Class
		reason string
	}{
		{"full clone onto a storage", map[string]string{"source": "9000", "full": "1", "storage": "local-lvm", "name": "web-1", "pool": "prod"}, nil, guest.QEMU, Benign, "clone: new guest 120 from 9000"},
		{"linked clone", map[string]string{"source": "9000"}, nil, guest.QEMU, Benign, "new guest 120"},
		{"onto an existing guest", map[string]string{"source": "9000"}, existing, guest.QEMU, Destructive, "guest 120 exists"},
		{"unknown parameter", map[string]string{"source": "9000", "target": "pve-b"}, nil, guest.QEMU, Destructive, `parameter "target" is not on the qemu clone allow-list`},
		{"no source", map[string]string{"full": "1"}, nil, guest.QEMU, Destructive, "not another guest's vmid"},
		{"onto itself", map[string]string{"source": "120"}, nil, guest.QEMU, Destructive, "not another guest's vmid"},
		{"an unprivileged container", map[string]string{"source": "9001", "full": "1", "storage": "local-lvm", "hostname": "ct-1", "pool": "prod", "unprivileged": "1"}, nil, guest.LXC, Benign, "clone: new guest 120 from 9001"},
		{"a linked unprivileged container", map[string]string{"source": "9001", "unprivileged": "1"}, nil, guest.LXC, Benign, "new guest 120"},
		{"a privileged container", map[string]string{"source": "9001", "unprivileged": "0"}, nil, guest.LXC, Destructive, "container 9001 is privileged"},
		{"a container of unknown privilege", map[string]string{"source": "9001"}, nil, guest.LXC, Destructive, "not known"},
		{"a container clone with a qemu name", map[string]string{"source": "9001", "name": "x", "unprivileged": "1"}, nil, guest.LXC, Destructive, `parameter "name" is not on the lxc clone allow-list`},
		{"a qemu clone claiming unprivileged", map[string]string{"source": "9000", "unprivileged": "1"}, nil, guest.QEMU, Destructive, `parameter "unprivileged" is not on the qemu clone allow-list`},
		{"a container onto an existing one", map[string]string{"source": "9001", "unprivileged": "1"}, guest.Config{"rootfs": "local-lvm:vm-120-disk-0,size=8G"}, guest.LXC, Destructive, "guest 120 exists"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := Classify(action.Action{Op: action.Clone, VMID: 120, Kind: tt.kind, Params: tt.params}, tt.actual, Provenance{})
			if v.Class != tt.want || !strings.Contains(v.Reason, tt.reason) {
				t.Fatalf("got %s %q; want %s containing %q", v.Class, v.Reason, tt.want, tt.reason)
			}
		})
	}
}

// Create-time keys (cloud-init, boot order, ...) on a config write are
// benign only on the agent's own guest that has not run since it was made.
func TestClassifyFreshGuestConfig(t *testing.T) {
	a := action.Action{Op: action.SetConfig, VMID: 120, Kind: guest.QEMU, Digest: "d",
		Params: map[string]string{"ciuser": "admin", "sshkeys": "ssh-ed25519%20AAAA", "ipconfig0": "ip=dhcp", "boot": "order=scsi0", "cores": "4"}}
	actual := guest.Config{"scsi0": "local-lvm:vm-120-disk-0,size=3G"}
	for _, tc := range []struct {
		name string
		prov Provenance
		want Class
	}{
		{"fresh", Provenance{CreatedByAgent: true, Fresh: true}, Benign},
		{"agent's but started", Provenance{CreatedByAgent: true}, Destructive},
		{"fresh claimed without the journal", Provenance{Fresh: true}, Destructive},
		{"someone else's", Provenance{}, Destructive},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if v := Classify(a, actual, tc.prov); v.Class != tc.want {
				t.Fatalf("got %s (%s); want %s", v.Class, v.Reason, tc.want)
			}
		})
	}
	// Data stays judged as always, fresh or not.
	b := action.Action{Op: action.SetConfig, VMID: 120, Kind: guest.QEMU, Digest: "d", Params: map[string]string{"scsi0": "local-lvm:vm-7-disk-0"}}
	if v := Classify(b, actual, Provenance{CreatedByAgent: true, Fresh: true}); v.Class != Destructive {
		t.Fatalf("replacing a fresh guest's disk: %s; want destructive", v.Class)
	}
	// The args escape hatch is never create-time.
	c := action.Action{Op: action.SetConfig, VMID: 120, Kind: guest.QEMU, Digest: "d", Params: map[string]string{"args": "-fda /etc/shadow"}}
	if v := Classify(c, actual, Provenance{CreatedByAgent: true, Fresh: true}); v.Class != Destructive {
		t.Fatalf("args on a fresh guest: %s; want destructive", v.Class)
	}
}

func TestClassifyCicustom(t *testing.T) {
	for _, tc := range []struct {
		value string
		want  Class
	}{
		{"user=local:snippets/user.yaml", Benign},
		{"user=local:snippets/u.yaml,network=local:snippets/n.yaml,meta=nfs:snippets/m.yaml,vendor=local:snippets/v.yaml", Benign},
		{"user=local:iso/boot.iso", Destructive},
		{"user=/etc/shadow", Destructive},
		{"user=local:snippets/../../../etc/shadow", Destructive},
		{"hook=local:snippets/x", Destructive},
	} {
		a := action.Action{Op: action.Create, VMID: 122, Kind: guest.QEMU, Params: map[string]string{"scsi0": "local-lvm:4", "ide2": "local-lvm:cloudinit", "cicustom": tc.value}}
		if v := Classify(a, nil, Provenance{}); v.Class != tc.want {
			t.Errorf("create with cicustom=%s: %s (%s); want %s", tc.value, v.Class, v.Reason, tc.want)
		}
	}
}
