package sim

import (
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"net/url"
	"sort"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/steward-pve/steward/internal/guest"
)

func (t *routeTable) addCloudinitRoutes() {
	t.add("GET", "/nodes/{node}/qemu/{vmid}/cloudinit", (*Sim).getCloudinit)
	t.add("PUT", "/nodes/{node}/qemu/{vmid}/cloudinit", (*Sim).putCloudinit)
	t.add("GET", "/nodes/{node}/qemu/{vmid}/cloudinit/dump", (*Sim).getCloudinitDump)
}

// Cloud-init as qemu-server keeps it: a VM with a cloud-init drive
// (vm-<vmid>-cloudinit) remembers, in its config's [special:cloudinit]
// section (part of the digest), the values the drive was generated with
// for every cloud-init key changed since: the old value, or the key in
// "added" when it had none. GET …/cloudinit lists each key with value
// (as generated) and pending (as configured), PUT …/cloudinit regenerates
// the drive and forgets the section, as does a start (or the start half
// of a reboot). Changing a key back to its generated value drops it from
// the section.

// isCloudinitKey is a key of qemu-server's cloud-init options.
func isCloudinitKey(key string) bool {
	switch key {
	case "cicustom", "cipassword", "citype", "ciupgrade", "ciuser", "nameserver", "searchdomain", "sshkeys":
		return true
	}
	return ipconfigRE.MatchString(key)
}

// hasCloudinit is has_cloudinit: some drive of the config is a cloud-init volume.
func hasCloudinit(cfg map[string]string) bool {
	for key, v := range cfg {
		if diskKeyRE.MatchString(key) {
			if vol, _ := splitVolume(guest.QEMU, v); isCloudinitVolume(vol) {
				return true
			}
		}
	}
	return false
}

// ciRecordLocked notes that key changed from old (had: it was set) to
// the config's current value, for the [special:cloudinit] section.
func (g *guestState) ciRecordLocked(key, old string, had bool) {
	if g.kind != guest.QEMU || !isCloudinitKey(key) || !hasCloudinit(g.config) {
		return
	}
	if g.ciOld == nil {
		g.ciOld = map[string]string{}
	}
	cur, set := g.config[key]
	switch {
	case containsStr(g.ciAdded, key):
		if !set {
			g.ciAdded = removeStr(g.ciAdded, key)
		}
		return
	case !had:
		if _, known := g.ciOld[key]; !known && set {
			g.ciAdded = append(g.ciAdded, key)
			sort.Strings(g.ciAdded)
		}
	default:
		if _, known := g.ciOld[key]; !known {
			g.ciOld[key] = old
		}
	}
	if gen, known := g.ciOld[key]; known && set && gen == cur {
		delete(g.ciOld, key)
	}
}

// ciRegenerateLocked is generating the drive anew: the section is gone.
func (g *guestState) ciRegenerateLocked() {
	g.ciOld = nil
	g.ciAdded = nil
}

func removeStr(xs []string, x string) []string {
	var out []string
	for _, v := range xs {
		if v != x {
			out = append(out, v)
		}
	}
	return out
}

// renderCloudinit writes the [special:cloudinit] section.
func (g *guestState) renderCloudinit(b *strings.Builder) {
	if len(g.ciOld) == 0 && len(g.ciAdded) == 0 {
		return
	}
	b.WriteString("\n[special:cloudinit]\n")
	c := cloneMap(g.ciOld)
	if len(g.ciAdded) > 0 {
		c["added"] = strings.Join(g.ciAdded, ",")
	}
	renderSection(b, c)
}

const maskedPassword = "**********"

// getCloudinit is qemu-server's cloudinit_pending: the keys added since
// the drive was generated (pending only), every configured key (value as
// generated, pending if it changed since), then the deleted ones (delete
// 1). cipassword is masked. Sorted by key within each group.
func (s *Sim) getCloudinit(q *request) response {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, resp, found := s.getGuestLocked(guest.QEMU, q)
	if !found {
		return resp
	}
	mask := func(k, v string) string {
		if k == "cipassword" {
			return maskedPassword
		}
		return v
	}
	out := []any{}
	for _, k := range g.ciAdded {
		out = append(out, map[string]any{"key": k, "pending": mask(k, g.config[k])})
	}
	for _, k := range sortedKeys(g.config) {
		if !isCloudinitKey(k) || g.config[k] == "" || containsStr(g.ciAdded, k) {
			continue
		}
		item := map[string]any{"key": k}
		if old, ok := g.ciOld[k]; ok {
			item["value"] = mask(k, old)
			item["pending"] = mask(k, g.config[k])
		} else {
			item["value"] = mask(k, g.config[k])
		}
		out = append(out, item)
	}
	for _, k := range sortedKeys(g.ciOld) {
		if g.config[k] == "" {
			out = append(out, map[string]any{"key": k, "delete": 1})
		}
	}
	return reply(out)
}

// putCloudinit is vmconfig_update_cloudinit_drive: under the config lock
// it regenerates the drive (nothing without a cloud-init drive) and
// answers null; it is recorded as the op "cloudinit".
func (s *Sim) putCloudinit(q *request) response {
	return s.withConfigLock(guest.QEMU, q, func(g *guestState) response {
		if !hasCloudinit(g.config) {
			return reply(nil)
		}
		g.ciRegenerateLocked()
		s.recordLocked(Mutation{Method: q.method, Path: q.path, Op: "cloudinit", VMID: g.vmid, Params: q.opParams(), TokenID: q.tok.id})
		return reply(nil)
	})
}

// getCloudinitDump is qemu-server's cloudinit_generated_config_dump for
// the nocloud format (the default citype): the user data (hostname, fqdn
// with searchdomain, user, password hash, SSH keys, package upgrade),
// the meta data (instance-id: the SHA-1 of the user and network data) or
// the network data (version 1: one physical interface per ipconfigN with
// its netN MAC, DHCP or static addresses, nameservers and search
// domains). Simplification: cicustom snippets are not read.
func (s *Sim) getCloudinitDump(q *request) response {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, resp, found := s.getGuestLocked(guest.QEMU, q)
	if !found {
		return resp
	}
	switch q.params["type"] {
	case "user":
		return reply(ciUserData(g))
	case "network":
		return reply(ciNetworkData(g))
	default:
		h := sha1.Sum([]byte(ciUserData(g) + ciNetworkData(g)))
		return reply("instance-id: " + hex.EncodeToString(h[:]) + "\n")
	}
}

func ciUserData(g *guestState) string {
	c := g.config
	var b strings.Builder
	b.WriteString("#cloud-config\n")
	host := g.name()
	fmt.Fprintf(&b, "hostname: %s\nmanage_etc_hosts: true\n", host)
	if d := c["searchdomain"]; d != "" {
		fmt.Fprintf(&b, "fqdn: %s.%s\n", host, strings.Fields(d)[0])
	}
	if u := c["ciuser"]; u != "" {
		fmt.Fprintf(&b, "user: %s\n", u)
	}
	if p := c["cipassword"]; p != "" {
		fmt.Fprintf(&b, "password: %s\n", p)
	}
	if keys, err := url.PathUnescape(c["sshkeys"]); err == nil && keys != "" {
		b.WriteString("ssh_authorized_keys:\n")
		for _, k := range strings.Split(keys, "\n") {
			if strings.TrimSpace(k) != "" {
				fmt.Fprintf(&b, "  - %s\n", k)
			}
		}
	}
	b.WriteString("chpasswd:\n  expire: False\n")
	if c["ciupgrade"] != "0" {
		b.WriteString("package_upgrade: true\n")
	}
	return b.String()
}

func ciNetworkData(g *guestState) string {
	c := g.config
	var b strings.Builder
	b.WriteString("version: 1\nconfig:\n")
	for i := 0; i < 32; i++ {
		ipc, ok := c[fmt.Sprintf("ipconfig%d", i)]
		net := c[fmt.Sprintf("net%d", i)]
		if !ok || net == "" {
			continue
		}
		mac := ""
		if m := qemuNetRE.FindStringSubmatch(net); m != nil && m[2] != "" {
			mac = strings.ToLower(m[2][1:])
		}
		fmt.Fprintf(&b, "    - type: physical\n      name: eth%d\n      mac_address: '%s'\n      subnets:\n", i, mac)
		opts := map[string]string{}
		for _, it := range strings.Split(ipc, ",") {
			k, v, _ := strings.Cut(it, "=")
			opts[k] = v
		}
		switch ip := opts["ip"]; ip {
		case "dhcp":
			b.WriteString("      - type: dhcp4\n")
		case "", "manual":
		default:
			addr, bits, _ := strings.Cut(ip, "/")
			fmt.Fprintf(&b, "      - type: static\n        address: '%s'\n        netmask: '%s'\n", addr, netmask(bits))
			if gw := opts["gw"]; gw != "" {
				fmt.Fprintf(&b, "        gateway: '%s'\n", gw)
			}
		}
		switch ip6 := opts["ip6"]; ip6 {
		case "dhcp":
			b.WriteString("      - type: dhcp6\n")
		case "auto":
			b.WriteString("      - type: ipv6_slaac\n")
		case "", "manual":
		default:
			fmt.Fprintf(&b, "      - type: static6\n        address: '%s'\n", ip6)
			if gw := opts["gw6"]; gw != "" {
				fmt.Fprintf(&b, "        gateway: '%s'\n", gw)
			}
		}
	}
	ns, sd := strings.Fields(c["nameserver"]), strings.Fields(c["searchdomain"])
	if len(ns) > 0 || len(sd) > 0 {
		b.WriteString("    - type: nameserver\n")
		if len(ns) > 0 {
			b.WriteString("      address:\n")
			for _, n := range ns {
				fmt.Fprintf(&b, "      - '%s'\n", n)
			}
		}
		if len(sd) > 0 {
			b.WriteString("      search:\n")
			for _, d := range sd {
				fmt.Fprintf(&b, "      - '%s'\n", d)
			}
		}
	}
	return b.String()
}

func netmask(bits string) string {
	n := 0
	fmt.Sscanf(bits, "%d", &n)
	if n < 0 || n > 32 {
		n = 32
	}
	m := uint32(0xffffffff) << (32 - n)
	if n == 0 {
		m = 0
	}
	return fmt.Sprintf("%d.%d.%d.%d", m>>24, m>>16&0xff, m>>8&0xff, m&0xff)
}

// checkSSHKeys is qemu-server's sshkeys check on create and update: the
// value is URL-encoded (the schema's format) and, decoded, every
// non-empty line must be an SSH public key (validate_ssh_public_keys,
// which runs ssh-keygen -l on each).
func checkSSHKeys(v string) error {
	keys, err := url.PathUnescape(v)
	if err != nil {
		return taskErrf("SSH public key validation error")
	}
	for _, line := range strings.Split(keys, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line)); err != nil {
			return taskErrf("SSH public key validation error")
		}
	}
	return nil
}
