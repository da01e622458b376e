// Package spec is the pure core of steward's signed operations: the
// canonical payload an operator signs, the signing policy, a signed job
// read once (ParseJob), and the rejection codes. It does no I/O and no
// cryptography, so the hub, the wire and the gate can share it; package
// signedop (SSHSIG signatures and the verifier) re-exports it, and its
// errors keep the "signedop:" prefix operators know.
//
// # Namespace
//
// Every signature is an OpenSSH SSHSIG (ssh-keygen -Y sign) in the
// namespace "steward-op@steward" (the constant Namespace). A signature in
// any other namespace, or none, is rejected, so a signature made for git,
// email or file signing can never authorize a steward operation, and a
// steward signature is useless anywhere else.
//
// # Canonical payload
//
// The signed bytes are one JSON object followed by a single "\n" (so a
// payload saved to a file is a normal text file, and `ssh-keygen -Y sign`
// over that file signs exactly the canonical bytes). The object has exactly
// these members, in this order (byte-wise sorted keys):
//
//	digest      string  guest config digest the operator saw ("" for a guest that does not exist yet)
//	expires     string  RFC 3339 UTC, whole seconds, "Z" suffix: 2026-01-02T03:04:05Z
//	host        string  the agent's host id
//	kind        string  "qemu" | "lxc"
//	nonce       string  32 lowercase hex digits (128 random bits)
//	not_before  string  as expires
//	op          string  the action's op ("destroy", "config", ...)
//	params      object  the action's exact PVE parameters, string values, keys sorted; {} when none
//	reason      string  free text
//	v           integer format version, 1
//	vmid        integer the guest's vmid
//
// Encoding rules (a subset of RFC 8785 JCS): no whitespace outside strings;
// object keys sorted by their UTF-8 bytes; integers in shortest decimal
// form, no sign, fraction or exponent (no floats appear); strings are UTF-8
// with only these escapes: \" \\ \b \f \n \r \t, other control characters
// below U+0020 as \u00XX with lowercase hex, everything else (including
// '/', '<', '>', '&', U+2028, U+2029 and non-ASCII) written literally.
// Invalid UTF-8 cannot be encoded: NewPayload rejects it, and Canonical
// writes U+FFFD in its place (which then no longer matches the action).
// ParsePayload accepts only these exact bytes: any other spelling of the
// same content is rejected, so one payload has one signature-relevant form.
package spec

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/guest"
)

// Namespace is the SSHSIG namespace of every steward operation signature:
// ssh-keygen -Y sign -n steward-op@steward.
const Namespace = "steward-op@steward"

// Version is the payload format version this package writes and accepts.
const Version = 1

// MaxPayloadSize bounds a payload's canonical encoding.
const MaxPayloadSize = 64 * 1024

// MaxReasonLen bounds the reason text in bytes.
const MaxReasonLen = 4096

// TimeLayout is the payload's time format: RFC 3339, UTC, whole seconds.
const TimeLayout = "2006-01-02T15:04:05Z"

// Payload is the content an operator signs: one action on one guest on one
// host, in one config state, within a time window, once.
type Payload struct {
	Version   int               `json:"v"`
	Op        action.Op         `json:"op"`
	Host      string            `json:"host"`
	VMID      int               `json:"vmid"`
	Kind      guest.Kind        `json:"kind"`
	Params    map[string]string `json:"params"`
	Digest    string            `json:"digest"`
	Nonce     string            `json:"nonce"`
	NotBefore time.Time         `json:"not_before"`
	Expires   time.Time         `json:"expires"`
	Reason    string            `json:"reason"`
}

// NewPayload builds the payload authorizing a on host: a fresh random
// nonce, NotBefore = now (UTC, truncated to the second), Expires =
// NotBefore + ttl, Digest = a.Digest. ttl must be at least one second.
// Params are copied. It fails when any field would not pass ParsePayload.
func NewPayload(host string, a action.Action, now time.Time, ttl time.Duration, reason string) (Payload, error) {
	if ttl < time.Second {
		return Payload{}, fmt.Errorf("signedop: ttl %v is shorter than one second", ttl)
	}
	var n [16]byte
	if _, err := rand.Read(n[:]); err != nil {
		return Payload{}, fmt.Errorf("signedop: read random nonce: %w", err)
	}
	nb := now.UTC().Truncate(time.Second)
	params := maps.Clone(a.Params)
	if params == nil {
		params = map[string]string{}
	}
	p := Payload{
		Version:   Version,
		Op:        a.Op,
		Host:      host,
		VMID:      a.VMID,
		Kind:      a.Kind,
		Params:    params,
		Digest:    a.Digest,
		Nonce:     hex.EncodeToString(n[:]),
		NotBefore: nb,
		Expires:   nb.Add(ttl).Truncate(time.Second),
		Reason:    reason,
	}
	if err := p.validate(); err != nil {
		return Payload{}, err
	}
	return p, nil
}

// Action returns the action the payload authorizes.
func (p Payload) Action() action.Action {
	return action.Action{Op: p.Op, VMID: p.VMID, Kind: p.Kind, Params: maps.Clone(p.Params), Digest: p.Digest}
}

// Canonical returns the payload's canonical encoding (see the package
// doc), ending in "\n". It never fails; NotBefore and Expires are written
// in UTC truncated to the second.
func (p Payload) Canonical() []byte {
	var b bytes.Buffer
	b.WriteString(`{"digest":`)
	writeString(&b, p.Digest)
	b.WriteString(`,"expires":`)
	writeString(&b, p.Expires.UTC().Format(TimeLayout))
	b.WriteString(`,"host":`)
	writeString(&b, p.Host)
	b.WriteString(`,"kind":`)
	writeString(&b, string(p.Kind))
	b.WriteString(`,"nonce":`)
	writeString(&b, p.Nonce)
	b.WriteString(`,"not_before":`)
	writeString(&b, p.NotBefore.UTC().Format(TimeLayout))
	b.WriteString(`,"op":`)
	writeString(&b, string(p.Op))
	b.WriteString(`,"params":{`)
	for i, k := range slices.Sorted(maps.Keys(p.Params)) {
		if i > 0 {
			b.WriteByte(',')
		}
		writeString(&b, k)
		b.WriteByte(':')
		writeString(&b, p.Params[k])
	}
	b.WriteString(`},"reason":`)
	writeString(&b, p.Reason)
	b.WriteString(`,"v":`)
	b.WriteString(strconv.Itoa(p.Version))
	b.WriteString(`,"vmid":`)
	b.WriteString(strconv.Itoa(p.VMID))
	b.WriteString("}\n")
	return b.Bytes()
}

func writeString(b *bytes.Buffer, s string) {
	const hexd = "0123456789abcdef"
	b.WriteByte('"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch c {
			case '"':
				b.WriteString(`\"`)
			case '\\':
				b.WriteString(`\\`)
			case '\b':
				b.WriteString(`\b`)
			case '\f':
				b.WriteString(`\f`)
			case '\n':
				b.WriteString(`\n`)
			case '\r':
				b.WriteString(`\r`)
			case '\t':
				b.WriteString(`\t`)
			default:
				if c < 0x20 {
					b.WriteString(`\u00`)
					b.WriteByte(hexd[c>>4])
					b.WriteByte(hexd[c&0xf])
				} else {
					b.WriteByte(c)
				}
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b.WriteString("\uFFFD")
		} else {
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	b.WriteByte('"')
}

var fieldOrder = []string{"digest", "expires", "host", "kind", "nonce", "not_before", "op", "params", "reason", "v", "vmid"}

// ParsePayload decodes a canonical payload strictly: the bytes must be
// exactly what Canonical produces for a valid payload. An unknown or
// missing member, a wrong type, an unsupported version, an invalid value
// or a non-canonical spelling is an error naming the member (or the byte
// offset of the first non-canonical byte). The version check comes first
// so a future format is reported as such; the error then wraps
// ErrUnsupportedVersion.
func ParsePayload(b []byte) (Payload, error) {
	if len(b) > MaxPayloadSize {
		return Payload{}, fmt.Errorf("signedop: payload is %d bytes; at most %d allowed", len(b), MaxPayloadSize)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return Payload{}, fmt.Errorf("signedop: payload is not a JSON object: %v", err)
	}
	if raw, ok := m["v"]; ok {
		v, err := parseInt(raw)
		if err != nil {
			return Payload{}, fmt.Errorf("signedop: payload field \"v\": %v", err)
		}
		if v != Version {
			return Payload{}, fmt.Errorf("signedop: payload field \"v\": %w %d (this agent understands %d)", ErrUnsupportedVersion, v, Version)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if !slices.Contains(fieldOrder, k) {
			return Payload{}, fmt.Errorf("signedop: payload has unknown field %q", k)
		}
	}
	for _, k := range fieldOrder {
		if _, ok := m[k]; !ok {
			return Payload{}, fmt.Errorf("signedop: payload field %q is missing", k)
		}
	}
	var p Payload
	var err error
	str := func(k string) string {
		if err != nil {
			return ""
		}
		var s string
		if e := json.Unmarshal(m[k], &s); e != nil || !bytes.HasPrefix(m[k], []byte(`"`)) {
			err = fmt.Errorf("signedop: payload field %q: want a string", k)
		}
		return s
	}
	tm := func(k string) time.Time {
		s := str(k)
		if err != nil {
			return time.Time{}
		}
		t, e := time.Parse(TimeLayout, s)
		if e != nil {
			err = fmt.Errorf("signedop: payload field %q: want UTC time like 2006-01-02T15:04:05Z, got %q", k, s)
		}
		return t
	}
	p.Digest = str("digest")
	p.Expires = tm("expires")
	p.Host = str("host")
	p.Kind = guest.Kind(str("kind"))
	p.Nonce = str("nonce")
	p.NotBefore = tm("not_before")
	p.Op = action.Op(str("op"))
	p.Reason = str("reason")
	if err != nil {
		return Payload{}, err
	}
	if !bytes.HasPrefix(m["params"], []byte("{")) {
		return Payload{}, errors.New(`signedop: payload field "params": want an object of strings`)
	}
	if e := json.Unmarshal(m["params"], &p.Params); e != nil {
		return Payload{}, errors.New(`signedop: payload field "params": want an object of strings`)
	}
	p.Version = Version
	if p.VMID, err = parseInt(m["vmid"]); err != nil {
		return Payload{}, fmt.Errorf("signedop: payload field \"vmid\": %v", err)
	}
	if err := p.validate(); err != nil {
		return Payload{}, err
	}
	if c := p.Canonical(); !bytes.Equal(c, b) {
		i := 0
		for i < len(c) && i < len(b) && c[i] == b[i] {
			i++
		}
		return Payload{}, fmt.Errorf("signedop: payload is not in canonical form (first difference at byte %d); sign the exact bytes `steward op payload` prints", i)
	}
	return p, nil
}

// ErrUnsupportedVersion is wrapped by ParsePayload for a payload format
// version other than Version.
var ErrUnsupportedVersion = errors.New("unsupported payload version")

func parseInt(raw json.RawMessage) (int, error) {
	s := string(raw)
	if s == "" || len(s) > 10 {
		return 0, fmt.Errorf("want a non-negative integer of at most 10 digits, got %.20q", s)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("want a non-negative integer, got %.20q", s)
		}
	}
	return strconv.Atoi(s)
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= 0x20 || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// validate checks every field's value; errors name the field.
func (p Payload) validate() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("signedop: payload field %q: %s", field, fmt.Sprintf(format, args...))
	}
	if p.Version != Version {
		return bad("v", "%v %d (want %d)", ErrUnsupportedVersion, p.Version, Version)
	}
	if p.Op == "" || len(p.Op) > 64 {
		return bad("op", "want 1 to 64 characters")
	}
	for _, c := range []byte(p.Op) {
		if !(c >= 'a' && c <= 'z' || c == '_') {
			return bad("op", "%q: want lowercase letters and '_'", p.Op)
		}
	}
	if p.Host == "" || len(p.Host) > 253 || !printable(p.Host) {
		return bad("host", "%q: want 1 to 253 printable ASCII characters without spaces", p.Host)
	}
	if p.VMID < 100 || p.VMID > 999999999 {
		return bad("vmid", "%d: want 100 to 999999999", p.VMID)
	}
	if _, err := guest.ParseKind(string(p.Kind)); err != nil {
		return bad("kind", "%q: want qemu or lxc", p.Kind)
	}
	for k, v := range p.Params {
		if k == "" || !utf8.ValidString(k) || !utf8.ValidString(v) {
			return bad("params", "keys must be non-empty and keys and values valid UTF-8")
		}
	}
	if len(p.Digest) > 128 || !printable(p.Digest) {
		return bad("digest", "want at most 128 printable ASCII characters without spaces")
	}
	if len(p.Nonce) != 32 {
		return bad("nonce", "want 32 lowercase hex digits")
	}
	for _, c := range []byte(p.Nonce) {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return bad("nonce", "want 32 lowercase hex digits")
		}
	}
	if len(p.Reason) > MaxReasonLen || !utf8.ValidString(p.Reason) {
		return bad("reason", "want valid UTF-8 of at most %d bytes", MaxReasonLen)
	}
	for _, f := range []struct {
		name string
		t    time.Time
	}{{"not_before", p.NotBefore}, {"expires", p.Expires}} {
		if f.t.Year() < 2000 || f.t.Year() > 9999 || !f.t.Equal(f.t.Truncate(time.Second)) {
			return bad(f.name, "want a whole-second time between years 2000 and 9999")
		}
	}
	if !p.Expires.After(p.NotBefore) {
		return bad("expires", "%s is not after not_before %s", p.Expires.UTC().Format(TimeLayout), p.NotBefore.UTC().Format(TimeLayout))
	}
	return nil
}

// MismatchError is returned by Matches: the payload's Field differs from
// the gated action's.
type MismatchError struct {
	Field  string // "op", "host", "vmid", "kind", "params" or "digest"
	Signed string // the payload's value
	Want   string // the gated action's value
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("signedop: payload %s is %s but the action's is %s", e.Field, e.Signed, e.Want)
}

// Matches reports whether the payload authorizes exactly action a on host:
// op, host, vmid, kind, params (same keys, same values; nil and empty are
// equal) and digest. It returns nil or a *MismatchError for the first
// differing field in that order.
func (p Payload) Matches(host string, a action.Action) error {
	q := func(s string) string { return strconv.Quote(s) }
	switch {
	case p.Op != a.Op:
		return &MismatchError{"op", q(string(p.Op)), q(string(a.Op))}
	case p.Host != host:
		return &MismatchError{"host", q(p.Host), q(host)}
	case p.VMID != a.VMID:
		return &MismatchError{"vmid", strconv.Itoa(p.VMID), strconv.Itoa(a.VMID)}
	case p.Kind != a.Kind:
		return &MismatchError{"kind", q(string(p.Kind)), q(string(a.Kind))}
	case !maps.Equal(p.Params, a.Params):
		return paramsMismatch(p.Params, a.Params)
	case p.Digest != a.Digest:
		return &MismatchError{"digest", q(p.Digest), q(a.Digest)}
	}
	return nil
}

// paramsMismatch names the first differing key without printing values,
// which may be secrets (create's password, cipassword).
func paramsMismatch(signed, want map[string]string) *MismatchError {
	keys := slices.Sorted(maps.Keys(signed))
	for k := range want {
		if _, ok := signed[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		sv, sok := signed[k]
		wv, wok := want[k]
		switch {
		case sok && !wok:
			return &MismatchError{"params", fmt.Sprintf("key %q present", k), "absent"}
		case !sok && wok:
			return &MismatchError{"params", fmt.Sprintf("key %q absent", k), "present"}
		case sv != wv:
			return &MismatchError{"params", fmt.Sprintf("key %q with another value", k), "different"}
		}
	}
	return &MismatchError{"params", "different", "different"}
}
