package signedoptest

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/allowedsigners"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/nonce"
	"github.com/steward-pve/steward/internal/signedop"
	"golang.org/x/crypto/ssh"
)

// Env is a ready-made trust configuration for signed-operation tests: keys,
// an allowed_signers file, a policy, a nonce store and a destructive
// action with a payload that authorizes it. Fields may be changed before
// calling Verifier.
type Env struct {
	T    testing.TB
	Dir  string    // nonce store directory
	Now  time.Time // the verifier's clock
	Host string
	// Action is the gated action (destroy qemu 101 with purge) and
	// Current the guest's current config digest.
	Action  action.Action
	Current string

	Alice, Bob *Key      // listed operators (ed25519, ECDSA P-256)
	Carol      *Key      // listed operator (RSA 2048)
	Mallory    *Key      // not listed
	Expired    *Key      // listed with valid-before in the past
	Future     *Key      // listed with valid-after in the future
	FileOnly   *Key      // listed with namespaces="file"
	CA         *Key      // listed as cert-authority for *@example.com
	Dana       *SKSigner // listed FIDO sk-ssh-ed25519 key

	AllowedSigners string // allowed_signers file text
	Policy         signedop.Policy
	NonceMax       int // nonce.Options.Max; 0 is the default

	nonces *nonce.Store
}

// NewEnv builds an Env at a fixed time in a fresh t.TempDir.
func NewEnv(t testing.TB) *Env {
	t.Helper()
	e := &Env{
		T:        t,
		Dir:      t.TempDir(),
		Now:      time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC),
		Host:     "pve-a",
		Action:   action.Action{Op: action.Destroy, VMID: 101, Kind: guest.QEMU, Params: map[string]string{"purge": "1", "destroy-unreferenced-disks": "1"}, Digest: "3f6b1c0f8e2a4d5c9b7a6e5d4c3b2a1908f7e6d5"},
		Current:  "3f6b1c0f8e2a4d5c9b7a6e5d4c3b2a1908f7e6d5",
		Alice:    NewKey(t, Ed25519),
		Bob:      NewKey(t, ECDSAP256),
		Carol:    NewKeyN(t, RSA2048, 0),
		Mallory:  NewKey(t, Ed25519),
		Expired:  NewKey(t, Ed25519),
		Future:   NewKey(t, Ed25519),
		FileOnly: NewKey(t, Ed25519),
		CA:       NewKey(t, Ed25519),
		Dana:     NewSKEd25519(t),
	}
	e.AllowedSigners = strings.Join([]string{
		"# steward operators",
		"alice@example.com " + e.Alice.AuthorizedKey() + " alice",
		`bob@example.com namespaces="steward-op@steward" ` + e.Bob.AuthorizedKey(),
		"carol@example.com " + e.Carol.AuthorizedKey(),
		`old@example.com valid-before="20260101Z" ` + e.Expired.AuthorizedKey(),
		`new@example.com valid-after="20270101Z" ` + e.Future.AuthorizedKey(),
		`files@example.com namespaces="file" ` + e.FileOnly.AuthorizedKey(),
		`*@example.com,!mallory@example.com cert-authority ` + e.CA.AuthorizedKey(),
		"dana@example.com " + authorized(e.Dana.PublicKey()),
		"",
	}, "\n")
	return e
}

// Nonces returns the env's nonce store, opening it on first use.
func (e *Env) Nonces() *nonce.Store {
	e.T.Helper()
	if e.nonces == nil {
		s, err := nonce.Open(e.Dir, nonce.Options{Max: e.NonceMax, Now: func() time.Time { return e.Now }})
		if err != nil {
			e.T.Fatalf("signedoptest: open nonce store: %v", err)
		}
		e.nonces = s
		e.T.Cleanup(func() { s.Close() })
	}
	return e.nonces
}

// ReopenNonces closes the nonce store; the next Verifier reopens it from
// disk, as an agent restart would.
func (e *Env) ReopenNonces() {
	if e.nonces != nil {
		e.nonces.Close()
		e.nonces = nil
	}
}

// Verifier returns a verifier over the env's current configuration.
func (e *Env) Verifier() *signedop.Verifier {
	e.T.Helper()
	set, err := allowedsigners.Parse(strings.NewReader(e.AllowedSigners))
	if err != nil {
		e.T.Fatalf("signedoptest: allowed_signers: %v", err)
	}
	return &signedop.Verifier{Signers: set, Policy: e.Policy, Nonces: e.Nonces(), Now: func() time.Time { return e.Now }}
}

// NewPayload returns a payload authorizing e.Action on e.Host, valid from a
// minute before e.Now for an hour, after mod (if non-nil) changed it.
func (e *Env) NewPayload(mod func(*signedop.Payload)) signedop.Payload {
	e.T.Helper()
	p, err := signedop.NewPayload(e.Host, e.Action, e.Now.Add(-time.Minute), time.Hour, "test: destroy scratch VM")
	if err != nil {
		e.T.Fatalf("signedoptest: NewPayload: %v", err)
	}
	if mod != nil {
		mod(&p)
	}
	return p
}

// Sign signs payload with signer in-process, correctly.
func (e *Env) Sign(payload []byte, signer ssh.Signer) []byte {
	e.T.Helper()
	s, err := signedop.Sign(payload, signer)
	if err != nil {
		e.T.Fatalf("signedoptest: sign: %v", err)
	}
	return s
}

// Job returns a job for the payload (after mod) signed by signers.
func (e *Env) Job(mod func(*signedop.Payload), signers ...ssh.Signer) signedop.Job {
	e.T.Helper()
	b := e.NewPayload(mod).Canonical()
	j := signedop.Job{Payload: b}
	for _, s := range signers {
		j.Signatures = append(j.Signatures, e.Sign(b, s))
	}
	return j
}

// Attempt is one authorization attempt: a job presented for an action.
type Attempt struct {
	Job           signedop.Job
	Host          string
	Action        action.Action
	CurrentDigest string
}

// Attempt returns an attempt of job against the env's host, action and
// current digest.
func (e *Env) Attempt(job signedop.Job) Attempt {
	return Attempt{Job: job, Host: e.Host, Action: e.Action, CurrentDigest: e.Current}
}

// Authorize runs the attempt through e.Verifier().Authorize.
func (e *Env) Authorize(a Attempt) (signedop.Authorization, error) {
	return e.Verifier().Authorize(a.Job, a.Host, a.Action, a.CurrentDigest)
}

// MustAuthorize authorizes a and fails the test on rejection.
func (e *Env) MustAuthorize(a Attempt) signedop.Authorization {
	e.T.Helper()
	auth, err := e.Authorize(a)
	if err != nil {
		e.T.Fatalf("signedoptest: setup authorization failed: %v", err)
	}
	return auth
}

// Case is one row of the rejection matrix: Build prepares the env (it may
// change policy, allowed signers, clock, or run earlier authorizations)
// and returns the attempt that must be rejected with Code.
type Case struct {
	Name  string
	Code  string
	Build func(e *Env) Attempt
}

func setParam(k, v string) func(*signedop.Payload) {
	return func(p *signedop.Payload) {
		m := map[string]string{}
		for a, b := range p.Params {
			m[a] = b
		}
		if v == "\x00delete" {
			delete(m, k)
		} else {
			m[k] = v
		}
		p.Params = m
	}
}

// Cases returns the rejection matrix. Every case is independent given a
// fresh Env.
func Cases() []Case {
	single := func(mod func(*signedop.Payload)) func(e *Env) Attempt {
		return func(e *Env) Attempt { return e.Attempt(e.Job(mod, e.Alice.Signer)) }
	}
	rawPayload := func(b []byte) func(e *Env) Attempt {
		return func(e *Env) Attempt {
			return e.Attempt(signedop.Job{Payload: b, Signatures: [][]byte{e.Sign(b, e.Alice.Signer)}})
		}
	}
	withSig := func(f func(e *Env, payload []byte) []byte) func(e *Env) Attempt {
		return func(e *Env) Attempt {
			b := e.NewPayload(nil).Canonical()
			return e.Attempt(signedop.Job{Payload: b, Signatures: [][]byte{f(e, b)}})
		}
	}
	return []Case{
		{"no signers configured", signedop.CodeNoSignersConfigured, func(e *Env) Attempt {
			e.AllowedSigners = "# nobody yet\n"
			return single(nil)(e)
		}},
		{"payload not JSON", signedop.CodeBadPayload, rawPayload([]byte("destroy 101 please\n"))},
		{"payload not canonical (whitespace)", signedop.CodeBadPayload, func(e *Env) Attempt {
			b := e.NewPayload(nil).Canonical()
			b = bytes.Replace(b, []byte(`,"host":`), []byte(`, "host":`), 1)
			return rawPayload(b)(e)
		}},
		{"payload without trailing newline", signedop.CodeBadPayload, func(e *Env) Attempt {
			b := e.NewPayload(nil).Canonical()
			return rawPayload(b[:len(b)-1])(e)
		}},
		{"payload unknown field", signedop.CodeBadPayload, func(e *Env) Attempt {
			b := e.NewPayload(nil).Canonical()
			b = bytes.Replace(b, []byte(`{"digest":`), []byte(`{"admin":"yes","digest":`), 1)
			return rawPayload(b)(e)
		}},
		{"payload missing field", signedop.CodeBadPayload, func(e *Env) Attempt {
			b := e.NewPayload(nil).Canonical()
			i := bytes.Index(b, []byte(`,"reason":`))
			j := bytes.Index(b, []byte(`,"v":`))
			return rawPayload(append(append([]byte(nil), b[:i]...), b[j:]...))(e)
		}},
		{"payload unknown version", signedop.CodeUnsupportedVersion, func(e *Env) Attempt {
			b := e.NewPayload(nil).Canonical()
			return rawPayload(bytes.Replace(b, []byte(`"v":1`), []byte(`"v":2`), 1))(e)
		}},
		{"re-targeted op", signedop.CodeWrongOp, single(func(p *signedop.Payload) { p.Op = action.SnapshotDelete })},
		{"re-targeted host", signedop.CodeWrongHost, single(func(p *signedop.Payload) { p.Host = "pve-b" })},
		{"re-targeted vmid", signedop.CodeWrongVMID, single(func(p *signedop.Payload) { p.VMID = 102 })},
		{"re-targeted kind", signedop.CodeWrongKind, single(func(p *signedop.Payload) { p.Kind = guest.LXC })},
		{"re-parameterized: param added", signedop.CodeWrongParams, single(setParam("skiplock", "1"))},
		{"re-parameterized: param changed", signedop.CodeWrongParams, single(setParam("purge", "0"))},
		{"re-parameterized: param dropped", signedop.CodeWrongParams, single(setParam("purge", "\x00delete"))},
		{"digest differs from the action's", signedop.CodeStaleDigest, single(func(p *signedop.Payload) { p.Digest = "0000000000000000000000000000000000000000" })},
		{"guest changed since signing", signedop.CodeStaleDigest, func(e *Env) Attempt {
			a := single(nil)(e)
			a.CurrentDigest = "ffffffffffffffffffffffffffffffffffffffff"
			return a
		}},
		{"expired", signedop.CodeExpired, func(e *Env) Attempt {
			a := single(nil)(e)
			e.Now = e.Now.Add(time.Hour + 5*time.Minute) // expiry + skew
			return a
		}},
		{"not yet valid", signedop.CodeNotYetValid, func(e *Env) Attempt {
			a := single(nil)(e)
			e.Now = e.Now.Add(-time.Minute - 5*time.Minute - time.Second)
			return a
		}},
		{"unknown op", signedop.CodeUnknownOp, func(e *Env) Attempt {
			e.Action.Op = "format_disk"
			return single(nil)(e)
		}},
		{"destroy without a digest", signedop.CodeMissingDigest, func(e *Env) Attempt {
			e.Action.Digest = ""
			return single(nil)(e)
		}},
		{"validity window too long", signedop.CodeTTLTooLong, single(func(p *signedop.Payload) { p.Expires = p.NotBefore.Add(30 * 24 * time.Hour) })},
		{"no signatures", signedop.CodeNoSignatures, func(e *Env) Attempt { return e.Attempt(e.Job(nil)) }},
		{"too many signatures", signedop.CodeTooManySignatures, func(e *Env) Attempt {
			j := e.Job(nil, e.Alice.Signer)
			for len(j.Signatures) <= signedop.DefaultMaxSignatures {
				j.Signatures = append(j.Signatures, j.Signatures[0])
			}
			return e.Attempt(j)
		}},
		{"signature over another payload", signedop.CodeBadSignature, func(e *Env) Attempt {
			j := e.Job(nil, e.Alice.Signer)
			other := e.Job(func(p *signedop.Payload) { p.Reason = "something else" }, e.Alice.Signer)
			j.Signatures = other.Signatures
			return e.Attempt(j)
		}},
		{"signature not armored", signedop.CodeBadSignature, withSig(func(e *Env, b []byte) []byte { return []byte("not a signature") })},
		{"signature truncated", signedop.CodeBadSignature, withSig(func(e *Env, b []byte) []byte {
			s := e.Sign(b, e.Alice.Signer)
			return append(s[:60:60], []byte("\n-----END SSH SIGNATURE-----\n")...)
		})},
		{"signature version 2", signedop.CodeUnsupportedSigVersion, withSig(func(e *Env, b []byte) []byte {
			return RawSign(e.T, b, e.Alice.Signer, SignOpts{Version: 2})
		})},
		{"foreign namespace", signedop.CodeWrongNamespace, withSig(func(e *Env, b []byte) []byte {
			return RawSign(e.T, b, e.Alice.Signer, SignOpts{Namespace: "file"})
		})},
		{"empty namespace", signedop.CodeWrongNamespace, withSig(func(e *Env, b []byte) []byte {
			return RawSign(e.T, b, e.Alice.Signer, SignOpts{EmptyNamespace: true})
		})},
		{"allowed_signers restricts key to another namespace", signedop.CodeWrongNamespace, func(e *Env) Attempt { return e.Attempt(e.Job(nil, e.FileOnly.Signer)) }},
		{"unsupported hash sha1", signedop.CodeBadHash, withSig(func(e *Env, b []byte) []byte {
			return RawSign(e.T, b, e.Alice.Signer, SignOpts{Hash: "sha1"})
		})},
		{"legacy ssh-rsa SHA-1 signature", signedop.CodeLegacyRSASHA1, withSig(func(e *Env, b []byte) []byte {
			return RawSign(e.T, b, e.Carol.Signer, SignOpts{RSAAlgorithm: ssh.KeyAlgoRSA})
		})},
		{"FIDO signature without user presence", signedop.CodeNoUserPresence, func(e *Env) Attempt {
			e.Dana.Flags = 0x00
			return e.Attempt(e.Job(nil, e.Dana))
		}},
		{"key not in allowed_signers", signedop.CodeUnknownSigner, func(e *Env) Attempt { return e.Attempt(e.Job(nil, e.Mallory.Signer)) }},
		{"signer before valid-after", signedop.CodeSignerNotYetValid, func(e *Env) Attempt { return e.Attempt(e.Job(nil, e.Future.Signer)) }},
		{"signer after valid-before", signedop.CodeSignerExpired, func(e *Env) Attempt { return e.Attempt(e.Job(nil, e.Expired.Signer)) }},
		{"certificate expired", signedop.CodeBadCertificate, func(e *Env) Attempt {
			c := NewCert(e.T, e.CA, e.Mallory, []string{"erin@example.com"}, e.Now.Add(-48*time.Hour), e.Now.Add(-24*time.Hour))
			return e.Attempt(e.Job(nil, c))
		}},
		{"certificate principal excluded by allowed_signers", signedop.CodeBadCertificate, func(e *Env) Attempt {
			c := NewCert(e.T, e.CA, e.Mallory, []string{"mallory@example.com"}, e.Now.Add(-time.Hour), e.Now.Add(time.Hour))
			return e.Attempt(e.Job(nil, c))
		}},
		{"certificate from a CA not marked cert-authority", signedop.CodeUnknownSigner, func(e *Env) Attempt {
			c := NewCert(e.T, e.Alice, e.Mallory, []string{"alice@example.com"}, e.Now.Add(-time.Hour), e.Now.Add(time.Hour))
			return e.Attempt(e.Job(nil, c))
		}},
		{"two-of-operator policy with one signer", signedop.CodeInsufficientSigners, func(e *Env) Attempt {
			e.Policy = signedop.Policy{Require: map[string]signedop.Requirement{"destroy": {Role: "operator", Count: 2}}}
			return e.Attempt(e.Job(nil, e.Alice.Signer))
		}},
		{"one key signing twice counts once", signedop.CodeInsufficientSigners, func(e *Env) Attempt {
			e.Policy = signedop.Policy{Require: map[string]signedop.Requirement{"destroy": {Role: "operator", Count: 2}}}
			return e.Attempt(e.Job(nil, e.Alice.Signer, e.Alice.Signer))
		}},
		{"signer lacks the required role", signedop.CodeInsufficientSigners, func(e *Env) Attempt {
			e.Policy = signedop.Policy{
				Roles:   map[string][]string{"alice@example.com": {"viewer"}, "bob@example.com": {"operator"}},
				Require: map[string]signedop.Requirement{"*": {Role: "operator", Count: 1}},
			}
			return e.Attempt(e.Job(nil, e.Alice.Signer))
		}},
		{"replayed", signedop.CodeReplayed, func(e *Env) Attempt {
			a := e.Attempt(e.Job(nil, e.Alice.Signer))
			e.MustAuthorize(a)
			return a
		}},
		{"replayed after agent restart", signedop.CodeReplayed, func(e *Env) Attempt {
			a := e.Attempt(e.Job(nil, e.Alice.Signer))
			e.MustAuthorize(a)
			e.ReopenNonces()
			return a
		}},
		{"nonce store full", signedop.CodeNonceStoreFull, func(e *Env) Attempt {
			e.NonceMax = 1
			e.MustAuthorize(e.Attempt(e.Job(nil, e.Alice.Signer)))
			return e.Attempt(e.Job(nil, e.Alice.Signer))
		}},
	}
}
