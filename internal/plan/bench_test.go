package plan

import (
	"slices"
	"strconv"
	"testing"

	"github.com/steward-pve/steward/internal/desired"
	"github.com/steward-pve/steward/internal/guest"
)

// fleet builds n managed guests, half of them drifted (memory and run state),
// each with a realistic PVE config of ~20 keys; desired names 7 fields per
// guest, in PVE's returned forms for half the keys and operator forms for
// the rest.
func fleet(n int) (*desired.Host, []guest.Observed) {
	h := &desired.Host{Guests: make(map[int]*desired.Guest, n)}
	actual := make([]guest.Observed, 0, n)
	for i := range n {
		id := 100 + i
		mac := "BC:24:11:" + strconv.Itoa(10+i%89) + ":4E:3F"
		cfg := guest.Config{
			"cores": "2", "sockets": "1", "memory": "4096", "onboot": "1", "numa": "0",
			"name": "srv-" + strconv.Itoa(id), "ostype": "l26", "scsihw": "virtio-scsi-pci",
			"net0":        "virtio=" + mac + ",bridge=vmbr0,firewall=1",
			"scsi0":       "local-lvm:vm-" + strconv.Itoa(id) + "-disk-0,discard=on,size=32G,ssd=1",
			"ide2":        "local:iso/seed.iso,media=cdrom,size=380K",
			"agent":       "enabled=1",
			"boot":        "order=scsi0",
			"tags":        "prod;web",
			"meta":        "creation-qemu=10.0.2,ctime=1759586713",
			"vmgenid":     "87526c2a-ab5c-4bf2-ae53-032e08037c65",
			"smbios1":     "uuid=7bb32af1-8084-4d53-9110-212a795dc7ba",
			"description": "managed by steward",
			"serial0":     "socket", "vga": "serial0",
		}
		status := "running"
		mem := "4096"
		if i%2 == 1 {
			status = "stopped"
			mem = "8192"
		}
		actual = append(actual, guest.Observed{VMID: id, Kind: guest.QEMU, Name: cfg["name"], Status: status, Config: cfg, Digest: "c752912ca294814e0b7c18e223b7b0e73971d0dd"})
		h.Guests[id] = &desired.Guest{
			Kind:        guest.QEMU,
			State:       desired.Running,
			Description: ptr("managed by steward\n"),
			Tags:        []string{"web", "prod"},
			Config: map[string]string{
				"cores": "2", "memory": mem, "onboot": "true",
				"net0": "virtio,bridge=vmbr0,firewall=1", "scsi0": "local-lvm:vm-" + strconv.Itoa(id) + "-disk-0,size=32768M,ssd=1,discard=on",
			},
		}
	}
	// PVE lists guests in no particular order.
	slices.Reverse(actual)
	return h, actual
}

// BenchmarkDiff10k plans 10,000 managed guests of which half drifted.
// Compare with BenchmarkDiff10kBaseline from the same run.
func BenchmarkDiff10k(b *testing.B) {
	h, actual := fleet(10000)
	p := Diff(h, actual, Options{})
	if len(p.Steps) != 10000 || len(p.Guests) != 10000 {
		b.Fatalf("got %d steps, %d statuses; want 10000 each (5000 config + 5000 start)", len(p.Steps), len(p.Guests))
	}
	b.ReportAllocs()
	for b.Loop() {
		Diff(h, actual, Options{})
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/10000, "ns/guest")
}

// BenchmarkDiff10kBaseline is the floor a planner cannot beat: sort the
// desired vmids, index the actual guests, and copy every desired and actual
// config map once.
func BenchmarkDiff10kBaseline(b *testing.B) {
	h, actual := fleet(10000)
	b.ReportAllocs()
	for b.Loop() {
		byID, ids := indexFleet(h, actual)
		n := 0
		for _, id := range ids {
			a := &actual[byID[id]]
			d := make(map[string]string, len(h.Guests[id].Config))
			for k, v := range h.Guests[id].Config {
				d[k] = v
			}
			c := a.Config.Clone()
			n += len(d) + len(c)
		}
		if n == 0 {
			b.Fatal("nothing copied")
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/10000, "ns/guest")
}

// BenchmarkDiff10kLookupFloor is the memory floor of any planner on this
// fleet: find each desired guest's observed guest and read every managed
// value from the cold desired and actual config maps, comparing nothing.
// Diff's cost above it is normalization, building the plan, and GC.
func BenchmarkDiff10kLookupFloor(b *testing.B) {
	h, actual := fleet(10000)
	b.ReportAllocs()
	for b.Loop() {
		byID, ids := indexFleet(h, actual)
		n := 0
		for _, id := range ids {
			g := h.Guests[id]
			a := &actual[byID[id]]
			for k, v := range g.Config {
				n += len(a.Config[k]) + len(v)
			}
			n += len(a.Config["description"]) + len(*g.Description) + len(a.Config["tags"]) + len(g.Tags)
		}
		if n == 0 {
			b.Fatal("nothing read")
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/10000, "ns/guest")
}

// indexFleet is the part both baselines share with any planner: the
// observed guests indexed by vmid and the desired vmids in order.
func indexFleet(h *desired.Host, actual []guest.Observed) (map[int]int, []int) {
	byID := make(map[int]int, len(actual))
	for i := range actual {
		byID[actual[i].VMID] = i
	}
	ids := make([]int, 0, len(h.Guests))
	for id := range h.Guests {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return byID, ids
}
