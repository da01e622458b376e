package signedop

import (
	"bytes"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/hiddeco/sshsig"
	"golang.org/x/crypto/ssh"
)

// MaxSignatureSize bounds one armored signature.
const MaxSignatureSize = 64 * 1024

const (
	armorBegin = "-----BEGIN SSH SIGNATURE-----"
	armorEnd   = "-----END SSH SIGNATURE-----"
	sigMagic   = "SSHSIG"
)

// Signature is a parsed SSHSIG signature (OpenSSH PROTOCOL.sshsig). Parsing
// checks structure only; VerifySignature checks what it says.
type Signature struct {
	PublicKey     ssh.PublicKey // the signing key; may be an *ssh.Certificate
	Namespace     string
	HashAlgorithm string
	Sig           *ssh.Signature
}

// ParseSignature parses one armored SSHSIG signature ("-----BEGIN SSH
// SIGNATURE-----" ... "-----END SSH SIGNATURE-----", surrounding whitespace
// allowed, nothing else). Errors are *Rejection with code "bad_signature"
// (or "unsupported_signature_version").
func ParseSignature(armored []byte) (*Signature, error) {
	if len(armored) > MaxSignatureSize {
		return nil, reject(CodeBadSignature, "signature is %d bytes; at most %d allowed", len(armored), MaxSignatureSize)
	}
	text := strings.TrimSpace(string(armored))
	body, ok := strings.CutPrefix(text, armorBegin)
	if !ok {
		return nil, reject(CodeBadSignature, "not an armored SSH signature: want a %s line first", armorBegin)
	}
	body, ok = strings.CutSuffix(body, armorEnd)
	if !ok {
		return nil, reject(CodeBadSignature, "armored SSH signature does not end with %s", armorEnd)
	}
	var b64 strings.Builder
	for _, line := range strings.Split(body, "\n") {
		line = strings.TrimRight(line, "\r")
		if strings.ContainsAny(line, " \t:-") {
			return nil, reject(CodeBadSignature, "armored SSH signature has a non-base64 line")
		}
		b64.WriteString(line)
	}
	blob, err := base64.StdEncoding.Strict().DecodeString(b64.String())
	if err != nil {
		return nil, reject(CodeBadSignature, "armored SSH signature: bad base64: %v", err)
	}
	return parseBlob(blob)
}

type wire struct{ b []byte }

func (w *wire) u32() (uint32, bool) {
	if len(w.b) < 4 {
		return 0, false
	}
	v := binary.BigEndian.Uint32(w.b)
	w.b = w.b[4:]
	return v, true
}

func (w *wire) str() ([]byte, bool) {
	n, ok := w.u32()
	if !ok || uint64(n) > uint64(len(w.b)) {
		return nil, false
	}
	s := w.b[:n]
	w.b = w.b[n:]
	return s, true
}

func parseBlob(blob []byte) (*Signature, error) {
	if !bytes.HasPrefix(blob, []byte(sigMagic)) {
		return nil, reject(CodeBadSignature, "SSH signature lacks the SSHSIG preamble")
	}
	w := &wire{blob[len(sigMagic):]}
	ver, ok := w.u32()
	if !ok {
		return nil, reject(CodeBadSignature, "SSH signature truncated")
	}
	if ver != 1 {
		return nil, reject(CodeUnsupportedSigVersion, "SSH signature version %d; only version 1 is supported", ver)
	}
	var fields [5][]byte
	for i := range fields {
		if fields[i], ok = w.str(); !ok {
			return nil, reject(CodeBadSignature, "SSH signature truncated")
		}
	}
	if len(w.b) != 0 {
		return nil, reject(CodeBadSignature, "SSH signature has %d trailing bytes", len(w.b))
	}
	pub, err := ssh.ParsePublicKey(fields[0])
	if err != nil {
		return nil, reject(CodeBadSignature, "SSH signature public key: %v", err)
	}
	var sig ssh.Signature
	if err := ssh.Unmarshal(fields[4], &sig); err != nil {
		return nil, reject(CodeBadSignature, "SSH signature: malformed signature field: %v", err)
	}
	return &Signature{
		PublicKey:     pub,
		Namespace:     string(fields[1]),
		HashAlgorithm: string(fields[3]),
		Sig:           &sig,
	}, nil
}

// Fingerprint returns the SHA256 fingerprint of the key that made s (the
// certificate's key for a certificate): the identity the verifier counts
// distinct signers by, so two signatures with one fingerprint never count
// twice toward a quorum.
func (s *Signature) Fingerprint() string { return ssh.FingerprintSHA256(plainKey(s.PublicKey)) }

// SignerFingerprint parses one armored signature and returns its
// Fingerprint. It checks structure only, not the signature.
func SignerFingerprint(armored []byte) (string, error) {
	s, err := ParseSignature(armored)
	if err != nil {
		return "", err
	}
	return s.Fingerprint(), nil
}

// plainKey returns the key that made the signature: the certificate's key
// for a certificate.
func plainKey(pub ssh.PublicKey) ssh.PublicKey {
	if c, ok := pub.(*ssh.Certificate); ok {
		return c.Key
	}
	return pub
}

// VerifySignature checks s over message: namespace exactly Namespace, hash
// sha256 or sha512, a modern signature algorithm (RSA only as rsa-sha2-256
// or rsa-sha2-512, never SHA-1 "ssh-rsa"), RSA keys of at least 2048 bits,
// the user-presence flag for FIDO (sk-) keys, and the signature itself. It
// says nothing about whether the key is trusted. Errors are *Rejection.
func VerifySignature(s *Signature, message []byte) error {
	switch s.Namespace {
	case Namespace:
	case "":
		return reject(CodeWrongNamespace, "signature has an empty namespace; sign with ssh-keygen -Y sign -n %s", Namespace)
	default:
		return reject(CodeWrongNamespace, "signature namespace is %q; steward accepts only %q (ssh-keygen -Y sign -n %s)", s.Namespace, Namespace, Namespace)
	}
	var digest []byte
	switch s.HashAlgorithm {
	case "sha256":
		h := sha256.Sum256(message)
		digest = h[:]
	case "sha512":
		h := sha512.Sum512(message)
		digest = h[:]
	default:
		return reject(CodeBadHash, "signature hash algorithm %q; want sha256 or sha512", s.HashAlgorithm)
	}
	key := plainKey(s.PublicKey)
	switch key.Type() {
	case ssh.KeyAlgoRSA:
		switch s.Sig.Format {
		case ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSASHA512:
		case ssh.KeyAlgoRSA:
			return reject(CodeLegacyRSASHA1, "RSA signature uses the legacy SHA-1 algorithm ssh-rsa; re-sign with a current OpenSSH (rsa-sha2-512)")
		default:
			return reject(CodeBadSignature, "signature algorithm %q does not fit an RSA key", s.Sig.Format)
		}
		if cp, ok := key.(ssh.CryptoPublicKey); ok {
			if rk, ok := cp.CryptoPublicKey().(*rsa.PublicKey); ok && rk.N.BitLen() < 2048 {
				return reject(CodeBadSignature, "RSA key of %d bits; at least 2048 required", rk.N.BitLen())
			}
		}
	case ssh.KeyAlgoSKED25519, ssh.KeyAlgoSKECDSA256:
		if s.Sig.Format != key.Type() {
			return reject(CodeBadSignature, "signature algorithm %q does not fit a %s key", s.Sig.Format, key.Type())
		}
		// PROTOCOL.u2f: the signature is followed by byte flags, uint32 counter.
		if len(s.Sig.Rest) != 5 {
			return reject(CodeBadSignature, "FIDO signature lacks its flags and counter")
		}
		if s.Sig.Rest[0]&0x01 == 0 {
			return reject(CodeNoUserPresence, "FIDO signature made without user presence (the key was not touched)")
		}
	case ssh.KeyAlgoED25519, ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521:
		if s.Sig.Format != key.Type() {
			return reject(CodeBadSignature, "signature algorithm %q does not fit a %s key", s.Sig.Format, key.Type())
		}
	default:
		return reject(CodeBadSignature, "key type %s is not accepted", key.Type())
	}
	if len(s.Sig.Rest) != 0 && !strings.HasPrefix(key.Type(), "sk-") {
		return reject(CodeBadSignature, "signature has trailing data")
	}
	// Signed data, PROTOCOL.sshsig: "SSHSIG" || string namespace ||
	// string reserved || string hash_algorithm || string H(message).
	signed := ssh.Marshal(struct {
		Namespace, Reserved, Hash string
		Digest                    []byte
	}{s.Namespace, "", s.HashAlgorithm, digest})
	signed = append([]byte(sigMagic), signed...)
	if err := s.PublicKey.Verify(signed, s.Sig); err != nil {
		return reject(CodeBadSignature, "signature by %s does not verify over this payload", ssh.FingerprintSHA256(key))
	}
	return nil
}

// Sign signs payload in-process with signer (e.g. a key loaded from a file
// or an ssh-agent signer), SHA-512, namespace Namespace; RSA keys sign with
// rsa-sha2-512. It returns the armored signature, as ssh-keygen -Y sign
// writes it.
func Sign(payload []byte, signer ssh.Signer) ([]byte, error) {
	sig, err := sshsig.Sign(bytes.NewReader(payload), signer, sshsig.HashSHA512, Namespace)
	if err != nil {
		return nil, fmt.Errorf("signedop: sign with %s: %w", ssh.FingerprintSHA256(signer.PublicKey()), err)
	}
	return sshsig.Armor(sig), nil
}
