package normalize

import (
	"testing"

	"github.com/steward-pve/steward/internal/guest"
)

const (
	edKey    = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOldEEHXRJbKuE453AGQyJq8GVUpkK1aV9xjsaW3kdJ0 op@ws"
	ecdsaKey = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEU6uAJiG+lzVyEpR1in7vABK4+FmU/hv1da6sEWejtHcYVgCRKCQjtA/DaFTKRsdxXQdr4gS6RoKwcz1AqTztU= ci"
)

// The sshkeys value PVE stores is what qm set --sshkeys sends: the key
// file URI::Escape'd. Encoding and decoding must round-trip, and the
// encoding must pass PVE's urlencoded format.
func TestSSHKeysEncoding(t *testing.T) {
	plain := edKey + "\n" + ecdsaKey
	enc := EncodeSSHKeys(plain)
	want := "ssh-ed25519%20AAAAC3NzaC1lZDI1NTE5AAAAIOldEEHXRJbKuE453AGQyJq8GVUpkK1aV9xjsaW3kdJ0%20op%40ws%0Aecdsa-sha2-nistp256%20AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEU6uAJiG%2BlzVyEpR1in7vABK4%2BFmU%2Fhv1da6sEWejtHcYVgCRKCQjtA%2FDaFTKRsdxXQdr4gS6RoKwcz1AqTztU%3D%20ci"
	if enc != want {
		t.Fatalf("EncodeSSHKeys = %q; want %q", enc, want)
	}
	if !IsURLEncoded(enc) {
		t.Errorf("IsURLEncoded(%q) = false; PVE's urlencoded format accepts it", enc)
	}
	if IsURLEncoded(plain) {
		t.Errorf("IsURLEncoded(plain keys) = true; a space or + is not urlencoded")
	}
	if got := DecodeSSHKeys(enc); got != plain {
		t.Errorf("DecodeSSHKeys = %q; want %q", got, plain)
	}
	// uri_unescape leaves what is not %XX alone.
	if got := DecodeSSHKeys("a%2"); got != "a%2" {
		t.Errorf("DecodeSSHKeys(a%%2) = %q; want it unchanged", got)
	}
	// The web UI's lower-case hex and unescaped ()!*' read the same.
	if !Equal(guest.QEMU, "sshkeys", EncodeSSHKeys(edKey+" (laptop)"), "ssh-ed25519%20AAAAC3NzaC1lZDI1NTE5AAAAIOldEEHXRJbKuE453AGQyJq8GVUpkK1aV9xjsaW3kdJ0%20op%40ws%20(laptop)%0a") {
		t.Error("sshkeys written by qm and by the web UI read as different")
	}
	if Equal(guest.QEMU, "sshkeys", EncodeSSHKeys(edKey), EncodeSSHKeys(ecdsaKey)) {
		t.Error("different keys read as equal")
	}
}

func TestCheckSSHKey(t *testing.T) {
	for _, tc := range []struct {
		line string
		ok   bool
	}{
		{edKey, true},
		{ecdsaKey, true},
		{`from="10.0.0.0/8" ` + edKey, true},
		{"ssh-ed25519 AAAA op", false},         // truncated blob
		{"ssh-ed25519 !!!notbase64 op", false}, // not base64
		{"ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIOldEEHXRJbKuE453AGQyJq8GVUpkK1aV9xjsaW3kdJ0", false}, // an ed25519 blob named rsa
		{"hello world", false},
	} {
		if got := CheckSSHKey(tc.line) == ""; got != tc.ok {
			t.Errorf("CheckSSHKey(%q) = %q; want ok=%v", tc.line, CheckSSHKey(tc.line), tc.ok)
		}
	}
}
