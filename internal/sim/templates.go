package sim

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/steward-pve/steward/internal/guest"
)

func (t *routeTable) addTemplateRoutes() {
	t.add("GET", "/nodes/{node}/storage/{storage}/content", (*Sim).getContent)
}

// Templates seeded by Options.Templates and AddTemplates: what creating a
// guest needs, as an operator prepares it on a fresh PVE (a cloud image
// imported as VM 9000 with a cloud-init drive and converted to a template;
// a container template downloaded with pveam).
const (
	TemplateVMID   = 9000
	TemplateVztmpl = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"
	// TemplateCTVMID is the container template: a container made from
	// TemplateVztmpl and converted to a template (pct template), its
	// rootfs the base volume local-lvm:base-9001-disk-0.
	TemplateCTVMID = 9001
)

// vztmplVol is a container template volume in a storage's vztmpl content.
type vztmplVol struct {
	volid string
	size  int64
	ctime int64
}

// AddTemplates adds the QEMU template TemplateVMID (template=1, the disk
// local-lvm:base-9000-disk-0, the cloud-init drive
// local-lvm:vm-9000-cloudinit on ide2), the unprivileged container
// template TemplateCTVMID (template=1, rootfs local-lvm:base-9001-disk-0)
// and the container template volume TemplateVztmpl in the storage local's
// vztmpl content. It fails if guest 9000 or 9001 exists; the volume is
// added only once.
func (s *Sim) AddTemplates() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range []int{TemplateVMID, TemplateCTVMID} {
		if _, ok := s.guests[id]; ok {
			return fmt.Errorf("sim: guest %d already exists", id)
		}
	}
	g := newGuestState(TemplateVMID, guest.QEMU)
	g.node = s.node
	c := g.config
	c["name"] = "debian-12-cloud"
	c["template"] = "1"
	c["cores"] = "2"
	c["sockets"] = "1"
	c["memory"] = "2048"
	c["ostype"] = "l26"
	c["scsihw"] = "virtio-scsi-pci"
	c["scsi0"] = fmt.Sprintf("local-lvm:base-%d-disk-0,iothread=1,size=3G", TemplateVMID)
	c["ide2"] = fmt.Sprintf("local-lvm:vm-%d-cloudinit,media=cdrom", TemplateVMID)
	c["boot"] = "order=scsi0"
	c["serial0"] = "socket"
	c["vga"] = "serial0"
	c["agent"] = "1"
	c["ipconfig0"] = "ip=dhcp"
	c["net0"] = fmt.Sprintf("virtio=%s,bridge=vmbr0", s.randMACLocked())
	c["smbios1"] = "uuid=" + s.uuidLocked()
	c["vmgenid"] = s.uuidLocked()
	c["meta"] = fmt.Sprintf("creation-qemu=10.0.2,ctime=%d", s.bootTime.Unix())
	s.guests[TemplateVMID] = g

	ct := newGuestState(TemplateCTVMID, guest.LXC)
	ct.node = s.node
	c = ct.config
	c["hostname"] = "debian-12-ct"
	c["template"] = "1"
	c["arch"] = "amd64"
	c["ostype"] = "debian"
	c["cores"] = "1"
	c["memory"] = "512"
	c["swap"] = "512"
	c["rootfs"] = fmt.Sprintf("local-lvm:base-%d-disk-0,size=8G", TemplateCTVMID)
	c["net0"] = fmt.Sprintf("name=eth0,bridge=vmbr0,hwaddr=%s,ip=dhcp,type=veth", s.randMACLocked())
	c["features"] = "nesting=1"
	c["unprivileged"] = "1"
	s.guests[TemplateCTVMID] = ct
	s.addVztmplLocked(TemplateVztmpl, 126837209)
	return nil
}

func (s *Sim) addVztmplLocked(volid string, size int64) {
	for _, v := range s.vztmpl {
		if v.volid == volid {
			return
		}
	}
	s.vztmpl = append(s.vztmpl, vztmplVol{volid: volid, size: size, ctime: s.bootTime.Unix()})
}

func (s *Sim) vztmplExistsLocked(volid string) bool {
	for _, v := range s.vztmpl {
		if v.volid == volid {
			return true
		}
	}
	return false
}

// getContent is pve-storage API2::Storage::Content index: the storage's
// volumes, filtered by content type and owner. Guest images are listed
// only to a token that may audit their owner (as PVE filters with
// VM.Audit); container templates to anyone who may read the storage (the
// schema's check). Images are those the guests' configs, snapshots and
// unusedN name (see volumeSizeLocked), cloud-init drives included;
// formats and sizes as the storage reports them.
func (s *Sim) getContent(q *request) response {
	sid := q.params["storage"]
	st, ok := storageByID(sid)
	if !ok {
		return fail(500, "storage '%s' does not exist", sid)
	}
	want := q.params["content"]
	if want != "" && !containsStr(strings.Split(st.content, ","), want) {
		return reply([]any{}) // PVE lists nothing of a type the storage does not hold
	}
	owner := 0
	if v := q.params["vmid"]; v != "" {
		owner, _ = strconv.Atoi(v)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []any{}
	if (want == "" || want == "vztmpl") && owner == 0 {
		for _, v := range s.vztmpl {
			vsid, volname, _ := strings.Cut(v.volid, ":")
			if vsid != sid {
				continue
			}
			vn, err := parseVolName(st, volname)
			if err != nil {
				continue
			}
			out = append(out, map[string]any{"volid": v.volid, "content": "vztmpl", "format": vn.format, "size": v.size, "ctime": v.ctime})
		}
	}
	if want == "" || want == "images" || want == "rootdir" {
		seen := map[string]bool{}
		for _, g := range s.sortedGuestsLocked() {
			if (owner != 0 && g.vmid != owner) || !canAudit(q.tok, g.vmid) {
				continue
			}
			for _, key := range sortedKeys(g.config) {
				vol := imageVolume(g.config[key])
				vsid, volname, _ := strings.Cut(vol, ":")
				if vol == "" || vsid != sid || seen[vol] {
					continue
				}
				vn, err := parseVolName(st, volname)
				if err != nil || vn.vtype != "images" {
					continue
				}
				seen[vol] = true
				size, _ := s.volumeSizeLocked(vol)
				if isCloudinitVolume(vol) && size == 0 {
					size = cloudinitSize
				}
				content := "images"
				if g.kind == guest.LXC {
					content = "rootdir"
				}
				if want != "" && want != content {
					continue
				}
				e := map[string]any{"volid": vol, "content": content, "format": vn.format, "size": size, "vmid": vn.owner, "ctime": s.bootTime.Unix()}
				if st.typ != "dir" {
					e["used"] = 0
				}
				out = append(out, e)
			}
		}
	}
	return reply(out)
}

// cloudinitRE is a cloud-init volume id (drive_is_cloudinit).
var cloudinitRE = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9\-_.]*:(\d+/)?vm-\d+-cloudinit(\.(raw|qcow2|vmdk))?$`)

// cloudinitSize is qemu-server's CLOUDINIT_DISK_SIZE (4 MiB).
const cloudinitSize = int64(4 << 20)

// imageVolume is the volume of a drive or mount point value, cloud-init
// drives included (volumeOf leaves them out with the other cdroms).
func imageVolume(v string) string {
	if vol := volumeOf(v); vol != "" {
		return vol
	}
	first, _, _ := strings.Cut(v, ",")
	if isCloudinitVolume(first) {
		return first
	}
	return ""
}

// isCloudinitVolume is qemu-server's drive_is_cloudinit: the volume name
// is vm-<vmid>-cloudinit (with a format suffix on file storages).
func isCloudinitVolume(vol string) bool {
	return cloudinitRE.MatchString(vol)
}
