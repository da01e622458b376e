package pveschema

import (
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// formatChecks holds the named formats this package checks, each returning
// PVE's die message (ending in "\n") or "". The regexes and messages are
// those of PVE's validators: pve-common JSONSchema.pm unless noted.
var formatChecks = map[string]func(string) string{
	"string": func(string) string { return "" },
	"pve-node": reCheck(`^([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)$`,
		func(string) string { return "value does not look like a valid node name\n" }),
	"pve-vmid": reCheck(`^[1-9][0-9]{2,8}$`,
		func(string) string { return "value does not look like a valid VM ID\n" }),
	"pve-configid": reCheck(`^[a-z][a-z0-9_-]+$`, // $CONFIGID_RE with /i
		func(v string) string { return "invalid configuration ID '" + v + "'\n" }),
	"pve-storage-id": reCheck(`(?i)^[a-z][a-z0-9\-\_\.]*[a-z0-9]$`,
		func(v string) string { return "storage ID '" + v + "' contains illegal characters\n" }),
	"pve-bridge-id": reCheck(`^[-_.\w\d]+$`,
		func(v string) string { return "invalid bridge ID '" + v + "'\n" }),
	"mac-addr": reCheck(`(?i)^[a-f0-9][02468ace](?::[a-f0-9]{2}){5}$`,
		func(string) string { return "value does not look like a valid unicast MAC address\n" }),
	"urlencoded": reCheck(`^[-%a-zA-Z0-9_.!~*'()]*$`,
		func(v string) string { return "invalid urlencoded string: " + v + "\n" }),
	"pve-tag": reCheck(`(?i)^[a-z0-9_][a-z0-9_\-\+\.]*$`,
		func(string) string { return "invalid characters in tag\n" }),
	"pve-task-status-type": reCheck(`(?i)^(ok|error|warning|unknown)$`,
		func(v string) string { return "invalid status '" + v + "'\n" }),
	"dns-name": func(v string) string {
		if isDNSName(v) {
			return ""
		}
		return "value does not look like a valid DNS name\n"
	},
	"ipv4": func(v string) string {
		if ipv4RE.MatchString(v) {
			return ""
		}
		return "value does not look like a valid IPv4 address\n"
	},
	"ipv6": func(v string) string {
		if isIPv6(v) {
			return ""
		}
		return "value does not look like a valid IPv6 address\n"
	},
	"ip": func(v string) string {
		if ipv4RE.MatchString(v) || isIPv6(v) {
			return ""
		}
		return "value does not look like a valid IP address\n"
	},
	"address": func(v string) string {
		if ipv4RE.MatchString(v) || isIPv6(v) || isDNSName(v) {
			return ""
		}
		return "value does not look like a valid address: " + v + "\n"
	},
	"CIDRv4": func(v string) string {
		if isCIDRv4(v) {
			return ""
		}
		return "value does not look like a valid IPv4 CIDR network\n"
	},
	"CIDRv6": func(v string) string {
		if isCIDRv6(v) {
			return ""
		}
		return "value does not look like a valid IPv6 CIDR network\n"
	},
	"CIDR": func(v string) string {
		if isCIDRv4(v) || isCIDRv6(v) {
			return ""
		}
		return "value does not look like a valid CIDR network\n"
	},
	"pve-ipv4-config": func(v string) string {
		if dhcpManualRE.MatchString(v) || isCIDRv4(v) {
			return ""
		}
		return "value does not look like a valid ipv4 network configuration\n"
	},
	"pve-ipv6-config": func(v string) string {
		if autoDhcpManualRE.MatchString(v) || isCIDRv6(v) {
			return ""
		}
		return "value does not look like a valid ipv6 network configuration\n"
	},
	"disk-size": reCheck(`^(\d+(\.\d+)?)([KMGT])?$`,
		func(v string) string { return "value does not look like a valid disk size: " + v + "\n" }),
	"pve-startup-order": func(v string) string {
		if startupOrderOK(v) {
			return ""
		}
		return "unable to parse startup options\n"
	},
	// pve-storage PVE/Storage/Plugin.pm parse_volume_id.
	"pve-volume-id": reCheck(`(?i)^([a-z][a-z0-9\-\_\.]*[a-z0-9]):(.+)$`,
		func(v string) string { return "unable to parse volume ID '" + v + "'\n" }),
}

// FormatChecked reports whether Validate enforces the named format (with or
// without a "-list"/"-opt" suffix). Formats it does not enforce are
// registered by PVE packages whose rules are not in the schema; values in
// them are accepted unchecked.
func FormatChecked(format string) bool {
	name, _ := splitFormat(format)
	if name == "regex" {
		return true
	}
	_, ok := formatChecks[name]
	return ok
}

// CheckedFormats returns the names of the formats Validate enforces, sorted.
func CheckedFormats() []string {
	out := make([]string, 0, len(formatChecks))
	for k := range formatChecks {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func splitFormat(format string) (name, kind string) {
	if n, ok := strings.CutSuffix(format, "-list"); ok {
		return n, "list"
	}
	if n, ok := strings.CutSuffix(format, "-opt"); ok {
		return n, "opt"
	}
	return format, ""
}

// checkFormat is PVE's check_format for a named format: the die message
// (ending in "\n") or "". Unknown formats pass.
func checkFormat(format, v string) string {
	if format == "regex" {
		return ""
	}
	name, kind := splitFormat(format)
	check, ok := formatChecks[name]
	if !ok {
		return ""
	}
	switch kind {
	case "list":
		for _, e := range splitList(v) {
			if msg := check(e); msg != "" {
				return msg
			}
		}
		return ""
	case "opt":
		if v == "" || v == "0" {
			return ""
		}
	}
	return check(v)
}

// splitList is PVE::Tools::split_list: NUL-separated if the text holds a
// NUL, else separated by commas, semicolons and whitespace.
func splitList(s string) []string {
	if s == "0" {
		return nil // Perl: shift || ''
	}
	if strings.Contains(s, "\x00") {
		parts := strings.Split(s, "\x00")
		for len(parts) > 0 && parts[len(parts)-1] == "" {
			parts = parts[:len(parts)-1]
		}
		return parts
	}
	return strings.FieldsFunc(s, func(r rune) bool {
		switch r {
		case ',', ';', ' ', '\t', '\n', '\r', '\f', '\v':
			return true
		}
		return false
	})
}

func reCheck(pat string, msg func(string) string) func(string) string {
	re := mustPerl(pat)
	return func(v string) string {
		if re.MatchString(v) {
			return ""
		}
		return msg(v)
	}
}

const ipv4Octet = `(?:25[0-5]|(?:2[0-4]|1[0-9]|[1-9])?[0-9])`

var (
	ipv4RE           = mustPerl(`^(?:(?:` + ipv4Octet + `\.){3}` + ipv4Octet + `)$`)
	cidrv4RE         = regexp.MustCompile(`^((?:` + ipv4Octet + `\.){3}` + ipv4Octet + `)/([0-9]+)\n?$`)
	dnsNameRE        = mustPerl(`^(([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)\.)*([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)$`)
	dhcpManualRE     = mustPerl(`^(?:dhcp|manual)$`)
	autoDhcpManualRE = mustPerl(`^(?:auto|dhcp|manual)$`)
	startupPartRE    = mustPerl(`^(order=)?(\d+)$`)
	startupUpRE      = mustPerl(`^up=(\d+)$`)
	startupDownRE    = mustPerl(`^down=(\d+)$`)
)

func isDNSName(v string) bool { return dnsNameRE.MatchString(v) }

// isIPv6 approximates PVE's $IPV6RE: any textual IPv6 address (including
// embedded IPv4 forms) without a zone.
func isIPv6(v string) bool {
	v = strings.TrimSuffix(v, "\n")
	if !strings.Contains(v, ":") {
		return false
	}
	a, err := netip.ParseAddr(v)
	return err == nil && a.Is6() && a.Zone() == ""
}

func isCIDRv4(v string) bool {
	m := cidrv4RE.FindStringSubmatch(v)
	if m == nil {
		return false
	}
	n, err := strconv.Atoi(m[2])
	return err == nil && n > 7 && n <= 32
}

func isCIDRv6(v string) bool {
	v = strings.TrimSuffix(v, "\n")
	addr, bits, ok := strings.Cut(v, "/")
	if !ok || bits == "" || strings.Trim(bits, "0123456789") != "" || !isIPv6(addr) {
		return false
	}
	n, err := strconv.Atoi(bits)
	return err == nil && n > 7 && n <= 128
}

// startupOrderOK is pve_parse_startup_order returning a defined value.
func startupOrderOK(v string) bool {
	if v == "" || v == "0" {
		return false // Perl: return undef if !$value
	}
	for _, p := range strings.Split(v, ",") {
		if strings.Trim(p, " \t\n\r\f\v") == "" {
			continue
		}
		if !startupPartRE.MatchString(p) && !startupUpRE.MatchString(p) && !startupDownRE.MatchString(p) {
			return false
		}
	}
	return true
}
