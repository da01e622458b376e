// Package allowedsigners parses OpenSSH allowed_signers files (ssh-keygen(1),
// "ALLOWED SIGNERS") and answers which principals a signing key stands for.
//
// Each non-blank line that does not start with '#' is
//
//	principals [options] keytype base64 [comment]
//
// principals is a comma-separated pattern list ('*' any run, '?' one
// character, a leading '!' negates), optionally wrapped in double quotes.
// options is a comma-separated list, keywords case-insensitive:
// cert-authority; namespaces="pattern-list"; valid-after=T; valid-before=T,
// where T is YYYYMMDD[Z] or YYYYMMDDHHMM[SS][Z], in the local time zone
// unless suffixed with Z (UTC). valid-after and valid-before are inclusive,
// as in OpenSSH.
//
// Differences from OpenSSH, all stricter: an unknown option, an unsupported
// key type (ssh-dss, certificates as keys) or an RSA key shorter than 2048
// bits is a parse error naming the line instead of a line that never
// matches; a signature made with an SSH certificate is accepted only through
// a cert-authority line (never because the certificate's bare key is listed
// as a plain key), and a certificate carrying any critical option is refused.
//
// The package reads only what it is given: Parse reads its io.Reader and
// ParseFile the named file. A Set is immutable once parsed.
package allowedsigners

import (
	"bufio"
	"bytes"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/steward-pve/steward/internal/safefile"
)

// Sentinel errors returned (wrapped) by Find; test with errors.Is.
var (
	// ErrUnknownKey: the key (or certificate's CA) is on no line.
	ErrUnknownKey = errors.New("allowedsigners: key not in allowed_signers")
	// ErrNamespace: the key is listed, but no line allows the namespace.
	ErrNamespace = errors.New("allowedsigners: namespace not allowed for key")
	// ErrNotYetValid: the key is listed, but only before its valid-after.
	ErrNotYetValid = errors.New("allowedsigners: key not yet valid")
	// ErrExpired: the key is listed, but only after its valid-before.
	ErrExpired = errors.New("allowedsigners: key expired")
	// ErrCertificate: a certificate was presented and is not acceptable
	// (expired, not yet valid, bad CA signature, host certificate, no
	// matching principal, critical options).
	ErrCertificate = errors.New("allowedsigners: certificate not acceptable")
)

// MaxLineLen bounds one line of an allowed_signers file.
const MaxLineLen = 64 * 1024

// Entry is one line of an allowed_signers file.
type Entry struct {
	Line          int           // 1-based line number
	Principals    []string      // the principals pattern list, split on commas, as written
	CertAuthority bool          // the key is a CA for user certificates
	Namespaces    string        // namespaces pattern list; "" means any namespace
	HasNamespaces bool          // a namespaces= option was present
	ValidAfter    time.Time     // zero: no lower bound
	ValidBefore   time.Time     // zero: no upper bound
	Key           ssh.PublicKey // never a certificate
	Comment       string
}

// Set is a parsed allowed_signers file. A Set is immutable and safe for
// concurrent use; the zero Set and a nil *Set hold no entries.
type Set struct {
	entries []Entry
}

// Len returns the number of entries.
func (s *Set) Len() int {
	if s == nil {
		return 0
	}
	return len(s.entries)
}

// Entries returns a copy of the entries in file order.
func (s *Set) Entries() []Entry {
	if s == nil {
		return nil
	}
	return append([]Entry(nil), s.entries...)
}

// MaxFileSize bounds an allowed_signers file read by ParseFile: thousands
// of keys fit in far less.
const MaxFileSize = 4 << 20

// ParseFile reads and parses the allowed_signers file at path (following
// symlinks): only a regular file of at most MaxFileSize bytes is read, so a
// FIFO or device there is an error, never a hang (see package safefile).
func ParseFile(path string) (*Set, error) {
	b, err := safefile.ReadFile(path, MaxFileSize)
	if err != nil {
		return nil, fmt.Errorf("allowedsigners: %w", err)
	}
	s, err := Parse(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%w (file %s)", err, path)
	}
	return s, nil
}

// Parse reads an allowed_signers file. Any malformed line is an error
// naming its line number; nothing is silently skipped except blank lines
// and comments.
func Parse(r io.Reader) (*Set, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), MaxLineLen)
	s := &Set{}
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimRight(sc.Text(), "\r")
		e, ok, err := parseLine(line)
		if err != nil {
			return nil, fmt.Errorf("allowedsigners: line %d: %w", n, err)
		}
		if ok {
			e.Line = n
			s.entries = append(s.entries, e)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("allowedsigners: after line %d: %w", n, err)
	}
	return s, nil
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' }

func skipSpace(s string) string {
	for len(s) > 0 && isSpace(s[0]) {
		s = s[1:]
	}
	return s
}

// nextField splits off a whitespace-delimited field; double quotes protect
// spaces (and are kept in the field).
func nextField(s string) (field, rest string, err error) {
	inQuote := false
	i := 0
	for ; i < len(s); i++ {
		c := s[i]
		if c == '"' {
			inQuote = !inQuote
			continue
		}
		if !inQuote && isSpace(c) {
			break
		}
	}
	if inQuote {
		return "", "", errors.New("unterminated double quote")
	}
	return s[:i], skipSpace(s[i:]), nil
}

func parseLine(line string) (Entry, bool, error) {
	var e Entry
	line = skipSpace(line)
	if line == "" || line[0] == '#' {
		return e, false, nil
	}
	field, rest, err := nextField(line)
	if err != nil {
		return e, false, fmt.Errorf("principals: %w", err)
	}
	if len(field) >= 2 && field[0] == '"' && field[len(field)-1] == '"' {
		field = field[1 : len(field)-1]
	}
	if strings.Contains(field, "\"") {
		return e, false, errors.New("principals: stray double quote")
	}
	if field == "" {
		return e, false, errors.New("principals: empty")
	}
	for _, p := range strings.Split(field, ",") {
		if p == "" || p == "!" {
			return e, false, fmt.Errorf("principals %q: empty pattern in list", field)
		}
		e.Principals = append(e.Principals, p)
	}
	if rest == "" {
		return e, false, errors.New("missing key type and key")
	}
	// The next field is a key type or the options.
	if w := firstWord(rest); w == "ssh-dss" || strings.HasSuffix(w, "-cert-v01@openssh.com") {
		return e, false, fmt.Errorf("unsupported key type %q (DSA keys and certificates cannot be listed; list a certificate's CA with cert-authority)", w)
	}
	if !isKeyType(firstWord(rest)) {
		var opts string
		opts, rest, err = nextField(rest)
		if err != nil {
			return e, false, fmt.Errorf("options: %w", err)
		}
		if err := parseOptions(&e, opts); err != nil {
			return e, false, err
		}
	}
	typ, rest, _ := nextField(rest)
	b64, rest, _ := nextField(rest)
	if typ == "" || b64 == "" {
		return e, false, errors.New("missing key type or base64 key")
	}
	if !isKeyType(typ) {
		return e, false, fmt.Errorf("unsupported key type %q (want ssh-ed25519, ecdsa-sha2-nistp256/384/521, ssh-rsa, sk-ssh-ed25519@openssh.com or sk-ecdsa-sha2-nistp256@openssh.com)", typ)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(typ + " " + b64))
	if err != nil {
		return e, false, fmt.Errorf("key: %v", err)
	}
	if pub.Type() != typ {
		return e, false, fmt.Errorf("key: type field %q but key data is %q", typ, pub.Type())
	}
	if cp, ok := pub.(ssh.CryptoPublicKey); ok {
		if rk, ok := cp.CryptoPublicKey().(*rsa.PublicKey); ok && rk.N.BitLen() < 2048 {
			return e, false, fmt.Errorf("key: RSA key of %d bits; at least 2048 required", rk.N.BitLen())
		}
	}
	e.Key = pub
	e.Comment = rest
	return e, true, nil
}

func firstWord(s string) string {
	for i := 0; i < len(s); i++ {
		if isSpace(s[i]) {
			return s[:i]
		}
	}
	return s
}

var keyTypes = map[string]bool{
	ssh.KeyAlgoED25519:    true,
	ssh.KeyAlgoECDSA256:   true,
	ssh.KeyAlgoECDSA384:   true,
	ssh.KeyAlgoECDSA521:   true,
	ssh.KeyAlgoRSA:        true,
	ssh.KeyAlgoSKED25519:  true,
	ssh.KeyAlgoSKECDSA256: true,
}

func isKeyType(s string) bool { return keyTypes[s] }

// splitOptions splits on commas outside double quotes.
func splitOptions(s string) ([]string, error) {
	var out []string
	inQuote := false
	start := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"':
			inQuote = !inQuote
		case ',':
			if !inQuote {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	if inQuote {
		return nil, errors.New("options: unterminated double quote")
	}
	return append(out, s[start:]), nil
}

func parseOptions(e *Entry, opts string) error {
	list, err := splitOptions(opts)
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, o := range list {
		name, val, hasVal := strings.Cut(o, "=")
		lname := strings.ToLower(name)
		if seen[lname] {
			return fmt.Errorf("option %q given twice", name)
		}
		seen[lname] = true
		if hasVal {
			if len(val) < 2 || val[0] != '"' || val[len(val)-1] != '"' {
				// OpenSSH requires quoted option values.
				return fmt.Errorf("option %s: value must be in double quotes", name)
			}
			val = val[1 : len(val)-1]
			if strings.Contains(val, "\"") {
				return fmt.Errorf("option %s: stray double quote in value", name)
			}
		}
		switch lname {
		case "cert-authority":
			if hasVal {
				return errors.New("option cert-authority takes no value")
			}
			e.CertAuthority = true
		case "namespaces":
			if !hasVal {
				return errors.New("option namespaces needs a value")
			}
			e.Namespaces, e.HasNamespaces = val, true
		case "valid-after", "valid-before":
			if !hasVal {
				return fmt.Errorf("option %s needs a value", name)
			}
			t, err := ParseTime(val, time.Local)
			if err != nil {
				return fmt.Errorf("option %s: %w", name, err)
			}
			if lname == "valid-after" {
				e.ValidAfter = t
			} else {
				e.ValidBefore = t
			}
		default:
			return fmt.Errorf("unknown option %q (supported: cert-authority, namespaces, valid-after, valid-before)", name)
		}
	}
	if !e.ValidAfter.IsZero() && !e.ValidBefore.IsZero() && !e.ValidBefore.After(e.ValidAfter) {
		return errors.New("valid-before is not after valid-after")
	}
	return nil
}

// ParseTime parses an allowed_signers timestamp: YYYYMMDD[Z] or
// YYYYMMDDHHMM[SS][Z]; without Z it is a wall-clock time in loc.
func ParseTime(s string, loc *time.Location) (time.Time, error) {
	v := s
	if strings.HasSuffix(v, "Z") || strings.HasSuffix(v, "z") {
		v, loc = v[:len(v)-1], time.UTC
	}
	var layout string
	switch len(v) {
	case 8:
		layout = "20060102"
	case 12:
		layout = "200601021504"
	case 14:
		layout = "20060102150405"
	default:
		return time.Time{}, fmt.Errorf("timestamp %q: want YYYYMMDD[Z] or YYYYMMDDHHMM[SS][Z]", s)
	}
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return time.Time{}, fmt.Errorf("timestamp %q: want digits", s)
		}
	}
	t, err := time.ParseInLocation(layout, v, loc)
	if err != nil {
		return time.Time{}, fmt.Errorf("timestamp %q: %v", s, err)
	}
	return t, nil
}

// MatchPattern reports whether s matches the OpenSSH wildcard pattern p
// ('*' any run of characters, '?' exactly one).
func MatchPattern(s, p string) bool {
	// Iterative glob with single-star backtracking; linear-ish, no recursion.
	si, pi := 0, 0
	star, mark := -1, 0
	for si < len(s) {
		switch {
		case pi < len(p) && (p[pi] == '?' || p[pi] == s[si]):
			si++
			pi++
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, si
			pi++
		case star >= 0:
			pi = star + 1
			mark++
			si = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

// MatchList evaluates an OpenSSH pattern list against s: false if any
// negated ('!') pattern matches, else true if any plain pattern matches.
func MatchList(s string, patterns []string) bool {
	pos := false
	for _, p := range patterns {
		if neg := strings.HasPrefix(p, "!"); neg {
			if MatchPattern(s, p[1:]) {
				return false
			}
		} else if MatchPattern(s, p) {
			pos = true
		}
	}
	return pos
}

func (e *Entry) checkNamespaceAndTime(namespace string, at time.Time) error {
	if e.HasNamespaces && !MatchList(namespace, strings.Split(e.Namespaces, ",")) {
		return fmt.Errorf("%w: line %d allows namespaces %q, not %q", ErrNamespace, e.Line, e.Namespaces, namespace)
	}
	if !e.ValidAfter.IsZero() && at.Before(e.ValidAfter) {
		return fmt.Errorf("%w: line %d is valid after %s", ErrNotYetValid, e.Line, e.ValidAfter.UTC().Format(time.RFC3339))
	}
	if !e.ValidBefore.IsZero() && at.After(e.ValidBefore) {
		return fmt.Errorf("%w: line %d was valid until %s", ErrExpired, e.Line, e.ValidBefore.UTC().Format(time.RFC3339))
	}
	return nil
}

// Find returns the principals that pub may sign for in namespace at time
// at, from every line that lists the key and allows both. For a plain key
// these are the lines' non-negated principal patterns, as written. For an
// *ssh.Certificate they are the certificate's principals that match the
// principals of a cert-authority line listing the certificate's CA; the
// certificate must be a user certificate valid at at, correctly signed by
// that CA, and carry no critical options.
//
// When nothing matches, the error wraps ErrUnknownKey, ErrNamespace,
// ErrNotYetValid, ErrExpired or ErrCertificate, describing the most
// specific reason a listed key was refused. The result has no duplicates
// and is in file order.
func (s *Set) Find(pub ssh.PublicKey, namespace string, at time.Time) ([]string, error) {
	if cert, ok := pub.(*ssh.Certificate); ok {
		return s.findCert(cert, namespace, at)
	}
	want := pub.Marshal()
	var out []string
	var firstErr error
	for i := range s.entriesOrNil() {
		e := &s.entries[i]
		if e.CertAuthority || !bytes.Equal(e.Key.Marshal(), want) {
			continue
		}
		if err := e.checkNamespaceAndTime(namespace, at); err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		for _, p := range e.Principals {
			if !strings.HasPrefix(p, "!") {
				out = appendUnique(out, p)
			}
		}
	}
	if len(out) > 0 {
		return out, nil
	}
	if firstErr != nil {
		return nil, firstErr
	}
	return nil, fmt.Errorf("%w: %s %s", ErrUnknownKey, pub.Type(), ssh.FingerprintSHA256(pub))
}

func (s *Set) entriesOrNil() []Entry {
	if s == nil {
		return nil
	}
	return s.entries
}

func appendUnique(list []string, v string) []string {
	for _, x := range list {
		if x == v {
			return list
		}
	}
	return append(list, v)
}

func (s *Set) findCert(cert *ssh.Certificate, namespace string, at time.Time) ([]string, error) {
	ca := cert.SignatureKey.Marshal()
	var out []string
	var firstErr error
	listed := false
	for i := range s.entriesOrNil() {
		e := &s.entries[i]
		if !e.CertAuthority || !bytes.Equal(e.Key.Marshal(), ca) {
			continue
		}
		listed = true
		if err := e.checkNamespaceAndTime(namespace, at); err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		if err := checkCert(cert, at); err != nil {
			return nil, err
		}
		matched := false
		for _, p := range cert.ValidPrincipals {
			if MatchList(p, e.Principals) {
				out = appendUnique(out, p)
				matched = true
			}
		}
		if !matched && firstErr == nil {
			firstErr = fmt.Errorf("%w: none of the certificate's principals %q matches line %d's principals %q", ErrCertificate, cert.ValidPrincipals, e.Line, strings.Join(e.Principals, ","))
		}
	}
	if len(out) > 0 {
		return out, nil
	}
	if firstErr != nil {
		return nil, firstErr
	}
	if !listed {
		return nil, fmt.Errorf("%w: certificate authority %s %s is not a cert-authority line", ErrUnknownKey, cert.SignatureKey.Type(), ssh.FingerprintSHA256(cert.SignatureKey))
	}
	return nil, fmt.Errorf("%w: certificate not accepted", ErrCertificate)
}

func checkCert(cert *ssh.Certificate, at time.Time) error {
	if cert.CertType != ssh.UserCert {
		return fmt.Errorf("%w: serial %d is a host certificate, not a user certificate", ErrCertificate, cert.Serial)
	}
	if len(cert.ValidPrincipals) == 0 {
		return fmt.Errorf("%w: serial %d names no principals", ErrCertificate, cert.Serial)
	}
	if len(cert.CriticalOptions) > 0 {
		return fmt.Errorf("%w: serial %d carries critical options, which steward does not honour", ErrCertificate, cert.Serial)
	}
	if _, isCert := cert.SignatureKey.(*ssh.Certificate); isCert {
		return fmt.Errorf("%w: serial %d is signed by a certificate, not a CA key", ErrCertificate, cert.Serial)
	}
	unix := at.Unix()
	if unix < 0 || uint64(unix) < cert.ValidAfter {
		return fmt.Errorf("%w: serial %d is not valid before %s", ErrCertificate, cert.Serial, time.Unix(int64(cert.ValidAfter), 0).UTC().Format(time.RFC3339))
	}
	if cert.ValidBefore != ssh.CertTimeInfinity && uint64(unix) >= cert.ValidBefore {
		return fmt.Errorf("%w: serial %d expired at %s", ErrCertificate, cert.Serial, time.Unix(int64(cert.ValidBefore), 0).UTC().Format(time.RFC3339))
	}
	c := &ssh.CertChecker{
		Clock:           func() time.Time { return at },
		IsUserAuthority: func(ssh.PublicKey) bool { return true }, // the caller matched the CA already
	}
	if err := c.CheckCert(cert.ValidPrincipals[0], cert); err != nil {
		return fmt.Errorf("%w: serial %d: %v", ErrCertificate, cert.Serial, err)
	}
	return nil
}
