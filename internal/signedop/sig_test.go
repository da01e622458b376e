package signedop_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"strings"
	"testing"

	"github.com/steward-pve/steward/internal/signedop"
	"github.com/steward-pve/steward/internal/signedop/signedoptest"
)

func TestParseSignatureArmor(t *testing.T) {
	k := signedoptest.NewKey(t, signedoptest.Ed25519)
	msg := []byte("m\n")
	good, err := signedop.Sign(msg, k.Signer)
	if err != nil {
		t.Fatal(err)
	}
	s := string(good)
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{"as made", s, true},
		{"surrounding whitespace", "\n\n  " + s + "\n  ", true},
		{"CRLF line ends", strings.ReplaceAll(s, "\n", "\r\n"), true},
		{"text before", "hello\n" + s, false},
		{"text after", s + "trailer\n", false},
		{"header line", strings.Replace(s, "-----\n", "-----\nComment: x\n", 1), false},
		{"wrong type", strings.ReplaceAll(s, "SSH SIGNATURE", "PGP SIGNATURE"), false},
		{"bad base64", strings.Replace(s, "-----\n", "-----\n!!!!\n", 1), false},
		{"empty", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sig, err := signedop.ParseSignature([]byte(tt.in))
			if tt.ok {
				if err != nil {
					t.Fatalf("got %v; want nil", err)
				}
				if err := signedop.VerifySignature(sig, msg); err != nil {
					t.Fatalf("VerifySignature: got %v; want nil", err)
				}
				return
			}
			if signedop.RejectionCode(err) != signedop.CodeBadSignature {
				t.Fatalf("got %v; want bad_signature", err)
			}
		})
	}
}

func FuzzParseSignature(f *testing.F) {
	msg := []byte("fuzz payload\n")
	for _, typ := range []signedoptest.KeyType{signedoptest.Ed25519, signedoptest.ECDSAP256, signedoptest.RSA2048} {
		k := signedoptest.NewKey(f, typ)
		s, err := signedop.Sign(msg, k.Signer)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(s)
	}
	sk := signedoptest.NewSKEd25519(f)
	s, err := signedop.Sign(msg, sk)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(s)
	f.Add(signedoptest.RawSign(f, msg, signedoptest.NewKey(f, signedoptest.Ed25519).Signer, signedoptest.SignOpts{Hash: "md5", EmptyNamespace: true}))
	f.Add([]byte("-----BEGIN SSH SIGNATURE-----\nU1NIU0lH\n-----END SSH SIGNATURE-----\n"))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, b []byte) {
		sig, err := signedop.ParseSignature(b)
		if err != nil {
			if signedop.RejectionCode(err) == "" {
				t.Fatalf("error %v is not a *Rejection", err)
			}
			return
		}
		if sig.PublicKey == nil || sig.Sig == nil {
			t.Fatal("parsed signature without key or signature")
		}
		err = signedop.VerifySignature(sig, msg)
		if err != nil && signedop.RejectionCode(err) == "" {
			t.Fatalf("verify error %v is not a *Rejection", err)
		}
	})
}

// BenchmarkVerify measures full SSHSIG verification (parse + verify) per
// key type; compare with BenchmarkBaselineEd25519Verify from the same run.
func BenchmarkVerify(b *testing.B) {
	msg := bytes.Repeat([]byte("x"), 400)
	for _, typ := range []signedoptest.KeyType{signedoptest.Ed25519, signedoptest.ECDSAP256, signedoptest.RSA3072} {
		k := signedoptest.NewKey(b, typ)
		armored, err := signedop.Sign(msg, k.Signer)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(string(typ), func(b *testing.B) {
			for b.Loop() {
				sig, err := signedop.ParseSignature(armored)
				if err != nil {
					b.Fatal(err)
				}
				if err := signedop.VerifySignature(sig, msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkBaselineEd25519Verify(b *testing.B) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	msg := bytes.Repeat([]byte("x"), 400)
	sig := ed25519.Sign(priv, msg)
	for b.Loop() {
		if !ed25519.Verify(pub, msg, sig) {
			b.Fatal("verify failed")
		}
	}
}

func BenchmarkAuthorize(b *testing.B) {
	e := signedoptest.NewEnv(b)
	a := e.Attempt(e.Job(nil, e.Alice.Signer))
	v := e.Verifier()
	for b.Loop() {
		if _, err := v.Check(a.Job, a.Host, a.Action, a.CurrentDigest); err != nil {
			b.Fatal(err)
		}
	}
}
