package desired

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/pveschema"
)

// Create says how to create a guest that desired state names and that does
// not exist: a clone of a template (a QEMU template for a qemu guest, a
// container template for a container), a QEMU guest from scratch, or a
// container from an ostemplate. Without it a missing guest is an error,
// never created. Creating needs the guest's kind pinned.
//
//	create: {clone: 9000, full: true, storage: local-lvm}        # qemu clone
//	create: {clone: 9001, full: true, storage: local-lvm}        # lxc clone
//	create: {disks: {scsi0: "local-lvm:32", ide2: "local:iso/d.iso,media=cdrom"}}  # qemu
//	create: {ostemplate: "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
//	         disks: {rootfs: "local-lvm:8"}}                     # lxc
//
// The new guest is made with the guest's managed config (config,
// description, tags) as create parameters where PVE takes them at creation
// (from scratch), or written by the next tick (a clone): either way it
// matches desired state once made, and the run state follows. Disks are
// create-only: PVE allocates STORAGE:SIZE (GiB) and writes the volume it
// made, so they are not compared afterwards. A container is created
// unprivileged (unprivileged=1) unless its config says unprivileged: 0,
// which the agent holds for an operator's signature. A cloned container
// inherits its source's unprivileged (PVE's clone takes no such
// parameter): cloning a privileged container is held for a signature the
// same way.
type Create struct {
	// Clone is the vmid of the guest (normally a template) to clone, of
	// the same kind as the new guest; 0 means from scratch.
	Clone int `json:"clone,omitempty"`
	// Full, with Clone, asks for a full clone (true) or a linked one
	// (false); nil leaves PVE's default (linked from a template, full
	// otherwise).
	Full *bool `json:"full,omitempty"`
	// Storage is, for a full clone, the storage its disks are copied to;
	// for a container from scratch, where a rootfs given as a size (or
	// none: 4 GiB) is allocated. "" means the source's (clone) or PVE's
	// default.
	Storage string `json:"storage,omitempty"`
	// Name is the new guest's name (a QEMU clone's name parameter, a
	// container clone's hostname); "" means config.name (config.hostname)
	// if set, else PVE's default ("Copy-of-VM-…", the source's hostname).
	Name string `json:"name,omitempty"`
	// Pool adds the new guest to this resource pool.
	Pool string `json:"pool,omitempty"`
	// Disks are the volumes to allocate from scratch, by config key
	// (qemu: scsiN, virtioN, sataN, ideN, efidisk0, tpmstate0 or cdrom;
	// lxc: rootfs, mpN), in PVE's form: STORAGE:SIZE_IN_GiB with options,
	// or an ISO as a cdrom (the boot medium).
	Disks map[string]string `json:"disks,omitempty"`
	// OSTemplate is a container's template volume (STORAGE:vztmpl/FILE).
	OSTemplate string `json:"ostemplate,omitempty"`
}

// IsClone reports whether c creates by cloning.
func (c *Create) IsClone() bool { return c != nil && c.Clone != 0 }

var (
	qemuCreateDiskRE = regexp.MustCompile(`^(scsi([0-9]|[12][0-9]|30)|virtio([0-9]|1[0-5])|sata[0-5]|ide[0-3]|efidisk0|tpmstate0|cdrom)$`)
	lxcCreateDiskRE  = regexp.MustCompile(`^(rootfs|mp([0-9]|[1-9][0-9]|1[0-9][0-9]|2[0-4][0-9]|25[0-5]))$`)
	// poolRE is pve-access-control's verify_poolname (nested pools, at
	// most three levels, since PVE 8.1); pveschema does not check the
	// pve-poolid format.
	poolRE       = regexp.MustCompile(`^[A-Za-z0-9.\-_]+(/[A-Za-z0-9.\-_]+){0,2}$`)
	ostemplateRE = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9\-_.]*[a-zA-Z0-9]:vztmpl/[^/\x00]+$`)
)

// validateCreate checks a guest's create block.
func (g *Guest) validateCreate(errs *errList, gp string, at func(string) int) {
	c := g.Create
	if c == nil {
		return
	}
	cp := gp + ".create"
	p := func(f string) string { return cp + "." + f }
	switch g.Kind {
	case "":
		errs.add(cp, at(cp), "creating a guest needs its kind: set kind: qemu or kind: lxc")
		return
	case guest.QEMU, guest.LXC:
	default:
		return // an invalid kind, reported by validate
	}
	if c.Clone != 0 {
		switch {
		case c.Clone < MinVMID || c.Clone > MaxVMID:
			errs.add(p("clone"), at(p("clone")), "vmid %d out of range; PVE vmids are %d..%d", c.Clone, MinVMID, MaxVMID)
		}
		if len(c.Disks) > 0 {
			errs.add(p("disks"), at(p("disks")), "a clone copies the source's disks; disks is for creating from scratch (drop clone: or disks:)")
		}
		if c.OSTemplate != "" {
			errs.add(p("ostemplate"), at(p("ostemplate")), "ostemplate is for containers from scratch, not for a clone")
		}
		if c.Storage != "" && (c.Full == nil || !*c.Full) {
			errs.add(p("storage"), at(p("storage")), "a target storage needs a full clone (PVE refuses storage for linked clones, and links from a template by default): set full: true")
		}
	} else {
		if c.Full != nil {
			errs.add(p("full"), at(p("full")), "full is for clones; set clone: to the vmid of the template to clone")
		}
		if c.Name != "" {
			what := "config.name"
			if g.Kind == guest.LXC {
				what = "config.hostname"
			}
			errs.add(p("name"), at(p("name")), "name is a clone's parameter; from scratch, set %s", what)
		}
		if g.Kind == guest.QEMU {
			if c.OSTemplate != "" {
				errs.add(p("ostemplate"), at(p("ostemplate")), "ostemplate is for containers; a qemu guest boots from its disks or a cdrom (disks: {ide2: \"local:iso/FILE.iso,media=cdrom\"})")
			}
			if c.Storage != "" {
				errs.add(p("storage"), at(p("storage")), "a qemu guest from scratch names its storage in each disk (disks: {scsi0: \"local-lvm:32\"})")
			}
		}
		if g.Kind == guest.LXC {
			switch {
			case c.OSTemplate == "":
				errs.add(cp, at(cp), "a container is created from a template: set ostemplate: STORAGE:vztmpl/FILE")
			case !ostemplateRE.MatchString(c.OSTemplate):
				errs.add(p("ostemplate"), at(p("ostemplate")), "invalid ostemplate %q; want STORAGE:vztmpl/FILE as PVE lists it (pveam list STORAGE)", c.OSTemplate)
			}
		}
	}
	for _, f := range []struct{ field, v string }{{"storage", c.Storage}, {"pool", c.Pool}, {"name", c.Name}} {
		if f.v == "" {
			continue
		}
		if msg := checkCreateParam(g.Kind, c.IsClone(), f.field, f.v); msg != "" {
			errs.add(p(f.field), at(p(f.field)), "%s", msg)
		}
	}
	if c.Pool != "" && !poolRE.MatchString(c.Pool) {
		errs.add(p("pool"), at(p("pool")), "invalid value %q: pool name '%s' contains invalid characters", c.Pool, c.Pool)
	}
	re := qemuCreateDiskRE
	if g.Kind == guest.LXC {
		re = lxcCreateDiskRE
	}
	var schema *pveschema.GuestConfig
	if s, err := schemaFor(g.Kind); err == nil {
		schema = s
	}
	for _, k := range sortedKeys(c.Disks) {
		dp := p("disks") + "." + k
		v := c.Disks[k]
		if !re.MatchString(k) {
			want := "scsi0-30, virtio0-15, sata0-5, ide0-3, efidisk0, tpmstate0 or cdrom"
			if g.Kind == guest.LXC {
				want = "rootfs or mp0-255"
			}
			errs.add(dp, at(dp), "not a disk key of a %s guest; want %s", g.Kind, want)
			continue
		}
		if msg := checkConfigValue(v); msg != "" {
			errs.add(dp, at(dp), "%s", msg)
			continue
		}
		if _, ok := g.Config[k]; ok {
			errs.add(dp, at(dp), "also set in config.%s; a disk to create belongs in create.disks only", k)
			continue
		}
		if schema != nil && k != "cdrom" {
			if pr := checkAgainst(schema, k, v); !pr.ok() {
				errs.add(dp, at(dp), "%s", kindMessage(g.Kind, k, pr, schema))
			}
		}
	}
}

// checkCreateParam checks one create-block value against PVE's schema of
// the call that takes it (clone, or the kind's create).
func checkCreateParam(kind guest.Kind, clone bool, field, v string) string {
	s, err := pveschema.Load()
	if err != nil {
		return "cannot check: " + err.Error()
	}
	path, params := "/nodes/{node}/"+string(kind), map[string]any{"node": "pve", "vmid": "100"}
	param := field
	switch {
	case clone:
		path += "/{vmid}/clone"
		params["newid"] = "101"
		if kind == guest.LXC && field == "name" {
			param = "hostname" // pve-container's clone names the new CT by hostname
		}
	case kind == guest.LXC:
		params["ostemplate"] = "local:vztmpl/x.tar.zst"
	}
	m, ok := s.Method("POST", path)
	if !ok {
		return "cannot check: PVE's schema has no POST " + path
	}
	params[param] = v
	if msg, bad := m.Validate(params)[param]; bad {
		return "invalid value " + strconv.Quote(v) + ": " + flatten(strings.ReplaceAll(msg, `\n`, "\n"))
	}
	return ""
}

// String describes how c creates the guest ("clone of 9000 (full onto
// local-lvm)", "from local:vztmpl/…", "from scratch").
func (c *Create) String() string {
	if c == nil {
		return ""
	}
	if c.IsClone() {
		s := fmt.Sprintf("clone of %d", c.Clone)
		if c.Full != nil && *c.Full {
			s += " (full"
			if c.Storage != "" {
				s += " onto " + c.Storage
			}
			s += ")"
		} else if c.Full != nil {
			s += " (linked)"
		}
		return s
	}
	if c.OSTemplate != "" {
		return "from " + c.OSTemplate
	}
	return "from scratch"
}
