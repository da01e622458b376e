package classify

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/guest"
)

// decodeMap reads "k=v" lines into a map; nil for an empty string.
func decodeMap(s string) map[string]string {
	if s == "" {
		return nil
	}
	m := map[string]string{}
	for line := range strings.SplitSeq(s, "\n") {
		k, v, _ := strings.Cut(line, "=")
		m[k] = v
	}
	return m
}

func FuzzClassify(f *testing.F) {
	qa := "scsi0=local-lvm:vm-101-disk-0,size=32G\nide2=none,media=cdrom\nunused0=local-lvm:vm-101-disk-4\ncores=2"
	la := "rootfs=vmstore:subvol-101-disk-0,size=8G\nmp0=/mnt/foo/bar,mp=/storage"
	seeds := []struct {
		op, kind, params, actual string
		created, failed          bool
	}{
		{"start", "qemu", "", qa, false, false},
		{"config", "qemu", "cores=4\nmemory=4096", qa, false, false},
		{"config", "qemu", "scsi0=local-lvm:vm-101-disk-9", qa, false, false},
		{"config", "qemu", "scsi0=local-lvm:vm-101-disk-0,size=40G,cache=none", qa, false, false},
		{"config", "qemu", "delete=unused0", qa, false, false},
		{"config", "qemu", "ide2=local:iso/x.iso,media=cdrom", qa, false, false},
		{"config", "lxc", "rootfs=vmstore:subvol-101-disk-0,size=4G", la, false, false},
		{"config", "lxc", "delete= mp0", la, false, false},
		{"config", "lxc", "mp1=vmstore:8,mp=/x", la, false, false},
		{"resize", "qemu", "disk=scsi0\nsize=+1G", qa, false, false},
		{"resize", "lxc", "disk=rootfs\nsize=4G", la, false, false},
		{"create", "qemu", "scsi0=local-lvm:32\nname=x", "", false, false},
		{"create", "lxc", "rootfs=local-lvm:8\nforce=1", "", false, false},
		{"destroy", "qemu", "purge=1", qa, true, true},
		{"destroy", "qemu", "", qa, true, false},
		{"snapshot_rollback", "lxc", "snapname=s1", la, true, true},
		{"migrate", "qemu", "", qa, true, true},
	}
	for _, s := range seeds {
		f.Add(s.op, s.kind, 101, s.params, s.actual, s.created, s.failed)
	}
	known := []action.Op{action.Start, action.Shutdown, action.Stop, action.SetConfig, action.Resize, action.Create, action.Destroy}
	f.Fuzz(func(t *testing.T, op, kind string, vmid int, params, actual string, created, failed bool) {
		a := action.Action{Op: action.Op(op), VMID: vmid, Kind: guest.Kind(kind), Params: decodeMap(params)}
		var cfg guest.Config
		if m := decodeMap(actual); m != nil {
			cfg = guest.Config(m)
		}
		prov := Provenance{CreatedByAgent: created, CreateFailed: failed}
		v := Classify(a, cfg, prov)

		if v.Class != Benign && v.Class != Destructive {
			t.Fatalf("Class = %q; want benign or destructive", v.Class)
		}
		if v.Reason == "" {
			t.Fatal("Reason is empty; want a reason")
		}
		if !slices.IsSorted(v.Keys) || len(slices.Compact(slices.Clone(v.Keys))) != len(v.Keys) {
			t.Fatalf("Keys = %q; want sorted and unique", v.Keys)
		}
		for _, k := range v.Keys {
			if !IsDataBearing(a.Kind, k) {
				t.Fatalf("Keys has %q, which is not data-bearing for %q", k, kind)
			}
		}
		if again := Classify(a, cfg, prov); !reflect.DeepEqual(again, v) {
			t.Fatalf("Classify is not deterministic: %+v then %+v", v, again)
		}
		if !slices.Contains(known, a.Op) && v.Class != Destructive {
			t.Fatalf("op %q classified %s (%s); want destructive", op, v.Class, v.Reason)
		}
		if a.Op == action.Destroy && !(created && failed) && v.Class != Destructive {
			t.Fatalf("destroy without the agent's provenance classified %s; want destructive", v.Class)
		}
		if v.Class == Benign && a.Op == action.SetConfig {
			for k := range a.Params {
				if k != "digest" && k != "delete" && !IsDataBearing(a.Kind, k) && !isBenignKey(a.Kind, k) {
					t.Fatalf("config with unknown key %q classified benign", k)
				}
			}
			for _, k := range splitList(a.Params["delete"]) {
				if !isBenignKey(a.Kind, k) {
					t.Fatalf("config deleting %q classified benign", k)
				}
			}
		}
		if v.Class == Benign && a.Op == action.Create && cfg != nil {
			t.Fatal("create over an existing guest classified benign")
		}
	})
}
