package simtest_test

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/steward-pve/steward/internal/sim"
	"github.com/steward-pve/steward/internal/sim/simtest"
)

// TestStartServesPinnedCertificate proves the served certificate is the one
// whose fingerprint GET /nodes publishes, so a client can pin it.
func TestStartServesPinnedCertificate(t *testing.T) {
	srv := simtest.Start(t, sim.Options{Guests: 3, Seed: 1})
	var seen string
	tr := &http.Transport{TLSClientConfig: &tls.Config{
		InsecureSkipVerify: true, // verification is the pin check below
		VerifyConnection: func(cs tls.ConnectionState) error {
			sum := sha256.Sum256(cs.PeerCertificates[0].Raw)
			parts := make([]string, len(sum))
			for i, b := range sum {
				parts[i] = fmt.Sprintf("%02X", b)
			}
			seen = strings.Join(parts, ":")
			if seen != srv.Fingerprint {
				return fmt.Errorf("fingerprint %s; want %s", seen, srv.Fingerprint)
			}
			return nil
		},
	}}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(t.Context(), "GET", srv.URL+"/api2/json/nodes", nil)
	req.Header.Set("Authorization", "PVEAPIToken="+srv.Token)
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Data []struct {
			Node           string `json:"node"`
			SSLFingerprint string `json:"ssl_fingerprint"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if len(body.Data) != 1 || body.Data[0].SSLFingerprint != seen || body.Data[0].Node != "pve" {
		t.Errorf("nodes: got %+v; want node pve with ssl_fingerprint %s", body.Data, seen)
	}
	if !strings.HasPrefix(srv.URL, "https://127.0.0.1:") {
		t.Errorf("URL %s; want https://127.0.0.1:PORT", srv.URL)
	}
	// The helper's own client trusts the certificate.
	req2, _ := http.NewRequestWithContext(t.Context(), "GET", srv.URL+"/api2/json/version", nil)
	req2.Header.Set("Authorization", "PVEAPIToken="+srv.Token)
	r2, err := srv.Client.Do(req2)
	if err != nil {
		t.Fatal(err)
	}
	r2.Body.Close()
	if r2.StatusCode != 200 {
		t.Errorf("version: got %d; want 200", r2.StatusCode)
	}
}
