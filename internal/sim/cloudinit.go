package sim

import (
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/steward-pve/steward/internal/guest"
)

func (t *routeTable) addCloudinitRoutes() {
	t.add("GET", "/nodes/{node}/qemu/{vmid}/cloudinit", (*Sim).getCloudinit)
	t.add("PUT", "/nodes/{node}/qemu/{vmid}/cloudinit", (*Sim).putCloudinit)
	t.add("GET", "/nodes/{node}/qemu/{vmid}/cloudinit/dump", (*Sim).getCloudinitDump)
}

// Cloud-init as qemu-server keeps it: generating the drive (PUT
// …/cloudinit, a start, the start half of a reboot) records the config's
// cloud-init state in its [special:cloudinit] section (part of the digest):
// the cloud-init options set, name, netN and the cloud-init drives. GET
// …/cloudinit compares the config with that record (get_pending_config).
// A clone copies the record with the rest of the config, as clone_vm does.

// ciOptions are the non-ipconfig keys of cloudinit_config_properties.
var ciOptions = []string{"cicustom", "cipassword", "citype", "ciupgrade", "ciuser", "nameserver", "searchdomain", "sshkeys"}

// isCloudinitKey is a key of qemu-server's cloud-init options.
func isCloudinitKey(key string) bool {
	return containsStr(ciOptions, key) || ipconfigRE.MatchString(key)
}

// isCloudinitDrive reports whether the drive value v holds a cloud-init volume.
func isCloudinitDrive(key, v string) bool {
	if !diskKeyRE.MatchString(key) {
		return false
	}
	vol, _ := splitVolume(guest.QEMU, v)
	return isCloudinitVolume(vol)
}

// hasCloudinit is has_cloudinit: some drive of the config is a cloud-init volume.
func hasCloudinit(cfg map[string]string) bool {
	for key, v := range cfg {
		if isCloudinitDrive(key, v) {
			return true
		}
	}
	return false
}

// ciRegenerateLocked generates g's cloud-init drive, if it has one: the
// cicustom snippets must exist (read_cloudinit_snippets_file), then the
// [special:cloudinit] section becomes the config's cloud-init state.
// s.mu must be held.
func (s *Sim) ciRegenerateLocked(g *guestState) error {
	if g.kind != guest.QEMU || !hasCloudinit(g.config) {
		return nil
	}
	if err := s.checkCicustomLocked(g.config["cicustom"]); err != nil {
		return err
	}
	g.ciGen = map[string]string{}
	for key, v := range g.config {
		if isCloudinitKey(key) || key == "name" || netRE.MatchString(key) || isCloudinitDrive(key, v) {
			g.ciGen[key] = v
		}
	}
	return nil
}

// snippetRE is a volume name in a directory storage's snippets content.
var snippetRE = regexp.MustCompile(`^snippets/([^/]+)$`)

// checkCicustomLocked reads the cicustom snippets as qemu-server's
// get_custom_cloudinit_files does: each volume must be a snippet
// ("… is not in the snippets directory") that exists (file_get_contents
// fails). s.mu must be held.
func (s *Sim) checkCicustomLocked(cicustom string) error {
	if cicustom == "" {
		return nil
	}
	for _, item := range strings.Split(cicustom, ",") {
		_, volid, ok := strings.Cut(item, "=")
		if !ok {
			continue
		}
		_, volname, _ := strings.Cut(volid, ":")
		m := snippetRE.FindStringSubmatch(volname)
		if m == nil {
			return taskErrf("%s is not in the snippets directory", volid)
		}
		if _, ok := s.snippets[volid]; !ok {
			return taskErrf("unable to open file '%s/snippets/%s' - No such file or directory", dirPath, m[1])
		}
	}
	return nil
}

// AddSnippet adds a cloud-init snippet (for cicustom) to a directory
// storage's snippets content: volid is "STORAGE:snippets/NAME". It
// replaces a snippet of the same volid.
func (s *Sim) AddSnippet(volid, content string) error {
	sid, volname, _ := strings.Cut(volid, ":")
	st, ok := storageByID(sid)
	if !ok || st.typ != "dir" || !snippetRE.MatchString(volname) {
		return fmt.Errorf("sim: snippet %q: want STORAGE:snippets/NAME on a directory storage (local)", volid)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.snippets == nil {
		s.snippets = map[string]string{}
	}
	s.snippets[volid] = content
	return nil
}

// renderCloudinit writes the [special:cloudinit] section.
func (g *guestState) renderCloudinit(b *strings.Builder) {
	if g.ciGen == nil {
		return
	}
	b.WriteString("\n[special:cloudinit]\n")
	renderSection(b, g.ciGen)
}

const maskedPassword = "**********"

// getCloudinit is qemu-server's cloudinit_pending (get_pending_config):
// one item per cloud-init option, name, cloud-init drive and, where the
// interface or its ipconfigN is set, netN (as macaddr=…) and ipconfigN;
// value is what the drive was generated with, pending the configured
// value where it differs (or nothing was generated), delete 1 where it was
// removed since. Without a record, name still has the value "VM<vmid>"
// (PVE's default hostname). cipassword is masked. Sorted by key.
func (s *Sim) getCloudinit(q *request) response {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, resp, found := s.getGuestLocked(guest.QEMU, q)
	if !found {
		return resp
	}
	cur, gen := cloneMap(g.config), cloneMap(g.ciGen)
	if gen == nil {
		gen = map[string]string{}
	}
	keys := map[string]bool{"name": true}
	for _, k := range ciOptions {
		keys[k] = true
	}
	for _, c := range []map[string]string{cur, gen} {
		for k, v := range c {
			if isCloudinitDrive(k, v) {
				keys[k] = true
			}
		}
	}
	for i := 0; i < 32; i++ {
		ipc, net := fmt.Sprintf("ipconfig%d", i), fmt.Sprintf("net%d", i)
		if cur[net] == "" && gen[net] == "" && cur[ipc] == "" && gen[ipc] == "" {
			continue
		}
		keys[ipc], keys[net] = true, true
		for _, c := range []map[string]string{cur, gen} {
			if m := qemuNetRE.FindStringSubmatch(c[net]); m != nil && m[2] != "" {
				c[net] = "macaddr=" + m[2][1:]
			}
		}
	}
	for _, c := range []map[string]string{cur, gen} {
		if c["name"] == "" {
			c["name"] = fmt.Sprintf("VM%d", g.vmid)
		}
		if _, ok := c["cipassword"]; ok {
			c["cipassword"] = maskedPassword
		}
	}
	out := []any{}
	for _, k := range sortedKeys(keys) {
		item := map[string]any{"key": k}
		if gv := gen[k]; gv != "" {
			item["value"] = gv
			if cv, ok := cur[k]; !ok {
				item["delete"] = 1
			} else if cv != gv {
				item["pending"] = cv
			}
		} else if cv := cur[k]; cv != "" {
			item["pending"] = cv
		}
		out = append(out, item)
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
		if err := s.ciRegenerateLocked(g); err != nil {
			return syncError(err)
		}
		s.recordLocked(Mutation{Method: q.method, Path: q.path, Op: "cloudinit", VMID: g.vmid, Params: q.opParams(), TokenID: q.tok.id})
		return reply(nil)
	})
}

// getCloudinitDump is qemu-server's dump_cloudinit_config for the nocloud
// format (the default citype for Linux): the user data, the network data
// (version 1) or the meta data (instance-id: the SHA-1 of both). Like
// PVE's dump, it shows the generated data, never cicustom snippets.
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

// ciHostname is get_hostname_fqdn: name (default VM<vmid>); a name with
// dots is the fqdn, else the fqdn is name.searchdomain when one is set.
func ciHostname(g *guestState) (host, fqdn string) {
	host = g.config["name"]
	if host == "" {
		host = fmt.Sprintf("VM%d", g.vmid)
	}
	if strings.Contains(host, ".") {
		fqdn = host
		host, _, _ = strings.Cut(host, ".")
	} else if d := g.config["searchdomain"]; d != "" {
		fqdn = host + "." + d
	}
	return host, fqdn
}

// ciUserData is cloudinit_userdata.
func ciUserData(g *guestState) string {
	c := g.config
	var b strings.Builder
	host, fqdn := ciHostname(g)
	fmt.Fprintf(&b, "#cloud-config\nhostname: %s\nmanage_etc_hosts: true\n", host)
	if fqdn != "" {
		fmt.Fprintf(&b, "fqdn: %s\n", fqdn)
	}
	user, hasUser := c["ciuser"]
	if hasUser {
		fmt.Fprintf(&b, "user: %s\n", user)
		if user == "root" {
			b.WriteString("disable_root: False\n")
		}
	}
	if p, ok := c["cipassword"]; ok {
		fmt.Fprintf(&b, "password: %s\n", p)
	}
	if raw, ok := c["sshkeys"]; ok {
		keys, _ := url.PathUnescape(raw)
		b.WriteString("ssh_authorized_keys:\n")
		for _, k := range strings.Split(keys, "\n") {
			if strings.TrimSpace(k) != "" {
				fmt.Fprintf(&b, "  - %s\n", k)
			}
		}
	}
	b.WriteString("chpasswd:\n  expire: False\n")
	if !hasUser || user != "root" {
		b.WriteString("users:\n  - default\n")
	}
	if v, ok := c["ciupgrade"]; !ok || v != "0" {
		b.WriteString("package_upgrade: true\n")
	}
	return b.String()
}

// ciNetworkData is nocloud_network (version 1). The simulated host's
// resolv.conf has neither nameservers nor search domains, so without
// nameserver and searchdomain the nameserver entry is empty.
func ciNetworkData(g *guestState) string {
	c := g.config
	var b strings.Builder
	b.WriteString("version: 1\nconfig:\n")
	for i := 0; i < 32; i++ {
		ipc, ok := c[fmt.Sprintf("ipconfig%d", i)]
		net := c[fmt.Sprintf("net%d", i)]
		if !ok || ipc == "" || net == "" {
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
		if ip, ok := opts["ip"]; ok {
			if ip == "dhcp" {
				b.WriteString("      - type: dhcp4\n")
			} else {
				addr, bits, _ := strings.Cut(ip, "/")
				fmt.Fprintf(&b, "      - type: static\n        address: '%s'\n        netmask: '%s'\n", addr, netmask(bits))
				if gw, ok := opts["gw"]; ok {
					fmt.Fprintf(&b, "        gateway: '%s'\n", gw)
				}
			}
		}
		if ip6, ok := opts["ip6"]; ok {
			switch ip6 {
			case "dhcp":
				b.WriteString("      - type: dhcp6\n")
			case "auto":
				b.WriteString("      - type: ipv6_slaac\n")
			default:
				fmt.Fprintf(&b, "      - type: static6\n        address: '%s'\n", ip6)
				if gw, ok := opts["gw6"]; ok {
					fmt.Fprintf(&b, "        gateway: '%s'\n", gw)
				}
			}
		}
	}
	b.WriteString("    - type: nameserver\n")
	if ns := strings.Fields(c["nameserver"]); len(ns) > 0 {
		b.WriteString("      address:\n")
		for _, n := range ns {
			fmt.Fprintf(&b, "      - '%s'\n", n)
		}
	}
	if sd := strings.Fields(c["searchdomain"]); len(sd) > 0 {
		b.WriteString("      search:\n")
		for _, d := range sd {
			fmt.Fprintf(&b, "      - '%s'\n", d)
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
