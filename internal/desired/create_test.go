package desired

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/steward-pve/steward/internal/guest"
)

const (
	createHead = "apiVersion: steward/v1\nkind: Fleet\nhosts:\n  pve-a:\n    guests:\n      120:\n"
	testKey    = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOldEEHXRJbKuE453AGQyJq8GVUpkK1aV9xjsaW3kdJ0 op@ws"
	testKeyEnc = "ssh-ed25519%20AAAAC3NzaC1lZDI1NTE5AAAAIOldEEHXRJbKuE453AGQyJq8GVUpkK1aV9xjsaW3kdJ0%20op%40ws"
)

func TestParseCreate(t *testing.T) {
	yes := true
	tests := []struct {
		name string
		in   string
		want *Create
	}{
		{"clone", "        kind: qemu\n        create: {clone: 9000, full: true, storage: local-lvm, name: web-1, pool: prod}\n",
			&Create{Clone: 9000, Full: &yes, Storage: "local-lvm", Name: "web-1", Pool: "prod"}},
		{"linked clone by default", "        kind: qemu\n        create: {clone: 9000}\n", &Create{Clone: 9000}},
		{"container clone", "        kind: lxc\n        create: {clone: 9001, full: true, storage: local-lvm, name: ct-1, pool: prod}\n",
			&Create{Clone: 9001, Full: &yes, Storage: "local-lvm", Name: "ct-1", Pool: "prod"}},
		{"qemu from scratch", "        kind: qemu\n        create:\n          disks:\n            scsi0: local-lvm:32\n            ide2: local:iso/debian-12.iso,media=cdrom\n",
			&Create{Disks: map[string]string{"scsi0": "local-lvm:32", "ide2": "local:iso/debian-12.iso,media=cdrom"}}},
		{"qemu with no disks", "        kind: qemu\n        create: {}\n", &Create{}},
		{"lxc", "        kind: lxc\n        create: {ostemplate: \"local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst\", storage: local-lvm, disks: {rootfs: \"local-lvm:8\", mp0: \"local-lvm:16,mp=/srv\"}}\n",
			&Create{OSTemplate: "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst", Storage: "local-lvm", Disks: map[string]string{"rootfs": "local-lvm:8", "mp0": "local-lvm:16,mp=/srv"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc, err := Parse([]byte(createHead + tt.in))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			got := doc.ForHost("pve-a").Guests[120].Create
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v; want %+v", got, tt.want)
			}
			// JSON round trip: what the hub stores parses back the same.
			b, err := json.Marshal(doc)
			if err != nil {
				t.Fatal(err)
			}
			var back Document
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatalf("re-parsing %s: %v", b, err)
			}
			if !reflect.DeepEqual(back.ForHost("pve-a").Guests[120].Create, tt.want) {
				t.Errorf("after a JSON round trip: %+v; want %+v", back.ForHost("pve-a").Guests[120].Create, tt.want)
			}
		})
	}
}

// Bad create blocks name the file, the line and the path.
func TestParseCreateErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"kind not pinned", "        create: {clone: 9000}\n", "fleet.yaml:7: hosts.pve-a.guests.120.create: creating a guest needs its kind"},
		{"unknown field", "        kind: qemu\n        create: {clone: 9000, ful: true}\n", "fleet.yaml:8: hosts.pve-a.guests.120.create.ful: unknown field (want clone, full, storage, name, pool, disks, ostemplate)"},
		{"clone not a number", "        kind: qemu\n        create: {clone: template}\n", "fleet.yaml:8: hosts.pve-a.guests.120.create.clone: want the vmid of the guest to clone"},
		{"clone quoted", "        kind: qemu\n        create: {clone: \"9000\"}\n", "create.clone: want the vmid of the guest to clone"},
		{"clone out of range", "        kind: qemu\n        create: {clone: 99}\n", "fleet.yaml:8: hosts.pve-a.guests.120.create.clone: vmid 99 out of range"},
		{"container clone with ostemplate", "        kind: lxc\n        create: {clone: 9001, ostemplate: \"local:vztmpl/x.tar.zst\"}\n", "create.ostemplate: ostemplate is for containers from scratch, not for a clone"},
		{"container clone storage linked", "        kind: lxc\n        create: {clone: 9001, full: false, storage: local-lvm}\n", "create.storage: a target storage needs a full clone"},
		{"container clone bad hostname", "        kind: lxc\n        create: {clone: 9001, name: \"web_1\"}\n", "create.name: invalid value \"web_1\""},
		{"container clone and rootfs", "        kind: lxc\n        create:\n          clone: 9001\n          disks: {rootfs: local-lvm:8}\n", "create.disks: a clone copies the source's disks"},
		{"clone and disks", "        kind: qemu\n        create:\n          clone: 9000\n          disks: {scsi0: local-lvm:8}\n", "fleet.yaml:10: hosts.pve-a.guests.120.create.disks: a clone copies the source's disks"},
		{"storage for a linked clone", "        kind: qemu\n        create: {clone: 9000, storage: local-lvm}\n", "create.storage: a target storage needs a full clone"},
		{"full not a boolean", "        kind: qemu\n        create: {clone: 9000, full: yes please}\n", "create.full: want true or false"},
		{"full without clone", "        kind: qemu\n        create: {full: true}\n", "create.full: full is for clones"},
		{"name without clone", "        kind: qemu\n        create: {name: web}\n", "create.name: name is a clone's parameter; from scratch, set config.name"},
		{"bad clone name", "        kind: qemu\n        create: {clone: 9000, name: \"web 1\"}\n", "create.name: invalid value \"web 1\""},
		{"bad pool", "        kind: qemu\n        create: {clone: 9000, pool: \"bad pool!\"}\n", "create.pool: invalid value \"bad pool!\""},
		{"lxc without ostemplate", "        kind: lxc\n        create: {disks: {rootfs: local-lvm:8}}\n", "fleet.yaml:8: hosts.pve-a.guests.120.create: a container is created from a template"},
		{"bad ostemplate", "        kind: lxc\n        create: {ostemplate: debian.tar.zst}\n", "create.ostemplate: invalid ostemplate \"debian.tar.zst\""},
		{"ostemplate for qemu", "        kind: qemu\n        create: {ostemplate: \"local:vztmpl/d.tar.zst\"}\n", "create.ostemplate: ostemplate is for containers"},
		{"qemu storage from scratch", "        kind: qemu\n        create: {storage: local-lvm}\n", "create.storage: a qemu guest from scratch names its storage in each disk"},
		{"not a disk key", "        kind: qemu\n        create:\n          disks:\n            net0: virtio,bridge=vmbr0\n", "fleet.yaml:10: hosts.pve-a.guests.120.create.disks.net0: not a disk key of a qemu guest"},
		{"lxc disk key on qemu", "        kind: qemu\n        create: {disks: {rootfs: local-lvm:8}}\n", "create.disks.rootfs: not a disk key of a qemu guest"},
		{"bad disk value", "        kind: qemu\n        create: {disks: {scsi0: \"local-lvm:8,iothread=maybe\"}}\n", "create.disks.scsi0: invalid value for a qemu guest"},
		{"disk also in config", "        kind: qemu\n        create: {disks: {scsi0: local-lvm:8}}\n        config: {scsi0: local-lvm:8}\n", "create.disks.scsi0: also set in config.scsi0"},
		{"null create", "        kind: qemu\n        create:\n", "fleet.yaml:8: hosts.pve-a.guests.120.create: null is not a create block"},
		{"create is a list", "        kind: qemu\n        create: [clone]\n", "create: want a create block (a mapping), got a list"},
		{"sshkeys not a key", "        kind: qemu\n        config: {sshkeys: \"hello world\"}\n", "fleet.yaml:8: hosts.pve-a.guests.120.config.sshkeys: key 1: not an SSH public key"},
		{"sshkeys map", "        kind: qemu\n        config:\n          sshkeys: {a: b}\n", "config.sshkeys: want SSH public keys"},
		{"cipassword", "        kind: qemu\n        config: {cipassword: hunter2}\n", "config.cipassword: key cannot be managed: PVE stores only a hash"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc, err := ParseFile("fleet.yaml", []byte(createHead+tt.in))
			if err == nil {
				t.Fatalf("ParseFile: got nil error, doc %+v; want %q", doc.ForHost("pve-a").Guests[120], tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got error %q; want it to contain %q", err, tt.want)
			}
		})
	}
}

// sshkeys are written as they are, a string or a list, and stored
// URL-encoded as PVE stores them; an already encoded value is kept.
func TestParseSSHKeys(t *testing.T) {
	const ecdsa = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEU6uAJiG+lzVyEpR1in7vABK4+FmU/hv1da6sEWejtHcYVgCRKCQjtA/DaFTKRsdxXQdr4gS6RoKwcz1AqTztU= ci"
	for _, tc := range []struct {
		name, in, want string
	}{
		{"string", "          sshkeys: \"" + testKey + "\"\n", testKeyEnc},
		{"encoded", "          sshkeys: " + testKeyEnc + "\n", testKeyEnc},
		{"list", "          sshkeys:\n            - " + testKey + "\n            - \"" + ecdsa + "\"\n",
			testKeyEnc + "%0Aecdsa-sha2-nistp256%20AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEU6uAJiG%2BlzVyEpR1in7vABK4%2BFmU%2Fhv1da6sEWejtHcYVgCRKCQjtA%2FDaFTKRsdxXQdr4gS6RoKwcz1AqTztU%3D%20ci"},
		{"block", "          sshkeys: |\n            " + testKey + "\n\n", testKeyEnc},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc, err := Parse([]byte(createHead + "        kind: qemu\n        config:\n" + tc.in))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			g := doc.ForHost("pve-a").Guests[120]
			if got := g.Config["sshkeys"]; got != tc.want {
				t.Fatalf("sshkeys = %q; want %q", got, tc.want)
			}
			if g.Kind != guest.QEMU {
				t.Fatal("kind lost")
			}
		})
	}
}
