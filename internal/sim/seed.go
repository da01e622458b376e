package sim

import (
	"fmt"
	"strconv"

	"github.com/steward-pve/steward/internal/guest"
)

type storageDef struct {
	id, typ, content, plugin string
	total, used              int64
	shared                   int
}

// The node's storages: PVE's defaults after installation on LVM.
var storages = []storageDef{
	{id: "local", typ: "dir", content: "backup,iso,vztmpl", total: 100861726720, used: 12884901888},
	{id: "local-lvm", typ: "lvmthin", content: "images,rootdir", total: 374538165248, used: 53687091200},
}

func storageByID(id string) (storageDef, bool) {
	for _, st := range storages {
		if st.id == id {
			return st, true
		}
	}
	return storageDef{}, false
}

var (
	seedVMNames  = []string{"web", "db", "cache", "mail", "ci-runner", "gitlab", "monitoring", "backup", "dns", "proxy", "vpn", "files", "build", "k8s-node", "elastic"}
	seedCTNames  = []string{"nginx", "redis", "postgres", "pihole", "grafana", "prometheus", "syncthing", "minio", "haproxy", "unbound"}
	seedTags     = []string{"prod", "staging", "web", "db", "infra", "customer-a", "customer-b", "backup"}
	seedOSQemu   = []string{"l26", "l26", "l26", "win11", "win10", "other"}
	seedOSLXC    = []string{"debian", "ubuntu", "alpine", "debian", "centos"}
	seedDescs    = []string{"managed by steward", "customer web frontend\nowner: ops", "legacy; do not touch", "", ""}
	seedMemories = []int{1024, 2048, 4096, 8192, 16384}
)

// seedGuests adds n deterministic guests (from Options.Seed): about 60%
// QEMU, 40% LXC, most running, with disks, mount points, unused volumes,
// tags and descriptions. VMIDs count up from 100.
func (s *Sim) seedGuests(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rng
	pick := func(xs []string) string { return xs[r.IntN(len(xs))] }
	for i := 0; i < n; i++ {
		vmid := 100 + i
		kind := guest.QEMU
		if r.IntN(10) < 4 {
			kind = guest.LXC
		}
		g := newGuestState(vmid, kind)
		g.node = s.node
		c := g.config
		name := fmt.Sprintf("%s-%02d", pick(seedVMNames), i)
		if kind == guest.QEMU {
			c["name"] = name
			c["cores"] = strconv.Itoa(1 << r.IntN(3))
			c["sockets"] = "1"
			mem := seedMemories[r.IntN(len(seedMemories))]
			c["memory"] = strconv.Itoa(mem)
			if r.IntN(3) == 0 {
				c["balloon"] = strconv.Itoa(mem / 2)
			}
			c["scsihw"] = "virtio-scsi-pci"
			c["ostype"] = pick(seedOSQemu)
			bus := "scsi"
			if r.IntN(5) == 0 {
				bus = "virtio"
			}
			c[bus+"0"] = fmt.Sprintf("local-lvm:vm-%d-disk-0,iothread=1,size=%dG", vmid, 8<<r.IntN(4))
			disk := 1
			if r.IntN(3) == 0 {
				c[bus+"1"] = fmt.Sprintf("local-lvm:vm-%d-disk-1,size=%dG", vmid, 50<<r.IntN(3))
				disk++
			}
			if c["ostype"] == "win11" || r.IntN(6) == 0 {
				c["bios"] = "ovmf"
				c["machine"] = "q35"
				c["efidisk0"] = fmt.Sprintf("local-lvm:vm-%d-disk-%d,efitype=4m,pre-enrolled-keys=1,size=4M", vmid, disk)
				disk++
			}
			if r.IntN(8) == 0 {
				c["unused0"] = fmt.Sprintf("local-lvm:vm-%d-disk-%d", vmid, disk)
				g.unusedSize[c["unused0"]] = int64(32) << 30
			}
			c["ide2"] = "none,media=cdrom"
			c["net0"] = fmt.Sprintf("virtio=%s,bridge=vmbr0,firewall=1", s.randMACLocked())
			c["boot"] = "order=" + bus + "0;ide2;net0"
			c["agent"] = strconv.Itoa(r.IntN(2))
			c["smbios1"] = "uuid=" + s.uuidLocked()
			c["vmgenid"] = s.uuidLocked()
			c["meta"] = fmt.Sprintf("creation-qemu=9.2.0,ctime=%d", s.bootTime.Unix()-int64(r.IntN(1e7)))
		} else {
			c["hostname"] = fmt.Sprintf("%s-%02d", pick(seedCTNames), i)
			c["cores"] = strconv.Itoa(1 << r.IntN(3))
			c["memory"] = strconv.Itoa(256 << r.IntN(4))
			c["swap"] = "512"
			c["arch"] = "amd64"
			c["ostype"] = pick(seedOSLXC)
			c["rootfs"] = fmt.Sprintf("local-lvm:vm-%d-disk-0,size=%dG", vmid, 4<<r.IntN(3))
			disk := 1
			if r.IntN(3) == 0 {
				c["mp0"] = fmt.Sprintf("local-lvm:vm-%d-disk-1,mp=/srv/data,backup=1,size=%dG", vmid, 10<<r.IntN(3))
				disk++
			}
			if r.IntN(8) == 0 {
				c["mp1"] = "/mnt/bindmounts/shared,mp=/shared"
			}
			if r.IntN(8) == 0 {
				c["unused0"] = fmt.Sprintf("local-lvm:vm-%d-disk-%d", vmid, disk)
				g.unusedSize[c["unused0"]] = int64(8) << 30
			}
			c["net0"] = fmt.Sprintf("name=eth0,bridge=vmbr0,firewall=1,hwaddr=%s,ip=dhcp,type=veth", s.randMACLocked())
			c["unprivileged"] = "1"
			if r.IntN(2) == 0 {
				c["features"] = "nesting=1"
			}
		}
		if r.IntN(2) == 0 {
			c["onboot"] = "1"
		}
		if r.IntN(2) == 0 {
			t1, t2 := pick(seedTags), pick(seedTags)
			if t1 == t2 {
				c["tags"] = t1
			} else if t1 < t2 {
				c["tags"] = t1 + ";" + t2
			} else {
				c["tags"] = t2 + ";" + t1
			}
		}
		if d := pick(seedDescs); d != "" {
			c["description"] = d
		}
		if r.IntN(10) < 7 {
			g.running = true
			g.startedAt = s.now().Add(-timeSeconds(r.IntN(1e6)))
		}
		s.guests[vmid] = g
	}
}

func (s *Sim) uuidLocked() string {
	b := make([]byte, 16)
	for i := range b {
		b[i] = byte(s.rng.IntN(256))
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
