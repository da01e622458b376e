package signedop_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/signedop"
	"github.com/steward-pve/steward/internal/signedop/signedoptest"
	"golang.org/x/crypto/ssh"
)

func TestRejectionMatrix(t *testing.T) {
	cases := signedoptest.Cases()
	if len(cases) < 25 {
		t.Fatalf("matrix has %d cases; want at least 25", len(cases))
	}
	codes := map[string]bool{}
	for _, c := range cases {
		codes[c.Code] = true
		t.Run(c.Name, func(t *testing.T) {
			e := signedoptest.NewEnv(t)
			a := c.Build(e)
			before := e.Nonces().Len()
			auth, err := e.Authorize(a)
			if err == nil {
				t.Fatalf("Authorize: got authorization by %v; want rejection %q", auth.Signers, c.Code)
			}
			var r *signedop.Rejection
			if !errors.As(err, &r) {
				t.Fatalf("Authorize error %v (%T); want *signedop.Rejection", err, err)
			}
			if r.Code != c.Code {
				t.Fatalf("rejection code: got %q (%s); want %q", r.Code, r.Reason, c.Code)
			}
			if r.Reason == "" {
				t.Fatalf("rejection %q has an empty reason", r.Code)
			}
			if got := e.Nonces().Len(); got != before {
				t.Fatalf("nonces held after rejection: got %d; want %d (a rejected job must consume nothing)", got, before)
			}
		})
	}
	// Every code a verifier can reach for a well-configured agent is in the matrix.
	for _, code := range []string{
		signedop.CodeNoSignersConfigured, signedop.CodeBadPayload, signedop.CodeUnsupportedVersion,
		signedop.CodeWrongOp, signedop.CodeWrongHost, signedop.CodeWrongVMID, signedop.CodeWrongKind,
		signedop.CodeWrongParams, signedop.CodeStaleDigest, signedop.CodeNotYetValid, signedop.CodeExpired,
		signedop.CodeTTLTooLong, signedop.CodeNoSignatures, signedop.CodeTooManySignatures,
		signedop.CodeBadSignature, signedop.CodeUnsupportedSigVersion, signedop.CodeWrongNamespace,
		signedop.CodeBadHash, signedop.CodeLegacyRSASHA1, signedop.CodeNoUserPresence,
		signedop.CodeUnknownSigner, signedop.CodeSignerNotYetValid, signedop.CodeSignerExpired,
		signedop.CodeBadCertificate, signedop.CodeInsufficientSigners, signedop.CodeReplayed,
		signedop.CodeNonceStoreFull, signedop.CodeUnknownOp, signedop.CodeMissingDigest,
	} {
		if !codes[code] {
			t.Errorf("rejection code %q has no matrix case", code)
		}
	}
}

func TestAuthorizeAccepts(t *testing.T) {
	tests := []struct {
		name      string
		policy    *signedop.Policy
		signers   func(e *signedoptest.Env) []ssh.Signer
		wantPrins []string
	}{
		{"ed25519", nil, func(e *signedoptest.Env) []ssh.Signer { return []ssh.Signer{e.Alice.Signer} }, []string{"alice@example.com"}},
		{"ecdsa p256 with namespaces option", nil, func(e *signedoptest.Env) []ssh.Signer { return []ssh.Signer{e.Bob.Signer} }, []string{"bob@example.com"}},
		{"rsa sha2-512", nil, func(e *signedoptest.Env) []ssh.Signer { return []ssh.Signer{e.Carol.Signer} }, []string{"carol@example.com"}},
		{"fido sk-ed25519 with user presence", nil, func(e *signedoptest.Env) []ssh.Signer { return []ssh.Signer{e.Dana} }, []string{"dana@example.com"}},
		{"certificate from cert-authority", nil, func(e *signedoptest.Env) []ssh.Signer {
			return []ssh.Signer{signedoptest.NewCert(t, e.CA, e.Mallory, []string{"erin@example.com"}, e.Now.Add(-time.Hour), e.Now.Add(time.Hour))}
		}, []string{"erin@example.com"}},
		{"two of operator", &signedop.Policy{Require: map[string]signedop.Requirement{"destroy": {Role: "operator", Count: 2}}},
			func(e *signedoptest.Env) []ssh.Signer { return []ssh.Signer{e.Alice.Signer, e.Bob.Signer} }, []string{"alice@example.com", "bob@example.com"}},
		{"role from policy", &signedop.Policy{
			Roles:   map[string][]string{"alice@example.com": {"viewer"}, "bob@example.com": {"admin", "operator"}},
			Require: map[string]signedop.Requirement{"*": {Role: "admin", Count: 1}},
		}, func(e *signedoptest.Env) []ssh.Signer { return []ssh.Signer{e.Alice.Signer, e.Bob.Signer} }, []string{"alice@example.com", "bob@example.com"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := signedoptest.NewEnv(t)
			if tt.policy != nil {
				e.Policy = *tt.policy
			}
			auth, err := e.Authorize(e.Attempt(e.Job(nil, tt.signers(e)...)))
			if err != nil {
				t.Fatalf("Authorize: got %v; want authorization", err)
			}
			var got []string
			for _, s := range auth.Signers {
				got = append(got, s.Principal)
				if s.Fingerprint == "" || len(s.Roles) == 0 {
					t.Errorf("signer %+v: want fingerprint and roles", s)
				}
			}
			if !slices.Equal(got, tt.wantPrins) {
				t.Fatalf("signers: got %v; want %v", got, tt.wantPrins)
			}
			if auth.Payload.Op != e.Action.Op || auth.Nonce != auth.Payload.Nonce {
				t.Fatalf("authorization payload %+v does not describe the action", auth.Payload)
			}
		})
	}
}

func TestSkewTolerated(t *testing.T) {
	for _, d := range []time.Duration{-6 * time.Minute, time.Hour + 3*time.Minute} {
		e := signedoptest.NewEnv(t)
		a := e.Attempt(e.Job(nil, e.Alice.Signer))
		e.Now = e.Now.Add(d)
		if _, err := e.Authorize(a); err != nil {
			t.Errorf("now %+v from signing: got %v; want accepted within the 5m skew", d, err)
		}
	}
}

func TestRSASHA256AndOtherCurves(t *testing.T) {
	e := signedoptest.NewEnv(t)
	b := e.NewPayload(nil).Canonical()
	sigs := map[string][]byte{
		"rsa-sha2-256": signedoptest.RawSign(t, b, e.Carol.Signer, signedoptest.SignOpts{RSAAlgorithm: ssh.KeyAlgoRSASHA256, Hash: "sha256"}),
	}
	p384 := signedoptest.NewKey(t, signedoptest.ECDSAP384)
	p521 := signedoptest.NewKey(t, signedoptest.ECDSAP521)
	sk := signedoptest.NewSKECDSA(t)
	sigs["p384"] = e.Sign(b, p384.Signer)
	sigs["p521"] = e.Sign(b, p521.Signer)
	sigs["sk-ecdsa"] = e.Sign(b, sk)
	for name, sig := range sigs {
		t.Run(name, func(t *testing.T) {
			s, err := signedop.ParseSignature(sig)
			if err != nil {
				t.Fatal(err)
			}
			if err := signedop.VerifySignature(s, b); err != nil {
				t.Fatalf("VerifySignature: got %v; want nil", err)
			}
			tampered := append([]byte(nil), b...)
			tampered[10] ^= 1
			if err := signedop.VerifySignature(s, tampered); signedop.RejectionCode(err) != signedop.CodeBadSignature {
				t.Fatalf("VerifySignature over tampered payload: got %v; want bad_signature", err)
			}
		})
	}
	sk.Flags = 0
	s, err := signedop.ParseSignature(e.Sign(b, sk))
	if err != nil {
		t.Fatal(err)
	}
	if err := signedop.VerifySignature(s, b); signedop.RejectionCode(err) != signedop.CodeNoUserPresence {
		t.Fatalf("sk-ecdsa without user presence: got %v; want no_user_presence", err)
	}
}

func TestCheckDoesNotConsumeNonce(t *testing.T) {
	e := signedoptest.NewEnv(t)
	a := e.Attempt(e.Job(nil, e.Alice.Signer))
	v := e.Verifier()
	for range 2 {
		if _, err := v.Check(a.Job, a.Host, a.Action, a.CurrentDigest); err != nil {
			t.Fatalf("Check: got %v; want nil", err)
		}
	}
	if _, err := v.Authorize(a.Job, a.Host, a.Action, a.CurrentDigest); err != nil {
		t.Fatalf("Authorize after Check: got %v; want nil", err)
	}
}

func TestNilNonceStoreRejects(t *testing.T) {
	e := signedoptest.NewEnv(t)
	v := e.Verifier()
	v.Nonces = nil
	a := e.Attempt(e.Job(nil, e.Alice.Signer))
	if _, err := v.Authorize(a.Job, a.Host, a.Action, a.CurrentDigest); signedop.RejectionCode(err) != signedop.CodeNonceStoreError {
		t.Fatalf("Authorize without nonce store: got %v; want %s", err, signedop.CodeNonceStoreError)
	}
}
