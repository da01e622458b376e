package desired

import (
	"errors"
	"os"
	"testing"

	"github.com/steward-pve/steward/internal/guest"
)

// FuzzParse checks that Parse never panics, that it returns exactly one of a
// document or an error, that every error names a path or a line, and that
// an accepted document is valid and survives Validate.
func FuzzParse(f *testing.F) {
	fleet, err := os.ReadFile("testdata/fleet.yaml")
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{
		string(fleet),
		"",
		"# comment\n",
		"apiVersion: steward/v1\nkind: Fleet\n",
		`{"apiVersion":"steward/v1","kind":"Fleet","hosts":{"h":{"guests":{"100":{"config":{"cores":2}}}}}}`,
		"apiVersion: steward/v1\nkind: Fleet\nhosts:\n  a: &x {}\n  b: *x\n",
		"apiVersion: steward/v1\nkind: Fleet\nhosts:\n  h:\n    guests:\n      100: {tags: [a, a], ignore: [x]}\n",
		"kind: [\n",
		"---\n---\n",
		"\xff\xfe",
		"apiVersion: steward/v1\nkind: Fleet\nhosts:\n  h:\n    guests:\n      100:\n        config: {memory: 1e400}\n",
		"apiVersion: steward/v1\nkind: Fleet\nhosts:\n  h:\n    guests:\n      100:\n        config: {memory: 1e308, cores: 99999999999999999999}\n",
		"apiVersion: steward/v1\nkind: Fleet\nhosts:\n  h:\n    guests:\n      100:\n        kind: qemu\n        config: {cores: two, corse: 2, memory: 2G, net0: 'virtio,bridge=vmbr0,tag=5000'}\n",
		"apiVersion: steward/v1\nkind: Fleet\nhosts:\n  h:\n    guests:\n      100:\n        config: {swap: 512, net0: 'name=eth0,bridge=vmbr0', onboot: yes, cpulimit: 1.50}\n",
		"apiVersion: steward/v1\nkind: Fleet\nhosts:\n  h:\n    guests:\n      100:\n        kind: lxc\n        config: {rootfs: 'local-lvm:vm-100-disk-0,size=8G', mp0: 'local:1,mp=/x', cores: 0x10, memory: 017}\n",
		`{"apiVersion":"steward/v1","kind":"Fleet","hosts":{"h":{"guests":{"100":{"config":{"cores":1e3,"cpulimit":-0.0,"scsi31":"x"}}}}}}`,
		"apiVersion: steward/v1\nkind: Fleet\nhosts:\n  h:\n    guests:\n      120:\n        kind: qemu\n        create: {clone: 9000, full: true, storage: local-lvm, pool: a/b}\n        config: {sshkeys: [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOldEEHXRJbKuE453AGQyJq8GVUpkK1aV9xjsaW3kdJ0 op\"], ciuser: admin}\n",
		"apiVersion: steward/v1\nkind: Fleet\nhosts:\n  h:\n    guests:\n      130:\n        kind: lxc\n        create: {ostemplate: 'local:vztmpl/d.tar.zst', disks: {rootfs: 'local-lvm:8', scsi0: x}}\n",
		`{"apiVersion":"steward/v1","kind":"Fleet","hosts":{"h":{"guests":{"121":{"kind":"qemu","create":{"disks":{"scsi0":"local-lvm:32"},"full":false,"clone":0}}}}}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		doc, err := Parse(data)
		if (doc == nil) == (err == nil) {
			t.Fatalf("got doc %v and err %v; want exactly one", doc, err)
		}
		if err != nil {
			var errs []error
			if u, ok := err.(interface{ Unwrap() []error }); ok {
				errs = u.Unwrap()
			} else {
				errs = []error{err}
			}
			for _, e := range errs {
				var fe *FieldError
				if !errors.As(e, &fe) {
					t.Fatalf("error %q (%T) is not a *FieldError", e, e)
				}
				if fe.Path == "" && fe.Line <= 0 {
					t.Fatalf("error %q names neither a path nor a line", e)
				}
			}
			return
		}
		if err := doc.Validate(); err != nil {
			t.Fatalf("Parse accepted a document that Validate rejects: %v", err)
		}
		// Every config value of an accepted guest passes PVE's schema for
		// its pinned kind, and for a guest without one CheckKind names
		// every problem of a kind with its path and line.
		for _, h := range doc.Hosts {
			if h == nil {
				continue
			}
			for _, g := range h.Guests {
				for _, kind := range []guest.Kind{guest.QEMU, guest.LXC} {
					err := g.CheckKind(kind)
					if err == nil {
						continue
					}
					for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
						var fe *FieldError
						if !errors.As(e, &fe) || fe.Path == "" || fe.Line <= 0 {
							t.Fatalf("CheckKind(%s) error %q lacks a path or line", kind, e)
						}
					}
				}
			}
		}
	})
}
