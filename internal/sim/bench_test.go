package sim

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// benchGet runs GET url with parallel clients over TLS on loopback.
func benchGet(b *testing.B, h http.Handler, certDER []byte, cert tls.Certificate, tok string) {
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.EnableHTTP2 = false
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	defer srv.Close()
	c, _ := x509.ParseCertificate(certDER)
	pool := x509.NewCertPool()
	pool.AddCert(c)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, MaxIdleConnsPerHost: 64,
		DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	url := srv.URL + "/api2/json/nodes/pve/qemu/101/config"
	b.SetParallelism(4) // 4 × GOMAXPROCS clients
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest("GET", url, nil)
			req.Header.Set("Authorization", "PVEAPIToken="+tok)
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
}

// BenchmarkGetConfig measures simulator throughput for GET …/config;
// compare with BenchmarkBaselineHandler (same TLS loopback setup, trivial
// handler) from the same run.
func BenchmarkGetConfig(b *testing.B) {
	s, err := New(Options{Guests: 200, Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	benchGet(b, s.Handler(), s.Certificate(), s.cert, s.Token())
}

func BenchmarkBaselineHandler(b *testing.B) {
	s, err := New(Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	body := []byte(`{"data":{"cores":2,"memory":"2048","name":"vm101","digest":"0123456789abcdef0123456789abcdef01234567"}}`)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json;charset=UTF-8")
		_, _ = w.Write(body)
	})
	benchGet(b, h, s.Certificate(), s.cert, s.Token())
}
