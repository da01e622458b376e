package classify

import (
	"testing"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/guest"
)

var sink Verdict

// BenchmarkClassify measures one classification of typical actions against
// a full VM config. The "baseline/start" case (no config inspection) is the
// reference: report the others as ratios against it from the same run.
func BenchmarkClassify(b *testing.B) {
	q := qemuActual()
	cases := []struct {
		name string
		a    action.Action
	}{
		{"baseline/start", action.Action{Op: action.Start, VMID: 101, Kind: guest.QEMU}},
		{"config/cores+memory", qcfg(p{"cores": "4", "memory": "4096", "digest": "abc"})},
		{"config/disk-options", qcfg(p{"scsi1": "local-lvm:vm-101-disk-1,cache=none,discard=on,iothread=1,size=100G"})},
		{"config/hostile-mixed", qcfg(p{"cores": "8", "scsi0": "local-lvm:vm-101-disk-9", "delete": "unused0,efidisk0"})},
		{"resize/grow", action.Action{Op: action.Resize, VMID: 101, Kind: guest.QEMU, Params: p{"disk": "scsi0", "size": "40G"}}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				sink = Classify(c.a, q, Provenance{})
			}
		})
	}
}
