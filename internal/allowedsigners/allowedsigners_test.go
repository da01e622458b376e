package allowedsigners_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/allowedsigners"
	"golang.org/x/crypto/ssh"
)

func newKey(t testing.TB) (ssh.Signer, string) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromSigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	b := ssh.MarshalAuthorizedKey(s.PublicKey())
	return s, strings.TrimSpace(string(b))
}

func TestParse(t *testing.T) {
	_, k := newKey(t)
	file := strings.Join([]string{
		"# comment",
		"",
		"   # indented comment",
		"alice@example.com " + k,
		"bob@example.com,carol@example.com " + k + " a comment with  spaces",
		`"dave smith@example.com" ` + k,
		`*@example.com,!eve@example.com CERT-AUTHORITY,Namespaces="steward-op@steward,file" ` + k,
		`frank@example.com valid-after="20260101",valid-before="20270101123000Z" ` + k,
		"\tgina@example.com\t" + k + "\r",
	}, "\n")
	set, err := allowedsigners.Parse(strings.NewReader(file))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	es := set.Entries()
	if len(es) != 6 || set.Len() != 6 {
		t.Fatalf("entries: got %d; want 6", len(es))
	}
	if es[0].Line != 4 || !slices.Equal(es[0].Principals, []string{"alice@example.com"}) {
		t.Errorf("entry 0: got line %d principals %v; want 4 [alice@example.com]", es[0].Line, es[0].Principals)
	}
	if !slices.Equal(es[1].Principals, []string{"bob@example.com", "carol@example.com"}) || es[1].Comment != "a comment with  spaces" {
		t.Errorf("entry 1: got %v %q", es[1].Principals, es[1].Comment)
	}
	if !slices.Equal(es[2].Principals, []string{"dave smith@example.com"}) {
		t.Errorf("quoted principals: got %v; want [dave smith@example.com]", es[2].Principals)
	}
	if !es[3].CertAuthority || !es[3].HasNamespaces || es[3].Namespaces != "steward-op@steward,file" {
		t.Errorf("options: got CA=%v ns=%q; want true, steward-op@steward,file", es[3].CertAuthority, es[3].Namespaces)
	}
	wantAfter := time.Date(2026, 1, 1, 0, 0, 0, 0, time.Local)
	wantBefore := time.Date(2027, 1, 1, 12, 30, 0, 0, time.UTC)
	if !es[4].ValidAfter.Equal(wantAfter) || !es[4].ValidBefore.Equal(wantBefore) {
		t.Errorf("validity: got %v..%v; want %v..%v", es[4].ValidAfter, es[4].ValidBefore, wantAfter, wantBefore)
	}
	if !slices.Equal(es[5].Principals, []string{"gina@example.com"}) {
		t.Errorf("tab-separated line: got %v", es[5].Principals)
	}
}

func TestParseErrors(t *testing.T) {
	_, k := newKey(t)
	small := "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQC7" + strings.Repeat("A", 168)
	tests := []struct {
		name, line, wantSub string
	}{
		{"principals only", "alice@example.com", "missing key"},
		{"no base64", "alice@example.com ssh-ed25519", "missing key type or base64"},
		{"bad base64", "alice@example.com ssh-ed25519 !!!!", "key"},
		{"unknown option", "alice@example.com no-touch-required " + k, `unknown option "no-touch-required"`},
		{"unquoted option value", "alice@example.com namespaces=file " + k, "double quotes"},
		{"valid-after garbage", `alice@example.com valid-after="2026" ` + k, "valid-after"},
		{"valid-before before valid-after", `alice@example.com valid-after="20270101",valid-before="20260101" ` + k, "not after"},
		{"duplicate option", `alice@example.com cert-authority,cert-authority ` + k, "twice"},
		{"unterminated quote", `"alice@example.com ` + k, "quote"},
		{"empty principal", `alice@example.com,,bob ` + k, "empty pattern"},
		{"dss key", "alice@example.com ssh-dss AAAAB3NzaC1kc3MAAACBAP", "unsupported key type"},
		{"type mismatch", "alice@example.com ecdsa-sha2-nistp256 " + strings.Fields(k)[1], "key"},
		{"cert-authority with value", `alice@example.com cert-authority="yes" ` + k, "takes no value"},
		{"short rsa", "alice@example.com " + small, "key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := allowedsigners.Parse(strings.NewReader("# first\n\n" + tt.line + "\n"))
			if err == nil {
				t.Fatalf("got nil error; want one containing %q", tt.wantSub)
			}
			if !strings.Contains(err.Error(), "line 3") || !strings.Contains(err.Error(), tt.wantSub) {
				t.Fatalf("got %q; want it to name line 3 and contain %q", err, tt.wantSub)
			}
		})
	}
}

func TestMatchList(t *testing.T) {
	tests := []struct {
		s       string
		pattern string
		want    bool
	}{
		{"alice@example.com", "alice@example.com", true},
		{"alice@example.com", "*@example.com", true},
		{"alice@example.com", "*@example.org", false},
		{"alice@example.com", "?lice@example.com", true},
		{"alice@example.com", "??lice@example.com", false},
		{"alice@example.com", "*", true},
		{"eve@example.com", "*@example.com,!eve@example.com", false},
		{"eve@example.com", "!eve@example.com,*@example.com", false},
		{"eve@example.com", "!bob@example.com", false},
		{"a", "*a*a*a*a*a*a*b", false},
		{"", "*", true},
		{"", "?", false},
		{"steward-op@steward", "steward-*", true},
		{"Alice", "alice", false},
	}
	for _, tt := range tests {
		t.Run(tt.s+" ~ "+tt.pattern, func(t *testing.T) {
			if got := allowedsigners.MatchList(tt.s, strings.Split(tt.pattern, ",")); got != tt.want {
				t.Fatalf("got %v; want %v", got, tt.want)
			}
		})
	}
}

func TestFind(t *testing.T) {
	alice, ak := newKey(t)
	bob, bk := newKey(t)
	_, ck := newKey(t)
	ca, cak := newKey(t)
	mallory, _ := newKey(t)
	file := strings.Join([]string{
		"alice@example.com,!x@example.com " + ak,
		`alice-again@example.com namespaces="steward-*" ` + ak,
		`bob@example.com namespaces="file" ` + bk,
		`carol@example.com valid-after="20260101000000Z",valid-before="20260201000000Z" ` + ck,
		`*@example.com,!mallory@example.com cert-authority,namespaces="steward-op@steward" ` + cak,
	}, "\n")
	set, err := allowedsigners.Parse(strings.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	_, cpub := set.Entries()[3].Key, set.Entries()[3].Key
	at := time.Date(2026, 1, 15, 0, 0, 0, 0, time.UTC)
	cert := func(principals []string, typ uint32, after, before time.Time, opts map[string]string) *ssh.Certificate {
		c := &ssh.Certificate{Key: mallory.PublicKey(), CertType: typ, ValidPrincipals: principals,
			ValidAfter: uint64(after.Unix()), ValidBefore: uint64(before.Unix()), Permissions: ssh.Permissions{CriticalOptions: opts}}
		if err := c.SignCert(rand.Reader, ca); err != nil {
			t.Fatal(err)
		}
		return c
	}
	selfSigned := &ssh.Certificate{Key: mallory.PublicKey(), CertType: ssh.UserCert, ValidPrincipals: []string{"alice@example.com"}, ValidBefore: ssh.CertTimeInfinity}
	selfSigned.SignCert(rand.Reader, alice)
	good := cert([]string{"erin@example.com", "frank@example.org"}, ssh.UserCert, at.Add(-time.Hour), at.Add(time.Hour), nil)
	tampered := *good
	tampered.ValidPrincipals = []string{"erin@example.com", "root@example.com"}
	tests := []struct {
		name    string
		pub     ssh.PublicKey
		ns      string
		at      time.Time
		want    []string
		wantErr error
	}{
		{"plain key, two lines", alice.PublicKey(), "steward-op@steward", at, []string{"alice@example.com", "alice-again@example.com"}, nil},
		{"plain key, namespace limits to one line", alice.PublicKey(), "git", at, []string{"alice@example.com"}, nil},
		{"namespace refused", bob.PublicKey(), "steward-op@steward", at, nil, allowedsigners.ErrNamespace},
		{"namespace allowed", bob.PublicKey(), "file", at, []string{"bob@example.com"}, nil},
		{"valid-after inclusive", cpub, "x", time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), []string{"carol@example.com"}, nil},
		{"before valid-after", cpub, "x", time.Date(2025, 12, 31, 23, 59, 59, 0, time.UTC), nil, allowedsigners.ErrNotYetValid},
		{"valid-before inclusive", cpub, "x", time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC), []string{"carol@example.com"}, nil},
		{"after valid-before", cpub, "x", time.Date(2026, 2, 1, 0, 0, 1, 0, time.UTC), nil, allowedsigners.ErrExpired},
		{"unknown key", mallory.PublicKey(), "x", at, nil, allowedsigners.ErrUnknownKey},
		{"CA key used directly is not a plain signer", ca.PublicKey(), "steward-op@steward", at, nil, allowedsigners.ErrUnknownKey},
		{"certificate", good, "steward-op@steward", at, []string{"erin@example.com"}, nil},
		{"certificate foreign namespace", good, "file", at, nil, allowedsigners.ErrNamespace},
		{"certificate expired", good, "steward-op@steward", at.Add(time.Hour), nil, allowedsigners.ErrCertificate},
		{"certificate not yet valid", good, "steward-op@steward", at.Add(-2 * time.Hour), nil, allowedsigners.ErrCertificate},
		{"certificate principal negated", cert([]string{"mallory@example.com"}, ssh.UserCert, at.Add(-time.Hour), at.Add(time.Hour), nil), "steward-op@steward", at, nil, allowedsigners.ErrCertificate},
		{"host certificate", cert([]string{"erin@example.com"}, ssh.HostCert, at.Add(-time.Hour), at.Add(time.Hour), nil), "steward-op@steward", at, nil, allowedsigners.ErrCertificate},
		{"certificate with critical option", cert([]string{"erin@example.com"}, ssh.UserCert, at.Add(-time.Hour), at.Add(time.Hour), map[string]string{"force-command": "true"}), "steward-op@steward", at, nil, allowedsigners.ErrCertificate},
		{"certificate tampered after signing", &tampered, "steward-op@steward", at, nil, allowedsigners.ErrCertificate},
		{"certificate from a non-CA line", selfSigned, "steward-op@steward", at, nil, allowedsigners.ErrUnknownKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := set.Find(tt.pub, tt.ns, tt.at)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("got %v, %v; want error %v", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("got %v, %v; want %v", got, err, tt.want)
			}
		})
	}
	var empty *allowedsigners.Set
	if _, err := empty.Find(alice.PublicKey(), "x", at); !errors.Is(err, allowedsigners.ErrUnknownKey) {
		t.Errorf("nil set: got %v; want ErrUnknownKey", err)
	}
}

// TestCrossCheckOpenSSH asks ssh-keygen which principals a signature's key
// stands for (find-principals: validity, principals) and whether it
// verifies in our namespace (verify: namespaces), and compares with Find.
func TestCrossCheckOpenSSH(t *testing.T) {
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		t.Fatalf("ssh-keygen not found (install openssh-client): %v", err)
	}
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "k")
	if out, err := exec.Command("ssh-keygen", "-q", "-N", "", "-t", "ed25519", "-f", keyPath).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v: %s", err, out)
	}
	pubText, _ := os.ReadFile(keyPath + ".pub")
	k := strings.Join(strings.Fields(string(pubText))[:2], " ")
	msg := filepath.Join(dir, "m")
	os.WriteFile(msg, []byte("hello\n"), 0o600)
	const ns = "steward-op@steward"
	if out, err := exec.Command("ssh-keygen", "-q", "-Y", "sign", "-n", ns, "-f", keyPath, msg).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen -Y sign: %v: %s", err, out)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey(pubText)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	lines := []string{
		"a@example.com",
		"a@example.com,b*@example.org,!c@example.com",
		`"x y@example.com,z@example.com"`,
		`p@example.com valid-before="20200101Z"`,
		`p@example.com valid-after="20990101"`,
		`p@example.com valid-after="20200101",valid-before="20990101Z"`,
		`p@example.com VALID-AFTER="202001010000Z"`,
		`p@example.com namespaces="file"`,
		`p@example.com namespaces="steward-*,!nope"`,
		`p@example.com namespaces="*,!steward-op@steward"`,
		`p@example.com cert-authority`,
	}
	for _, l := range lines {
		t.Run(l, func(t *testing.T) {
			fields := strings.SplitN(l, " ", 2)
			line := fields[0] + " "
			if len(fields) == 2 {
				line += fields[1] + " "
			}
			line += k + "\n"
			path := filepath.Join(t.TempDir(), "allowed")
			os.WriteFile(path, []byte(line), 0o600)
			set, err := allowedsigners.ParseFile(path)
			if err != nil {
				t.Fatalf("ParseFile(%q): %v", line, err)
			}
			got, findErr := set.Find(pub, ns, now)

			out, err := exec.Command("ssh-keygen", "-Y", "find-principals", "-s", msg+".sig", "-f", path).Output()
			var theirs []string
			if err == nil {
				for _, p := range strings.Split(strings.TrimSpace(string(out)), "\n") {
					if p != "" && !strings.HasPrefix(p, "!") {
						theirs = append(theirs, p)
					}
				}
			}
			// find-principals ignores namespaces; verify honours them.
			verifies := false
			if len(theirs) > 0 {
				cmd := exec.Command("ssh-keygen", "-Y", "verify", "-n", ns, "-I", theirs[0], "-f", path, "-s", msg+".sig")
				cmd.Stdin, _ = os.Open(msg)
				verifies = cmd.Run() == nil
			}
			if !verifies {
				theirs = nil
			}
			if (findErr == nil) != verifies || !slices.Equal(got, theirs) {
				t.Fatalf("steward: %v, %v; OpenSSH: %v (verifies %v)", got, findErr, theirs, verifies)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	_, k := newKey(f)
	f.Add("alice@example.com " + k + "\n")
	f.Add(`*@example.com,!eve@example.com cert-authority,namespaces="steward-op@steward,file" ` + k + " c\n")
	f.Add(`"a b" valid-after="20260101",valid-before="20270101123000Z" ` + k + "\n# c\n\n")
	f.Add(`x namespaces="` + "\n")
	f.Fuzz(func(t *testing.T, s string) {
		set, err := allowedsigners.Parse(strings.NewReader(s))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "allowedsigners: ") {
				t.Fatalf("error %q lacks the package prefix", err)
			}
			return
		}
		for _, e := range set.Entries() {
			if e.Key == nil || len(e.Principals) == 0 || e.Line < 1 {
				t.Fatalf("accepted entry without key, principals or line: %+v", e)
			}
			set.Find(e.Key, "steward-op@steward", time.Unix(1e9, 0))
		}
	})
}
