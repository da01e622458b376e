package pve

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"syscall"

	"github.com/steward-pve/steward/internal/safefile"
)

// TokenEnv is the environment variable LoadToken falls back to when no
// token file is given.
const TokenEnv = "STEWARD_PVE_TOKEN"

// Token is a PVE API token: ID is "USER@REALM!TOKENID", Secret the UUID PVE
// printed when the token was created. The zero Token is invalid.
//
// Token never reveals its secret when printed: String, every fmt verb
// (%v, %+v, %#v, %s, %q), slog (LogValue) and text/JSON/YAML encoders
// (MarshalText) all show "USER@REALM!TOKENID=<redacted>". Only the client
// reads Secret, to build the Authorization header.
type Token struct {
	ID     string
	Secret string
}

const redacted = "<redacted>"

// ParseToken parses "USER@REALM!TOKENID=SECRET", splitting at the last '='
// as PVE does. An optional "PVEAPIToken=" prefix (the header form) is
// accepted. The returned error never contains any part of s, since s may
// be nothing but a secret.
func ParseToken(s string) (Token, error) {
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(s, "PVEAPIToken=")
	const want = "pve: API token must look like USER@REALM!TOKENID=SECRET"
	i := strings.LastIndexByte(s, '=')
	if i < 0 {
		return Token{}, errors.New(want + ": no '=' before the secret")
	}
	t := Token{ID: s[:i], Secret: s[i+1:]}
	if t.Secret == "" {
		return Token{}, errors.New(want + ": the secret after the last '=' is empty")
	}
	if err := checkTokenID(t.ID); err != nil {
		return Token{}, fmt.Errorf("%s: %w", want, err)
	}
	if !headerSafe(t.Secret) {
		return Token{}, errors.New(want + ": the secret contains spaces or control characters")
	}
	return t, nil
}

func checkTokenID(id string) error {
	at := strings.IndexByte(id, '@')
	bang := strings.LastIndexByte(id, '!')
	switch {
	case at <= 0:
		return errors.New("the token id has no USER@ part")
	case bang < 0 || bang < at:
		return errors.New("the token id has no !TOKENID after the realm")
	case bang == at+1:
		return errors.New("the token id has an empty realm")
	case bang == len(id)-1:
		return errors.New("the token id has an empty TOKENID")
	case !headerSafe(id):
		return errors.New("the token id contains spaces or control characters")
	}
	return nil
}

// headerSafe reports whether s can go into an HTTP header value verbatim.
func headerSafe(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c == 0x7f {
			return false
		}
	}
	return true
}

// MaxTokenFileSize bounds a token file; a token is about 100 bytes.
const MaxTokenFileSize = 4096

// LoadToken reads a token from file (surrounding whitespace trimmed); when
// file is "" it reads the environment variable STEWARD_PVE_TOKEN. It fails
// when neither is set. Errors name the file or variable, never the secret.
func LoadToken(file string) (Token, error) {
	if file == "" {
		v, ok := os.LookupEnv(TokenEnv)
		if !ok || strings.TrimSpace(v) == "" {
			return Token{}, errors.New("pve: no API token: give a token file (--pve-token-file) or set " + TokenEnv + " to USER@REALM!TOKENID=SECRET")
		}
		t, err := ParseToken(v)
		if err != nil {
			return Token{}, fmt.Errorf("%w (from %s)", err, TokenEnv)
		}
		return t, nil
	}
	b, err := safefile.ReadFile(file, MaxTokenFileSize)
	if err != nil {
		return Token{}, fmt.Errorf("pve: read API token file: %w", err)
	}
	t, err := ParseToken(string(b))
	if err != nil {
		return Token{}, fmt.Errorf("%w (in %s)", err, file)
	}
	return t, nil
}

// TokenFileWarning returns a warning when the token file at path can be
// read by more than the agent: by others (any user on the host), or by its
// group when that group is not the agent's own (its effective group, as in
// the recommended root:steward mode 0640). It returns "" when the mode is
// fine or the file cannot be examined (LoadToken reports that). The
// warning names the file and its mode, never its content.
func TokenFileWarning(path string) string {
	st, err := os.Stat(path)
	if err != nil {
		return ""
	}
	gid := -1
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		gid = int(s.Gid)
	}
	return tokenModeWarning(path, st.Mode().Perm(), gid, os.Getegid())
}

func tokenModeWarning(path string, perm os.FileMode, fileGid, egid int) string {
	const fix = "chmod it 0640 with the agent's group (chown root:steward) or 0600 owned by the agent's user"
	switch {
	case perm&0o004 != 0:
		return fmt.Sprintf("pve: the API token file %s is readable by every user on this host (mode %04o): %s", path, perm, fix)
	case perm&0o040 != 0 && fileGid != egid:
		return fmt.Sprintf("pve: the API token file %s is readable by its group, which is not the agent's (mode %04o, group %d): %s", path, perm, fileGid, fix)
	}
	return ""
}

// IsZero reports whether t is the zero Token.
func (t Token) IsZero() bool { return t == Token{} }

// String returns "USER@REALM!TOKENID=<redacted>".
func (t Token) String() string { return t.ID + "=" + redacted }

// GoString implements fmt.GoStringer without the secret.
func (t Token) GoString() string {
	return fmt.Sprintf("pve.Token{ID:%q, Secret:%q}", t.ID, redacted)
}

// Format implements fmt.Formatter so that no verb prints the secret.
func (t Token) Format(f fmt.State, verb rune) {
	switch {
	case verb == 'v' && f.Flag('#'):
		fmt.Fprint(f, t.GoString())
	case verb == 'q':
		fmt.Fprintf(f, "%q", t.String())
	default:
		fmt.Fprint(f, t.String())
	}
}

// LogValue implements slog.LogValuer without the secret.
func (t Token) LogValue() slog.Value { return slog.StringValue(t.String()) }

// MarshalText implements encoding.TextMarshaler without the secret, so a
// configuration dump (JSON, YAML) never contains it.
func (t Token) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// header returns the Authorization header value.
func (t Token) header() string { return "PVEAPIToken=" + t.ID + "=" + t.Secret }
