package hub

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/wire"
)

// newServedEnv is newEnvOpt served by HTTPServer on a loopback listener
// (with TLS when cert is not nil) instead of httptest's bare server, so
// that the connection limits apply.
func newServedEnv(t *testing.T, opt Options, cert *tls.Certificate) *env {
	t.Helper()
	e := newUnservedEnv(t, opt)
	h := e.hub
	srv := h.HTTPServer(cert)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	if cert != nil {
		ln = tls.NewListener(ln, srv.TLSConfig)
		url = "https://" + ln.Addr().String()
	}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	t.Cleanup(func() { h.Shutdown(); srv.Close(); <-done; h.Close() })
	e.url = url
	return e
}

// failsafe bounds a test's read of a connection the hub is expected to
// drop: a hub that never drops it fails the test instead of hanging it.
const failsafe = 30 * time.Second

// trickle writes msg to c once every 20ms until a write fails (the hub
// closed the connection) or stop is closed.
func trickle(c net.Conn, msg string, stop <-chan struct{}) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		if _, err := io.WriteString(c, msg); err != nil {
			return
		}
	}
}

// dropped reads c until the hub closes it and reports whether it did
// (false: the failsafe passed with the connection still open).
func dropped(t *testing.T, r io.Reader, c net.Conn) bool {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(failsafe))
	_, err := io.Copy(io.Discard, r)
	return !errors.Is(err, os.ErrDeadlineExceeded)
}

// TestSlowClients: a client that sends its headers or its body slowly
// (slowloris) is cut off, and the hub keeps answering everyone else
// meanwhile; a long-poll, which sends nothing for minutes, is not cut.
func TestSlowClients(t *testing.T) {
	const limit = 300 * time.Millisecond
	e := newServedEnv(t, Options{PollInterval: 30 * time.Second, ReadHeaderTimeout: limit, BodyTimeout: limit}, nil)
	tok := e.enroll("pve-a")
	e.must(200, "PUT", "/v1/hosts/pve-a/desired", e.opTok, []byte(docA), nil)
	addr := strings.TrimPrefix(e.url, "http://")
	dial := func(t *testing.T) net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	t.Run("slow headers", func(t *testing.T) {
		stop := make(chan struct{})
		defer close(stop)
		var conns []net.Conn
		for range 8 {
			c := dial(t)
			io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: hub\r\n")
			go trickle(c, "X-Slow: 1\r\n", stop)
			conns = append(conns, c)
		}
		// Everyone else is served while the slow ones are held.
		e.must(200, "GET", "/healthz", "", nil, nil)
		e.must(200, "POST", "/v1/agent/hosts/pve-a/report", tok, mustJSON(t, report("pve-a")), nil)
		for i, c := range conns {
			if !dropped(t, c, c) {
				t.Fatalf("slow-header connection %d: still open after %v; want it dropped after the header timeout", i, failsafe)
			}
		}
	})

	t.Run("slow body", func(t *testing.T) {
		stop := make(chan struct{})
		defer close(stop)
		c := dial(t)
		fmt.Fprintf(c, "POST /v1/agent/hosts/pve-a/heartbeat HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer %s\r\nContent-Length: 1000\r\n\r\n{\"hash\":\"", tok)
		go trickle(c, "a", stop)
		e.must(200, "GET", "/healthz", "", nil, nil)
		c.SetReadDeadline(time.Now().Add(failsafe))
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("slow body: reading the answer: %v; want 408", err)
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusRequestTimeout || errCode(t, b) != "body_timeout" {
			t.Fatalf("slow body: got %d %s; want 408 body_timeout", resp.StatusCode, b)
		}
		if !dropped(t, br, c) {
			t.Fatalf("slow body: the connection is still open after %v; want it closed after the 408", failsafe)
		}
	})

	t.Run("slow body to a handler that does not read it", func(t *testing.T) {
		// A refused token: the handler answers without reading the body,
		// and the server's drain of the rest must not wait forever.
		stop := make(chan struct{})
		defer close(stop)
		c := dial(t)
		io.WriteString(c, "POST /v1/agent/hosts/pve-a/heartbeat HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer stwh_nope\r\nContent-Length: 1000\r\n\r\n{")
		go trickle(c, "a", stop)
		c.SetReadDeadline(time.Now().Add(failsafe))
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("reading the answer: %v; want 401", err)
		}
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("got %d; want 401", resp.StatusCode)
		}
		if !dropped(t, br, c) {
			t.Fatalf("the connection is still open after %v; want it closed once the body timeout passed", failsafe)
		}
	})

	t.Run("a long-poll outlives every limit", func(t *testing.T) {
		// A long-poll sends nothing for its whole wait: 8 times every
		// limit here, as 5 minutes is to the default ones.
		wait := 8 * limit
		var d wire.Desired
		e.must(200, "GET", fmt.Sprintf("/v1/agent/hosts/pve-a/desired?after=1&wait=%s", wait), tok, nil, &d)
		if d.Generation != 1 {
			t.Fatalf("long-poll: got generation %d; want 1 (answered when the wait passed)", d.Generation)
		}
		// And one woken by a PUT after as long.
		got := make(chan wire.Desired, 1)
		go func() {
			var d wire.Desired
			e.must(200, "GET", "/v1/agent/hosts/pve-a/desired?after=1&wait=10m", tok, nil, &d)
			got <- d
		}()
		waitHeld(t, e.hub, 1)
		time.Sleep(wait) // not an assertion: the poll must outlast the limits before it is woken
		e.must(200, "PUT", "/v1/hosts/pve-a/desired", e.opTok, []byte(strings.Replace(docA, "cores: 2", "cores: 4", 1)), nil)
		if d := <-got; d.Generation != 2 {
			t.Fatalf("woken long-poll: got generation %d; want 2", d.Generation)
		}
	})
}

// TestHTTP2 checks that a TLS hub offers HTTP/2, so that an agent's
// long-poll and its reports share one connection, and that the body
// deadline holds on it too.
func TestHTTP2(t *testing.T) {
	cert, pool := selfSigned(t)
	const limit = 300 * time.Millisecond
	e := newServedEnv(t, Options{PollInterval: 30 * time.Second, BodyTimeout: limit}, &cert)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	t.Cleanup(c.CloseIdleConnections)
	do := func(method, path, token string, body io.Reader) (*http.Response, []byte, error) {
		req, _ := http.NewRequestWithContext(t.Context(), method, e.url+path, body)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := c.Do(req)
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp, b, err
	}
	resp, b, err := do("POST", "/v1/hosts/pve-a/join-token", e.opTok, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("join token: %v %s", err, b)
	}
	if resp.ProtoMajor != 2 {
		t.Fatalf("a TLS hub answered in %s; want HTTP/2", resp.Proto)
	}
	var jt struct {
		JoinToken string `json:"join_token"`
	}
	json.Unmarshal(b, &jt)
	_, b, err = do("POST", "/v1/enroll", "", strings.NewReader(fmt.Sprintf(`{"join_token":%q}`, jt.JoinToken)))
	var er wire.EnrollResponse
	if err != nil || json.Unmarshal(b, &er) != nil || er.Token == "" {
		t.Fatalf("enroll over HTTP/2: %v %s", err, b)
	}

	// A body sent slowly on one stream is cut; the connection serves the
	// next request.
	pr, pw := io.Pipe()
	stop := make(chan struct{})
	go func() {
		defer pw.Close()
		io.WriteString(pw, `{"hash":"`)
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if _, err := io.WriteString(pw, "a"); err != nil {
					return
				}
			}
		}
	}()
	resp, b, err = do("POST", "/v1/agent/hosts/pve-a/heartbeat", er.Token, pr)
	close(stop)
	if err == nil && resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("slow body over HTTP/2: got %d %s; want 408 or the stream reset", resp.StatusCode, b)
	}
	resp, b, err = do("POST", "/v1/agent/hosts/pve-a/report", er.Token, strings.NewReader(string(mustJSON(t, report("pve-a")))))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("report after a cut slow body: %v %s", err, b)
	}
}

// selfSigned returns a loopback certificate and a pool that trusts it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(crand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}
