// Package signedoptest builds keys, SSHSIG signatures (including malformed
// and legacy ones OpenSSH no longer makes), SSH certificates and software
// FIDO (sk-) signers for tests, and holds the signed-operation rejection
// matrix so the gate's tests can replay every case against their own
// harness. It is for tests only.
package signedoptest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"encoding/pem"
	"io"
	"math/big"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// KeyType names a key algorithm for NewKey.
type KeyType string

// Key types NewKey makes.
const (
	Ed25519   KeyType = "ed25519"
	ECDSAP256 KeyType = "ecdsa-p256"
	ECDSAP384 KeyType = "ecdsa-p384"
	ECDSAP521 KeyType = "ecdsa-p521"
	RSA2048   KeyType = "rsa-2048"
	RSA3072   KeyType = "rsa-3072"
)

// Key is a software key pair.
type Key struct {
	Type    KeyType
	Private crypto.Signer
	Signer  ssh.Signer
	Public  ssh.PublicKey
}

// AuthorizedKey returns the public key in "type base64" form, as it
// appears in allowed_signers.
func (k *Key) AuthorizedKey() string { return authorized(k.Public) }

func authorized(p ssh.PublicKey) string {
	b := ssh.MarshalAuthorizedKey(p)
	return string(b[:len(b)-1])
}

// Fingerprint returns the key's SHA256 fingerprint.
func (k *Key) Fingerprint() string { return ssh.FingerprintSHA256(k.Public) }

// PEM returns the private key in OpenSSH PEM form, unencrypted, for
// writing a key file ssh-keygen can use.
func (k *Key) PEM(t testing.TB) []byte {
	t.Helper()
	b, err := ssh.MarshalPrivateKey(k.Private, "")
	if err != nil {
		t.Fatalf("signedoptest: marshal private key: %v", err)
	}
	return pem.EncodeToMemory(b)
}

var rsaCache = struct {
	sync.Mutex
	m map[int][]*rsa.PrivateKey
}{m: map[int][]*rsa.PrivateKey{}}

// NewKey makes a fresh key of type typ. RSA keys are drawn from a small
// per-process pool (generation is slow); each call with the same pool
// index is not guaranteed distinct, so use NewKeyN to get distinct RSA keys.
func NewKey(t testing.TB, typ KeyType) *Key { return NewKeyN(t, typ, 0) }

// NewKeyN is NewKey; for RSA, keys with different n are distinct, with the
// same n identical within a process.
func NewKeyN(t testing.TB, typ KeyType, n int) *Key {
	t.Helper()
	var priv crypto.Signer
	var err error
	switch typ {
	case Ed25519:
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	case ECDSAP256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case ECDSAP384:
		priv, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case ECDSAP521:
		priv, err = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	case RSA2048, RSA3072:
		bits := 2048
		if typ == RSA3072 {
			bits = 3072
		}
		rsaCache.Lock()
		for len(rsaCache.m[bits]) <= n {
			k, gerr := rsa.GenerateKey(rand.Reader, bits)
			if gerr != nil {
				rsaCache.Unlock()
				t.Fatalf("signedoptest: generate RSA key: %v", gerr)
			}
			rsaCache.m[bits] = append(rsaCache.m[bits], k)
		}
		priv = rsaCache.m[bits][n]
		rsaCache.Unlock()
	default:
		t.Fatalf("signedoptest: unknown key type %q", typ)
	}
	if err != nil {
		t.Fatalf("signedoptest: generate %s key: %v", typ, err)
	}
	s, err := ssh.NewSignerFromSigner(priv)
	if err != nil {
		t.Fatalf("signedoptest: ssh signer: %v", err)
	}
	return &Key{Type: typ, Private: priv, Signer: s, Public: s.PublicKey()}
}

// SignOpts control RawSign. Zero fields mean the correct steward values.
type SignOpts struct {
	Namespace      string // "" means signedop.Namespace unless EmptyNamespace
	EmptyNamespace bool
	Hash           string // "sha256", "sha512" (default), or anything else (digested with SHA-1)
	RSAAlgorithm   string // for RSA keys: "rsa-sha2-512" (default), "rsa-sha2-256" or legacy "ssh-rsa"
	Version        uint32 // SSHSIG version; 0 means 1
}

// RawSign builds an armored SSHSIG signature of message by hand, so tests
// can make signatures OpenSSH refuses to make (empty namespace, SHA-1 RSA,
// unknown hash). The signature is cryptographically valid for what it
// claims.
func RawSign(t testing.TB, message []byte, signer ssh.Signer, opts SignOpts) []byte {
	t.Helper()
	ns := opts.Namespace
	if ns == "" && !opts.EmptyNamespace {
		ns = "steward-op@steward"
	}
	hash := opts.Hash
	if hash == "" {
		hash = "sha512"
	}
	var digest []byte
	switch hash {
	case "sha256":
		h := sha256.Sum256(message)
		digest = h[:]
	case "sha512":
		h := sha512.Sum512(message)
		digest = h[:]
	default:
		h := sha1.Sum(message)
		digest = h[:]
	}
	signed := append([]byte("SSHSIG"), ssh.Marshal(struct {
		Namespace, Reserved, Hash string
		Digest                    []byte
	}{ns, "", hash, digest})...)
	var sig *ssh.Signature
	var err error
	if signer.PublicKey().Type() == ssh.KeyAlgoRSA || isRSACert(signer.PublicKey()) {
		alg := opts.RSAAlgorithm
		if alg == "" {
			alg = ssh.KeyAlgoRSASHA512
		}
		sig, err = signer.(ssh.AlgorithmSigner).SignWithAlgorithm(rand.Reader, signed, alg)
	} else {
		sig, err = signer.Sign(rand.Reader, signed)
	}
	if err != nil {
		t.Fatalf("signedoptest: sign: %v", err)
	}
	ver := opts.Version
	if ver == 0 {
		ver = 1
	}
	blob := append([]byte("SSHSIG"), ssh.Marshal(struct {
		Version                   uint32
		PublicKey                 []byte
		Namespace, Reserved, Hash string
		Sig                       []byte
	}{ver, signer.PublicKey().Marshal(), ns, "", hash, ssh.Marshal(sig)})...)
	return pem.EncodeToMemory(&pem.Block{Type: "SSH SIGNATURE", Bytes: blob})
}

func isRSACert(p ssh.PublicKey) bool {
	c, ok := p.(*ssh.Certificate)
	return ok && c.Key.Type() == ssh.KeyAlgoRSA
}

// NewCert issues a user certificate for key signed by ca, with the given
// principals and validity, and returns a signer that signs with key and
// presents the certificate.
func NewCert(t testing.TB, ca, key *Key, principals []string, after, before time.Time) ssh.Signer {
	t.Helper()
	cert := &ssh.Certificate{
		Key:             key.Public,
		Serial:          1,
		CertType:        ssh.UserCert,
		KeyId:           "test",
		ValidPrincipals: principals,
		ValidAfter:      uint64(after.Unix()),
		ValidBefore:     uint64(before.Unix()),
	}
	if err := cert.SignCert(rand.Reader, ca.Signer); err != nil {
		t.Fatalf("signedoptest: sign certificate: %v", err)
	}
	s, err := ssh.NewCertSigner(cert, key.Signer)
	if err != nil {
		t.Fatalf("signedoptest: cert signer: %v", err)
	}
	return s
}

// SKSigner is a software stand-in for a FIDO security key
// (sk-ssh-ed25519@openssh.com or sk-ecdsa-sha2-nistp256@openssh.com),
// signing per OpenSSH PROTOCOL.u2f: the signature covers
// SHA256(application) || flags || counter || SHA256(data), and is followed
// on the wire by the flags byte and the counter. Flags 0x01 is user
// presence. It implements ssh.Signer.
type SKSigner struct {
	Flags   byte
	Counter uint32
	app     string
	ed      ed25519.PrivateKey
	ec      *ecdsa.PrivateKey
	pub     ssh.PublicKey
}

// NewSKEd25519 makes a software sk-ssh-ed25519 key with application "ssh:"
// and the user-presence flag set.
func NewSKEd25519(t testing.TB) *SKSigner {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return newSK(t, &SKSigner{Flags: 0x01, app: "ssh:", ed: priv}, ssh.Marshal(struct {
		Name        string
		Key         []byte
		Application string
	}{ssh.KeyAlgoSKED25519, pub, "ssh:"}))
}

// NewSKECDSA makes a software sk-ecdsa-sha2-nistp256 key with application
// "ssh:" and the user-presence flag set.
func NewSKECDSA(t testing.TB) *SKSigner {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	q := elliptic.Marshal(elliptic.P256(), priv.X, priv.Y) //nolint:staticcheck // wire format needs the uncompressed point
	return newSK(t, &SKSigner{Flags: 0x01, app: "ssh:", ec: priv}, ssh.Marshal(struct {
		Name        string
		Curve       string
		Q           []byte
		Application string
	}{ssh.KeyAlgoSKECDSA256, "nistp256", q, "ssh:"}))
}

func newSK(t testing.TB, s *SKSigner, wire []byte) *SKSigner {
	t.Helper()
	pub, err := ssh.ParsePublicKey(wire)
	if err != nil {
		t.Fatalf("signedoptest: parse sk public key: %v", err)
	}
	s.pub = pub
	return s
}

// PublicKey implements ssh.Signer.
func (s *SKSigner) PublicKey() ssh.PublicKey { return s.pub }

// Sign implements ssh.Signer, producing a PROTOCOL.u2f signature with the
// signer's current Flags and Counter.
func (s *SKSigner) Sign(_ io.Reader, data []byte) (*ssh.Signature, error) {
	app := sha256.Sum256([]byte(s.app))
	dig := sha256.Sum256(data)
	msg := make([]byte, 0, 32+1+4+32)
	msg = append(msg, app[:]...)
	msg = append(msg, s.Flags)
	msg = binary.BigEndian.AppendUint32(msg, s.Counter)
	msg = append(msg, dig[:]...)
	rest := binary.BigEndian.AppendUint32([]byte{s.Flags}, s.Counter)
	if s.ed != nil {
		return &ssh.Signature{Format: ssh.KeyAlgoSKED25519, Blob: ed25519.Sign(s.ed, msg), Rest: rest}, nil
	}
	h := sha256.Sum256(msg)
	r, ss, err := ecdsa.Sign(rand.Reader, s.ec, h[:])
	if err != nil {
		return nil, err
	}
	return &ssh.Signature{Format: ssh.KeyAlgoSKECDSA256, Blob: ssh.Marshal(struct{ R, S *big.Int }{r, ss}), Rest: rest}, nil
}
