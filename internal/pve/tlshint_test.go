package pve

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Issue 8 §6: a TLS verification failure says which flag fixes it.
func TestTLSFailureNamesTheFlag(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(srv.Close)
	// A CA file holding some other CA than the one that signed the
	// server's certificate.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "other CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	must(t, err)
	otherCA := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(otherCA, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		opts  Options
		wants []string
	}{
		{"system roots", Options{}, []string{"--pve-ca-file", "--pve-fingerprint"}},
		{"wrong CA file", Options{CAFile: otherCA}, []string{"--pve-ca-file " + otherCA, "--pve-fingerprint"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.URL, tt.opts.Token = srv.URL, testToken
			c, err := New(tt.opts)
			must(t, err)
			_, err = c.Version(t.Context())
			if err == nil {
				t.Fatal("got no error from an untrusted certificate")
			}
			for _, w := range tt.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("got %q; want it to name %s", err, w)
				}
			}
			if IsRetryable(err) {
				t.Error("a certificate failure is retryable; want not")
			}
		})
	}
}
