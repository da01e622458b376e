package normalize

import "testing"

// BenchmarkEqualPropString compares the property strings of the plan
// benchmark's fleet (hot in cache): a net device whose desired value omits
// the MAC, and a disk whose options are reordered with the size in MiB.
func BenchmarkEqualPropString(b *testing.B) {
	net := lookup(Q, "net0")
	disk := lookup(Q, "scsi0")
	for b.Loop() {
		if !net.Equal("virtio,bridge=vmbr0,firewall=1", "virtio=BC:24:11:20:4E:3F,bridge=vmbr0,firewall=1") ||
			!disk.Equal("local-lvm:vm-101-disk-0,size=32768M,ssd=1,discard=on", "local-lvm:vm-101-disk-0,discard=on,size=32G,ssd=1") {
			b.Fatal("not equal")
		}
	}
}
