package normalize

import (
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/steward-pve/steward/internal/propstr"
)

// Row constructors. Defaults follow the PVE API schema (apidata.json,
// PUT .../config parameters) where it states one.

func boolRow(key, def string) Row {
	return Row{Key: key, Canon: canonBool, Default: def, WriteCanon: true}
}

func intRow(key, def string) Row {
	return Row{Key: key, Canon: canonInt, Default: def}
}

func numRow(key, def string) Row {
	return Row{Key: key, Canon: canonNumber, Default: def}
}

func descriptionRow() Row { return Row{Key: "description", Canon: canonDescription} }

func tagsRow() Row { return Row{Key: "tags", Canon: canonTags, WriteCanon: true} }

func propRow(key string, f *propFormat, def string) Row {
	return Row{Key: key, Canon: f.canon, Match: f.match, Default: def}
}

// canonBool maps PVE's and YAML's boolean spellings to "1"/"0".
func canonBool(v string) string {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "1", "true", "yes", "on":
		return "1"
	case "0", "false", "no", "off":
		return "0"
	}
	return strings.TrimSpace(v)
}

// canonInt writes an integral number in plain decimal ("02", "2.0", "+2"
// are "2"); anything else is returned trimmed.
func canonInt(v string) string {
	s := strings.TrimSpace(v)
	if isPlainInt(s) {
		return s
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return strconv.FormatInt(n, 10)
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil && f == math.Trunc(f) && math.Abs(f) < 1<<53 {
		return strconv.FormatInt(int64(f), 10)
	}
	return s
}

// isPlainInt reports whether s is already canonical decimal: no sign, no
// leading zero (except "0").
func isPlainInt(s string) bool {
	if s == "" || len(s) > 18 || (s[0] == '0' && len(s) > 1) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// canonNumber writes a number in shortest decimal ("0.50" is "0.5", "1.0"
// is "1"); anything else is returned trimmed.
func canonNumber(v string) string {
	s := strings.TrimSpace(v)
	if isPlainInt(s) {
		return s
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return s
	}
	return strconv.FormatFloat(f, 'f', -1, 64)
}

// canonDescription folds CRLF and CR to LF and drops trailing whitespace at
// the end of each line and of the text: QEMU strips trailing whitespace
// when it parses a config, LXC keeps a trailing newline, and editors add
// CRLF or trailing blanks that carry no meaning.
func canonDescription(v string) string {
	if !strings.ContainsAny(v, "\r \t\n\v\f") {
		return v
	}
	v = strings.ReplaceAll(v, "\r\n", "\n")
	v = strings.ReplaceAll(v, "\r", "\n")
	lines := strings.Split(v, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " \t\v\f")
	}
	return strings.TrimRight(strings.Join(lines, "\n"), "\n")
}

// canonTags is the tag set sorted and de-duplicated, joined with ';' as PVE
// stores it. PVE accepts ';', ',' and whitespace as separators.
func canonTags(v string) string {
	tags := strings.FieldsFunc(v, func(r rune) bool {
		return r == ';' || r == ',' || r == ' ' || r == '\t' || r == '\n' || r == '\r'
	})
	slices.Sort(tags)
	return strings.Join(slices.Compact(tags), ";")
}

// propFormat describes one property-string format.
type propFormat struct {
	defaultKey string            // key of a bare element ("" = none)
	aliases    map[string]string // alias -> key
	bools      map[string]bool   // boolean options
	sizes      map[string]bool   // size options (32G = 32768M)
	ints       map[string]bool   // integer options
	upper      map[string]bool   // case-insensitive options written upper case (MACs)
	defaults   map[string]string // option -> canonical default value, dropped when equal
	// optional options are not managed when the desired value omits them
	// (a net device's MAC, a disk's informational size).
	optional map[string]bool
	// modelKeys are option keys that mean model=<key>,<modelValue>=<value>
	// (QEMU net: "virtio=BC:24:..." is model virtio with that MAC).
	modelKeys  map[string]bool
	modelValue string
}

func set(keys ...string) map[string]bool {
	m := make(map[string]bool, len(keys))
	for _, k := range keys {
		m[k] = true
	}
	return m
}

// props parses v into canonical options: aliases resolved, values
// canonicalized, default-valued options dropped, sorted by key with the
// default key first. ok is false when v is not a valid property string.
func (f *propFormat) props(v string) ([]propstr.Prop, bool) {
	ps, err := propstr.Parse(strings.TrimSpace(v), f.defaultKey)
	if err != nil {
		return nil, false
	}
	out := make([]propstr.Prop, 0, len(ps)+1)
	for _, p := range ps {
		if k, ok := f.aliases[p.Key]; ok {
			p.Key = k
		}
		if f.modelKeys[p.Key] {
			if f.defaultKey != "" {
				out = append(out, propstr.Prop{Key: f.defaultKey, Value: p.Key})
			}
			p.Key = f.modelValue
		}
		switch {
		case f.bools[p.Key]:
			p.Value = canonBool(p.Value)
		case f.ints[p.Key]:
			p.Value = canonInt(p.Value)
		case f.sizes[p.Key]:
			if n, err := propstr.ParseSize(p.Value); err == nil {
				p.Value = propstr.FormatSize(n)
			}
		case f.upper[p.Key]:
			p.Value = strings.ToUpper(p.Value)
		}
		if d, ok := f.defaults[p.Key]; ok && d == p.Value {
			continue
		}
		out = append(out, p)
	}
	slices.SortStableFunc(out, func(a, b propstr.Prop) int {
		switch {
		case a.Key == b.Key:
			return 0
		case a.Key == f.defaultKey:
			return -1
		case b.Key == f.defaultKey:
			return 1
		}
		return strings.Compare(a.Key, b.Key)
	})
	for i := 1; i < len(out); i++ {
		if out[i].Key == out[i-1].Key {
			return nil, false // e.g. "virtio=MAC,macaddr=MAC": ambiguous, compare verbatim
		}
	}
	return out, true
}

func (f *propFormat) canon(v string) string {
	ps, ok := f.props(v)
	if !ok {
		return strings.TrimSpace(v)
	}
	var b strings.Builder
	for i, p := range ps {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(p.Key)
		b.WriteByte('=')
		b.WriteString(p.Value)
	}
	return b.String()
}

// match compares canonical options, ignoring in actual the optional
// options desired does not name.
func (f *propFormat) match(desired, actual string) bool {
	d, okD := f.props(desired)
	a, okA := f.props(actual)
	if !okD || !okA {
		return strings.TrimSpace(desired) == strings.TrimSpace(actual)
	}
	if len(f.optional) > 0 {
		a = slices.DeleteFunc(a, func(p propstr.Prop) bool {
			if !f.optional[p.Key] {
				return false
			}
			_, named := propstr.Get(d, p.Key)
			return !named
		})
	}
	return slices.Equal(d, a)
}

// Formats, from the PVE API schema's property-string formats.

var qemuNICModels = []string{"e1000", "e1000-82540em", "e1000-82544gc", "e1000-82545em", "e1000e",
	"i82551", "i82557b", "i82559er", "ne2k_isa", "ne2k_pci", "pcnet", "rtl8139", "virtio", "vmxnet3"}

var qemuNet = &propFormat{
	defaultKey: "model",
	bools:      set("firewall", "link_down"),
	ints:       set("mtu", "queues", "tag"),
	upper:      set("macaddr"),
	defaults:   map[string]string{"firewall": "0", "link_down": "0"},
	optional:   set("macaddr"),
	modelKeys:  set(qemuNICModels...),
	modelValue: "macaddr",
}

var lxcNet = &propFormat{
	bools:    set("firewall", "link_down", "host-managed"),
	ints:     set("mtu", "tag"),
	upper:    set("hwaddr"),
	defaults: map[string]string{"firewall": "0", "link_down": "0", "host-managed": "0", "type": "veth"},
	optional: set("hwaddr"),
}

var qemuDrive = &propFormat{
	defaultKey: "file",
	aliases: map[string]string{"volume": "file", "bps_rd_length": "bps_rd_max_length",
		"bps_wr_length": "bps_wr_max_length", "iops_rd_length": "iops_rd_max_length",
		"iops_wr_length": "iops_wr_max_length"},
	bools: set("backup", "detect_zeroes", "iothread", "replicate", "ro", "scsiblock", "shared",
		"snapshot", "ssd", "pre-enrolled-keys", "ms-cert"),
	sizes:    set("size"),
	defaults: map[string]string{"media": "disk", "replicate": "1", "scsiblock": "0", "shared": "0"},
	optional: set("size"),
}

var lxcMount = &propFormat{
	defaultKey: "volume",
	bools:      set("acl", "backup", "quota", "replicate", "ro", "shared", "keepattrs"),
	sizes:      set("size"),
	defaults:   map[string]string{"replicate": "1", "shared": "0", "keepattrs": "0"},
	optional:   set("size"),
}

var qemuMemory = &propFormat{defaultKey: "current", ints: set("current")}

// canonQemuMemory writes memory as its plain MiB integer when only
// "current" is set ("current=4096" is "4096"), as PVE 7 returned it.
func canonQemuMemory(v string) string {
	ps, ok := qemuMemory.props(v)
	if ok && len(ps) == 1 && ps[0].Key == "current" {
		return ps[0].Value
	}
	return qemuMemory.canon(v)
}

var qemuAgent = &propFormat{
	defaultKey: "enabled",
	aliases:    map[string]string{"freeze-fs-on-backup": "freeze-fs", "guest-fsfreeze": "freeze-fs"},
	bools:      set("enabled", "freeze-fs", "fstrim_cloned_disks"),
	defaults:   map[string]string{"freeze-fs": "1", "fstrim_cloned_disks": "0", "type": "virtio"},
}

var startupOrder = &propFormat{defaultKey: "order", ints: set("order", "up", "down")}

var lxcFeatures = &propFormat{
	bools: set("force_rw_sys", "fuse", "keyctl", "mknod", "nesting"),
	defaults: map[string]string{"force_rw_sys": "0", "fuse": "0", "keyctl": "0", "mknod": "0",
		"nesting": "0"},
}

// plainProps is a property string whose option order carries no meaning.
func plainProps(defaultKey string, bools ...string) *propFormat {
	return &propFormat{defaultKey: defaultKey, bools: set(bools...)}
}

var qemuTable = NewTable(
	descriptionRow(),
	tagsRow(),
	boolRow("acpi", "1"),
	boolRow("allow-ksm", "1"),
	boolRow("autostart", "0"),
	boolRow("ciupgrade", "1"),
	boolRow("freeze", ""),
	boolRow("keephugepages", "0"),
	boolRow("kvm", "1"),
	boolRow("localtime", ""),
	boolRow("numa", "0"),
	boolRow("onboot", "0"),
	boolRow("protection", "0"),
	boolRow("reboot", "1"),
	boolRow("tablet", "1"),
	boolRow("tdf", "0"),
	boolRow("template", "0"),
	intRow("balloon", ""),
	intRow("cores", "1"),
	intRow("cpuunits", ""), // default depends on the cgroup version
	intRow("migrate_speed", "0"),
	intRow("shares", "1000"),
	intRow("smp", "1"),
	intRow("sockets", "1"),
	intRow("vcpus", ""),
	numRow("cpulimit", "0"),
	numRow("migrate_downtime", "0.1"),
	Row{Key: "memory", Canon: canonQemuMemory, Default: "512"},
	propRow("net[n]", qemuNet, ""),
	propRow("ide[n]", qemuDrive, ""),
	propRow("sata[n]", qemuDrive, ""),
	propRow("scsi[n]", qemuDrive, ""),
	propRow("virtio[n]", qemuDrive, ""),
	propRow("efidisk0", qemuDrive, ""),
	propRow("tpmstate0", qemuDrive, ""),
	propRow("unused[n]", qemuDrive, ""),
	propRow("agent", qemuAgent, "0"),
	propRow("startup", startupOrder, ""),
	propRow("cpu", plainProps("cputype", "hidden"), ""),
	propRow("vga", plainProps("type"), ""),
	propRow("machine", plainProps("type", "enable-s3", "enable-s4"), ""),
	propRow("boot", plainProps("legacy"), ""),
	propRow("smbios1", plainProps("", "base64"), ""),
	propRow("ipconfig[n]", plainProps(""), ""),
	propRow("rng0", plainProps("source"), ""),
	propRow("watchdog", plainProps("model"), ""),
	propRow("hostpci[n]", plainProps("host", "pcie", "rombar", "x-vga"), ""),
	propRow("usb[n]", plainProps("host", "usb3"), ""),
	propRow("numa[n]", plainProps(""), ""),
	propRow("audio0", plainProps(""), ""),
	propRow("spice_enhancements", plainProps("", "foldersharing"), ""),
	propRow("cicustom", plainProps(""), ""),
	propRow("ivshmem", plainProps(""), ""),
	propRow("virtiofs[n]", plainProps("dirid", "direct-io", "expose-acl", "expose-xattr"), ""),
	propRow("amd-sev", plainProps("type", "allow-smt", "kernel-hashes", "no-debug", "no-key-sharing"), ""),
)

var lxcTable = NewTable(
	descriptionRow(),
	tagsRow(),
	boolRow("console", "1"),
	boolRow("debug", "0"),
	boolRow("onboot", "0"),
	boolRow("protection", "0"),
	boolRow("template", "0"),
	boolRow("unprivileged", "0"),
	intRow("cores", ""),
	intRow("cpuunits", ""), // default depends on the cgroup version
	intRow("memory", "512"),
	intRow("swap", "512"),
	intRow("tty", "2"),
	numRow("cpulimit", "0"),
	propRow("net[n]", lxcNet, ""),
	propRow("rootfs", lxcMount, ""),
	propRow("mp[n]", lxcMount, ""),
	propRow("unused[n]", lxcMount, ""),
	propRow("features", lxcFeatures, ""),
	propRow("startup", startupOrder, ""),
	propRow("dev[n]", plainProps("path", "deny-write"), ""),
)
