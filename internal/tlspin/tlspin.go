// Package tlspin pins a TLS server to one certificate by its SHA-256
// fingerprint, the way PVE shows a node's ssl_fingerprint and the hub
// prints its own: upper-case colon-hex ("80:D4:…:F5").
//
// Pinning replaces Go's CA and host-name verification with one check:
// the leaf certificate's SHA-256 must be the pinned one. It is how an
// agent trusts a hub (or PVE) with a self-signed certificate without
// turning verification off.
package tlspin

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// Size is the length of a fingerprint in bytes.
const Size = sha256.Size

// Parse parses a SHA-256 certificate fingerprint in colon-hex form; case
// and colons are optional, surrounding space is ignored.
func Parse(s string) ([Size]byte, error) {
	var out [Size]byte
	h := strings.ReplaceAll(strings.TrimSpace(s), ":", "")
	if len(h) != 2*Size {
		return out, fmt.Errorf("fingerprint must be a SHA-256 in colon-hex (32 bytes, e.g. 80:D4:…:F5), got %d hex digits", len(h))
	}
	if _, err := hex.Decode(out[:], []byte(h)); err != nil {
		return out, fmt.Errorf("fingerprint is not hex: %w", err)
	}
	return out, nil
}

// Format formats a digest as upper-case hex bytes separated by colons.
func Format(sum []byte) string {
	const hexd = "0123456789ABCDEF"
	b := make([]byte, 0, len(sum)*3)
	for i, x := range sum {
		if i > 0 {
			b = append(b, ':')
		}
		b = append(b, hexd[x>>4], hexd[x&0xf])
	}
	return string(b)
}

// Of returns the fingerprint of a DER certificate.
func Of(der []byte) string {
	sum := sha256.Sum256(der)
	return Format(sum[:])
}

// Config returns a client TLS configuration that accepts only a server
// whose leaf certificate has fingerprint want. mismatch builds the error
// of a refused handshake from the two fingerprints (colon-hex), so each
// caller can name its own setting; nil gives a *MismatchError.
//
// Go's built-in verification is turned off (InsecureSkipVerify) and
// replaced by VerifyConnection, which runs on every handshake, resumed
// sessions included.
func Config(want [Size]byte, mismatch func(want, got string) error) *tls.Config {
	if mismatch == nil {
		mismatch = func(w, g string) error { return &MismatchError{Want: w, Got: g} }
	}
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("server presented no certificate")
			}
			got := sha256.Sum256(cs.PeerCertificates[0].Raw)
			if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
				return mismatch(Format(want[:]), Format(got[:]))
			}
			return nil
		},
	}
}

// MismatchError is a handshake refused because the server's certificate
// does not have the pinned fingerprint. Both fingerprints are public.
type MismatchError struct {
	Want, Got string // colon-hex, upper case
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("server certificate fingerprint %s does not match the pinned %s", e.Got, e.Want)
}
