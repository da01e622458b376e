package normalize

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"strings"
)

// Cloud-init keys of QEMU guests, as qemu-server stores them.
//
// sshkeys is URL-encoded: the API's format "urlencoded" admits only
// [-%a-zA-Z0-9_.!~*'()], qm set --sshkeys escapes with URI::Escape
// (everything but [A-Za-z0-9-._~]) and the web UI with JavaScript's
// encodeURIComponent (which leaves !'()* as they are), and PVE stores the
// value as sent. Values compare by the keys they hold: decoded, one key a
// line, surrounding blanks and empty lines dropped (cloud-init reads them
// so). nameserver and searchdomain are lists PVE splits with split_list
// (commas, semicolons or white space); they compare as the list, in order.

func sshkeysRow() Row { return Row{Key: "sshkeys", Canon: canonSSHKeys} }

func listRow(key string) Row { return Row{Key: key, Canon: canonList} }

// canonSSHKeys is the decoded key list, one a line.
func canonSSHKeys(v string) string {
	return strings.Join(SSHKeyLines(DecodeSSHKeys(v)), "\n")
}

// canonList joins a split_list value with single spaces.
func canonList(v string) string {
	return strings.Join(strings.FieldsFunc(v, func(r rune) bool {
		return r == ',' || r == ';' || r == ' ' || r == '\t' || r == '\n' || r == '\r'
	}), " ")
}

// IsURLEncoded reports whether v passes PVE's "urlencoded" format
// (pve_verify_urlencoded: ^[-%a-zA-Z0-9_.!~*'()]*$).
func IsURLEncoded(v string) bool {
	for i := 0; i < len(v); i++ {
		if !urlSafe(v[i]) && v[i] != '%' && !strings.ContainsRune("!*'()", rune(v[i])) {
			return false
		}
	}
	return true
}

func urlSafe(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~'
}

// EncodeSSHKeys URL-encodes plain authorized-keys text as qm set
// --sshkeys does (URI::Escape: everything but [A-Za-z0-9-._~] as %XX,
// upper-case hex), the form PVE stores.
func EncodeSSHKeys(plain string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(plain); i++ {
		c := plain[i]
		if urlSafe(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

// DecodeSSHKeys decodes a stored sshkeys value as URI::Escape's
// uri_unescape does: every %XX with two hex digits is its byte, anything
// else (a '+', a lone '%') stays as it is.
func DecodeSSHKeys(v string) string {
	if !strings.Contains(v, "%") {
		return v
	}
	unhex := func(c byte) (byte, bool) {
		switch {
		case c >= '0' && c <= '9':
			return c - '0', true
		case c >= 'a' && c <= 'f':
			return c - 'a' + 10, true
		case c >= 'A' && c <= 'F':
			return c - 'A' + 10, true
		}
		return 0, false
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] == '%' && i+2 < len(v) {
			h, ok1 := unhex(v[i+1])
			l, ok2 := unhex(v[i+2])
			if ok1 && ok2 {
				b.WriteByte(h<<4 | l)
				i += 2
				continue
			}
		}
		b.WriteByte(v[i])
	}
	return b.String()
}

// SSHKeyLines splits decoded authorized-keys text into its non-empty
// lines, trimmed.
func SSHKeyLines(text string) []string {
	var out []string
	for l := range strings.Lines(text) {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// sshKeyTypes are the public key types ssh-keygen reads.
var sshKeyTypes = map[string]bool{
	"ssh-ed25519": true, "ssh-rsa": true, "ssh-dss": true,
	"ecdsa-sha2-nistp256": true, "ecdsa-sha2-nistp384": true, "ecdsa-sha2-nistp521": true,
	"sk-ssh-ed25519@openssh.com": true, "sk-ecdsa-sha2-nistp256@openssh.com": true,
}

// CheckSSHKey returns why line is not an SSH public key in authorized_keys
// form ("TYPE BASE64 [COMMENT]", options before TYPE allowed), or "". It
// checks what qemu-server's validate_ssh_public_keys relies on ssh-keygen
// for: a known type whose base64 blob decodes and names the same type.
func CheckSSHKey(line string) string {
	f := strings.Fields(line)
	for i := 0; i+1 < len(f); i++ {
		if !sshKeyTypes[f[i]] {
			continue
		}
		blob, err := base64.StdEncoding.DecodeString(f[i+1])
		if err != nil {
			return fmt.Sprintf("the %s key's data is not base64", f[i])
		}
		if len(blob) < 4 {
			return fmt.Sprintf("the %s key's data is truncated", f[i])
		}
		n := binary.BigEndian.Uint32(blob)
		if uint64(n) > uint64(len(blob)-4) || string(blob[4:4+n]) != f[i] {
			return fmt.Sprintf("the key's data is not a %s key", f[i])
		}
		return ""
	}
	return "not an SSH public key (want TYPE BASE64 [COMMENT], e.g. ssh-ed25519 AAAA… user@host)"
}
