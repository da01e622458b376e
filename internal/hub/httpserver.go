package hub

import (
	"crypto/tls"
	"errors"
	"io"
	"log"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Defaults of the HTTP limits in Options.
const (
	// DefaultReadHeaderTimeout bounds reading a request's headers.
	DefaultReadHeaderTimeout = 10 * time.Second
	// DefaultBodyTimeout bounds reading a request's body, from the end of
	// its headers (a 8 MiB report at 150 KB/s fits).
	DefaultBodyTimeout = 60 * time.Second
	// DefaultIdleTimeout bounds how long a kept-alive connection waits
	// for its next request. It is longer than the agent's own idle
	// timeout (90s), so that the agent, not the hub, closes an idle
	// connection (no request races a close).
	DefaultIdleTimeout = 2 * time.Minute
	// MaxHeaderBytes bounds a request's headers (a bearer token and a
	// few short headers need a fraction of it).
	MaxHeaderBytes = 32 << 10
)

// HTTPServer returns the http.Server that serves the hub: s.Handler with
// the hub's connection limits (headers read within ReadHeaderTimeout and
// at most MaxHeaderBytes; an idle kept-alive connection closed after
// IdleTimeout; each request body read within BodyTimeout, by Handler).
// None of them bounds a whole request: a desired long-poll holds its
// request for minutes, so there is no ReadTimeout or WriteTimeout.
//
// With cert non-nil the server's TLSConfig serves it and offers HTTP/2
// as well as HTTP/1.1: an agent's long-poll and its reports then share
// one connection (one descriptor and one TLS session per agent, not
// two). Serve it with srv.Serve(tls.NewListener(ln, srv.TLSConfig)) or
// srv.ServeTLS(ln, "", ""). Errors of the server itself (a failed
// accept, a bad TLS handshake) go to log: a failed accept (such as
// running out of file descriptors, which leaves agents waiting) at
// error level, the rest at debug.
func (s *Server) HTTPServer(cert *tls.Certificate) *http.Server {
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: s.readHeaderTimeout,
		IdleTimeout:       s.idleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
		ErrorLog:          log.New(&serverLog{log: s.log}, "", 0),
	}
	if cert != nil {
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS12,
			NextProtos: []string{"h2", "http/1.1"}}
	}
	return srv
}

// serverLog takes the lines of http.Server's ErrorLog.
type serverLog struct {
	log *slog.Logger
	mu  sync.Mutex
	// lastAccept is when a failed accept was last logged at error level:
	// the server retries every second at most, and one line in ten
	// seconds says enough.
	lastAccept time.Time
}

func (l *serverLog) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	if strings.Contains(msg, "Accept error") {
		l.mu.Lock()
		now := time.Now()
		loud := now.Sub(l.lastAccept) >= 10*time.Second
		if loud {
			l.lastAccept = now
		}
		l.mu.Unlock()
		if loud {
			l.log.Error("accepting a connection failed; new agents wait until it works again (out of file descriptors? raise the open-file limit, LimitNOFILE= in the systemd unit)", "err", msg)
			return len(p), nil
		}
	}
	l.log.Debug("http server", "msg", msg)
	return len(p), nil
}

// bodyDeadline bounds how long reading the body of a request may take:
// from the end of its headers, the whole body must arrive within
// s.bodyTimeout, or the read fails (the handler answers 408, and the
// connection closes) and a client sending slowly no longer holds a
// connection and a goroutine. A request without a body (a long-poll)
// gets no deadline, and the deadline is lifted once the body has been
// read, so the handler may then take as long as it needs.
func (s *Server) bodyDeadline(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody || s.bodyTimeout <= 0 {
			h.ServeHTTP(w, r)
			return
		}
		rc := http.NewResponseController(w)
		if err := rc.SetReadDeadline(time.Now().Add(s.bodyTimeout)); err != nil {
			h.ServeHTTP(w, r) // a ResponseWriter without deadlines (a test recorder)
			return
		}
		r.Body = &deadlineBody{ReadCloser: r.Body, rc: rc}
		h.ServeHTTP(w, r)
	})
}

// deadlineBody lifts the read deadline when its body has been read to
// the end.
type deadlineBody struct {
	io.ReadCloser
	rc     *http.ResponseController
	lifted bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if errors.Is(err, io.EOF) && !b.lifted {
		b.lifted = true
		b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}
