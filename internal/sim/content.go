package sim

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

func (t *routeTable) addContentRoutes() {
	t.add("GET", "/nodes/{node}/storage/{storage}/content/{volume}", (*Sim).getVolume)
}

// PVE's storage layout for the simulated storages (pve-storage defaults:
// the installer's LVM-thin volume group "pve", the directory /var/lib/vz).
const (
	lvmVG   = "pve"
	dirPath = "/var/lib/vz"
)

var (
	// volumeIDRE is pve-storage Plugin::parse_volume_id.
	volumeIDRE = regexp.MustCompile(`(?i)^([a-z][a-z0-9\-_.]*[a-z0-9]):(.+)$`)
	// lvmNameRE is LVMPlugin/LvmThinPlugin parse_volname.
	lvmNameRE = regexp.MustCompile(`^((vm|base)-(\d+)-\S+)$`)
	// Plugin::parse_volname for directory storages (abridged to images,
	// ISO images, container templates, snippets and backups).
	dirImageRE  = regexp.MustCompile(`^(\d+)/(\S+)$`)
	dirImgName  = regexp.MustCompile(`^((base-)?[^/\s]+\.(raw|qcow2|vmdk|subvol))$`)
	dirISORE    = regexp.MustCompile(`(?i)^iso/([^/]+\.(iso|img))$`)
	dirVztmplRE = regexp.MustCompile(`^vztmpl/([^/]+\.tar\.(gz|xz|zst|bz2))$`)
	dirBackupRE = regexp.MustCompile(`^backup/([^/]+\.(tgz|tar|vma|tar\.\w+|vma\.\w+))$`)
)

// volName is a parsed volume name, as a storage plugin's parse_volname
// returns it.
type volName struct {
	vtype  string // images, iso, vztmpl, backup
	name   string
	owner  int // owning vmid, 0 if none
	format string
	path   string
}

// parseVolName parses the part after "STORAGE:" for st, with PVE's
// messages for names the plugin cannot parse.
func parseVolName(st storageDef, volname string) (volName, error) {
	if st.typ == "lvmthin" {
		m := lvmNameRE.FindStringSubmatch(volname)
		if m == nil {
			return volName{}, fmt.Errorf("unable to parse lvm volume name '%s'", volname)
		}
		owner, _ := strconv.Atoi(m[3])
		return volName{vtype: "images", name: m[1], owner: owner, format: "raw", path: "/dev/" + lvmVG + "/" + m[1]}, nil
	}
	if m := dirImageRE.FindStringSubmatch(volname); m != nil {
		n := dirImgName.FindStringSubmatch(m[2])
		if n == nil {
			return volName{}, fmt.Errorf("unable to parse volume filename '%s'", m[2])
		}
		owner, _ := strconv.Atoi(m[1])
		return volName{vtype: "images", name: n[1], owner: owner, format: n[3], path: dirPath + "/images/" + m[1] + "/" + n[1]}, nil
	}
	if m := dirISORE.FindStringSubmatch(volname); m != nil {
		return volName{vtype: "iso", name: m[1], format: "iso", path: dirPath + "/template/iso/" + m[1]}, nil
	}
	if m := dirVztmplRE.FindStringSubmatch(volname); m != nil {
		return volName{vtype: "vztmpl", name: m[1], format: "t" + m[2], path: dirPath + "/template/cache/" + m[1]}, nil
	}
	if m := snippetRE.FindStringSubmatch(volname); m != nil {
		return volName{vtype: "snippets", name: m[1], format: "raw", path: dirPath + "/snippets/" + m[1]}, nil
	}
	if m := dirBackupRE.FindStringSubmatch(volname); m != nil {
		return volName{vtype: "backup", name: m[1], path: dirPath + "/dump/" + m[1]}, nil
	}
	return volName{}, fmt.Errorf("unable to parse directory volume name '%s'", volname)
}

// getVolume is pve-storage API2::Storage::Content info: the volume's path,
// size, used space and format. As PVE: the storage in the path and a
// volume id's own storage must agree (400 on "volume"), an unknown
// storage or an unparsable name is a 500, reading a guest image needs
// Datastore.Allocate on the storage (ISO images and templates:
// Datastore.AllocateSpace or Datastore.Audit), and a volume that does not
// exist fails where the storage plugin fails to size it (LVM-thin: lvs
// finds no logical volume; directory: no format).
//
// A snippet exists once added (AddSnippet), with its content's length as
// its size. Another volume exists while a guest's config, one of its
// snapshots or an unusedN entry names it; its size is the size= the config records, or
// the real size where a config write left size= claiming another
// (resize.go). used is 0, as LVM-thin reports it; a directory image would
// report its allocated bytes, which the simulator does not model.
func (s *Sim) getVolume(q *request) response {
	storeid, volume := q.params["storage"], q.params["volume"]
	volid := storeid + ":" + volume
	if strings.Contains(volume, ":") {
		m := volumeIDRE.FindStringSubmatch(volume)
		if m == nil {
			return paramFail(map[string]string{"volume": fmt.Sprintf("unable to parse volume ID '%s'\n", volume)})
		}
		if m[1] != storeid {
			return paramFail(map[string]string{"volume": fmt.Sprintf("storage ID mismatch (%s != %s)\n", m[1], storeid)})
		}
		volid = volume
	}
	sid, volname, _ := strings.Cut(volid, ":")
	st, ok := storageByID(sid)
	if !ok {
		return fail(500, "storage '%s' does not exist", sid)
	}
	vn, err := parseVolName(st, volname)
	if err != nil {
		return fail(500, "%s", err.Error())
	}
	// Storage::check_volume_access.
	path := "/storage/" + sid
	if !q.tok.has(path, "Datastore.Allocate") {
		switch {
		case vn.vtype == "iso" || vn.vtype == "vztmpl":
			if !q.tok.has(path, "Datastore.AllocateSpace") && !q.tok.has(path, "Datastore.Audit") {
				return fail(403, "Permission check failed (%s, Datastore.AllocateSpace|Datastore.Audit)", path)
			}
		case vn.vtype == "backup" && vn.owner != 0:
			if !q.tok.has(path, "Datastore.AllocateSpace") {
				return fail(403, "Permission check failed (%s, Datastore.AllocateSpace)", path)
			}
			if vp := "/vms/" + strconv.Itoa(vn.owner); !q.tok.has(vp, "VM.Backup") {
				return fail(403, "Permission check failed (%s, VM.Backup)", vp)
			}
		default:
			return fail(403, "Permission check failed (%s, Datastore.Allocate)", path)
		}
	}
	s.mu.Lock()
	size, found := s.volumeSizeLocked(volid)
	if vn.vtype == "snippets" {
		var content string
		content, found = s.snippets[volid]
		size = int64(len(content))
	}
	s.mu.Unlock()
	if !found {
		if st.typ == "lvmthin" {
			return fail(500, "can't get size of '%s':   Failed to find logical volume \"%s/%s\"", vn.path, lvmVG, vn.name)
		}
		return fail(500, "volume_size_info on '%s' failed - no format", volid)
	}
	if size == 0 && vn.format != "subvol" && vn.vtype != "snippets" {
		return fail(500, "volume '%s' has size zero", volid)
	}
	return reply(map[string]any{"path": vn.path, "size": size, "used": 0, "format": vn.format})
}

// volumeSizeLocked finds volid in the guests' configs (current, snapshots,
// unusedN) and returns the size it was last recorded with; found is false
// when no guest holds the volume. s.mu must be held.
func (s *Sim) volumeSizeLocked(volid string) (size int64, found bool) {
	note := func(v string) {
		if volumeOf(v) != volid {
			return
		}
		found = true
		if n := volSize(v); n > size {
			size = n
		}
	}
	for _, g := range s.guests {
		if n, ok := g.realSize[volid]; ok {
			return n, true // measured by a resize: the config may claim otherwise (resize.go)
		}
		for _, v := range g.config {
			note(v)
		}
		for _, v := range g.pending {
			note(v)
		}
		for _, sn := range g.snapshots {
			for _, v := range sn.config {
				note(v)
			}
		}
		if n := g.unusedSize[volid]; found && n > size {
			size = n
		}
	}
	return size, found
}
