package alert

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// smtpServer is a tiny SMTP server on loopback: EHLO, optional STARTTLS
// (with a test certificate), AUTH PLAIN, MAIL, RCPT, DATA, QUIT. It
// records the commands it got, and whether each came over TLS.
type smtpServer struct {
	ln       net.Listener
	tlsConf  *tls.Config
	mu       sync.Mutex
	commands []string // "tls:" prefixed when over TLS
	data     string
	done     chan struct{}
}

func testCert(t *testing.T) (tls.Certificate, *x509.CertPool) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "smtp test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
}

func startSMTP(t *testing.T, conf *tls.Config) *smtpServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &smtpServer{ln: ln, tlsConf: conf, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		s.serve(c)
	}()
	t.Cleanup(func() { ln.Close(); <-s.done })
	return s
}

func (s *smtpServer) serve(c net.Conn) {
	defer func() { c.Close() }()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	r, w := bufio.NewReader(c), bufio.NewWriter(c)
	reply := func(l string) { w.WriteString(l + "\r\n"); w.Flush() }
	overTLS := false
	reply("220 test ESMTP")
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		cmd := strings.TrimRight(line, "\r\n")
		s.mu.Lock()
		if overTLS {
			s.commands = append(s.commands, "tls:"+cmd)
		} else {
			s.commands = append(s.commands, cmd)
		}
		s.mu.Unlock()
		verb := strings.ToUpper(strings.SplitN(cmd, " ", 2)[0])
		switch verb {
		case "EHLO":
			if s.tlsConf != nil && !overTLS {
				reply("250-test\r\n250-AUTH PLAIN\r\n250 STARTTLS")
			} else {
				reply("250-test\r\n250 AUTH PLAIN")
			}
		case "STARTTLS":
			if s.tlsConf == nil {
				reply("502 no")
				continue
			}
			reply("220 go ahead")
			tc := tls.Server(c, s.tlsConf)
			if tc.Handshake() != nil {
				return
			}
			c, overTLS = tc, true
			r, w = bufio.NewReader(tc), bufio.NewWriter(tc)
		case "AUTH":
			reply("235 ok")
		case "MAIL", "RCPT":
			reply("250 ok")
		case "DATA":
			reply("354 go")
			var b strings.Builder
			for {
				l, err := r.ReadString('\n')
				if err != nil || l == ".\r\n" {
					break
				}
				b.WriteString(l)
			}
			s.mu.Lock()
			s.data = b.String()
			s.mu.Unlock()
			reply("250 queued")
		case "QUIT":
			reply("221 bye")
			return
		default:
			reply("500 what")
		}
	}
}

func TestSMTPUsesSTARTTLS(t *testing.T) {
	cert, pool := testCert(t)
	srv := startSMTP(t, &tls.Config{Certificates: []tls.Certificate{cert}})
	m := &SMTP{Server: srv.ln.Addr().String(), From: "steward@example.com", To: []string{"ops@example.com"}, Username: "steward", Password: "pw", RootCAs: pool}
	err := m.Send(t.Context(), Message{ID: 7, Alert: Alert{Event: HostSilent, Host: "pve-a", Time: time.Now(), Summary: "pve-a is silent"}})
	if err != nil {
		t.Fatal(err)
	}
	<-srv.done
	srv.mu.Lock()
	defer srv.mu.Unlock()
	// Before STARTTLS: EHLO and STARTTLS only; AUTH and the mail after it.
	if len(srv.commands) < 3 || srv.commands[1] != "STARTTLS" {
		t.Fatalf("commands: %q; want EHLO, STARTTLS, then the rest over TLS", srv.commands)
	}
	for _, c := range srv.commands[2:] {
		if !strings.HasPrefix(c, "tls:") {
			t.Fatalf("command %q sent in clear after STARTTLS (all: %q)", c, srv.commands)
		}
	}
	if !strings.Contains(strings.Join(srv.commands, "\n"), "tls:AUTH PLAIN") {
		t.Fatalf("commands: %q; want AUTH PLAIN over TLS", srv.commands)
	}
	if !strings.Contains(srv.data, "Subject: steward: host.silent on pve-a\r\n") || !strings.Contains(srv.data, "pve-a is silent\r\n") {
		t.Fatalf("message: %q", srv.data)
	}
}

func TestSMTPWithoutSTARTTLSRefused(t *testing.T) {
	srv := startSMTP(t, nil)
	m := &SMTP{Server: srv.ln.Addr().String(), From: "steward@example.com", To: []string{"ops@example.com"}, Username: "steward", Password: "pw"}
	err := m.Send(t.Context(), Message{Alert: Alert{Event: HostSilent, Summary: "x"}})
	if !errors.Is(err, ErrNoSTARTTLS) {
		t.Fatalf("Send to a server without STARTTLS: %v; want ErrNoSTARTTLS", err)
	}
	<-srv.done
	srv.mu.Lock()
	defer srv.mu.Unlock()
	for _, c := range srv.commands {
		if v := strings.ToUpper(strings.SplitN(c, " ", 2)[0]); v != "EHLO" && v != "QUIT" {
			t.Fatalf("the client sent %q to a server without STARTTLS (all: %q)", c, srv.commands)
		}
	}
}

func TestSMTPUntrustedCertificateRefused(t *testing.T) {
	cert, _ := testCert(t)
	srv := startSMTP(t, &tls.Config{Certificates: []tls.Certificate{cert}})
	m := &SMTP{Server: srv.ln.Addr().String(), From: "steward@example.com", To: []string{"ops@example.com"}, Username: "steward", Password: "pw"}
	err := m.Send(t.Context(), Message{Alert: Alert{Event: HostSilent, Summary: "x"}})
	if err == nil || !strings.Contains(err.Error(), "STARTTLS") {
		t.Fatalf("Send with a certificate the system does not trust: %v; want a STARTTLS failure", err)
	}
	<-srv.done
	srv.mu.Lock()
	defer srv.mu.Unlock()
	for _, c := range srv.commands {
		if strings.Contains(c, "AUTH") || strings.Contains(c, "MAIL") {
			t.Fatalf("the client sent %q after a failed handshake", c)
		}
	}
}
