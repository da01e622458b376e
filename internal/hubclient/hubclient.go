// Package hubclient is the HTTP transport to a steward hub, shared by the
// agent (host token) and the operator commands (operator token): the
// hub's URL, how its certificate is trusted, the bearer token, bounded
// responses and the hub's JSON errors as *Error.
//
// It knows the hub's conventions, not its routes: the agent's and the
// operator's calls are built on Do and JSON by their own packages.
//
// A Client may name several hub replicas (one PostgreSQL database behind
// them): it sticks to one replica while it answers and moves to the next
// when a request gets no complete response or a 5xx (see Do). Every
// replica is trusted the same way: the one pinned fingerprint (replicas
// then share one certificate) or the one CA bundle.
//
// A Client is safe for concurrent use. No method puts the token in an
// error or a log line.
package hubclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/steward-pve/steward/internal/safefile"
	"github.com/steward-pve/steward/internal/tlspin"
	"github.com/steward-pve/steward/internal/wire"
)

// Options configures a Client.
type Options struct {
	// URL is the hub's base URL, https://host:port, or the URLs of
	// several replicas of one hub separated by commas (see ParseURLs).
	// Plain http:// is accepted only for a loopback host (a hub started
	// with --insecure-http for development): a token must not cross a
	// network in the clear.
	URL string
	// Fingerprint pins the hub's certificate (SHA-256, colon-hex, as
	// `steward hub` prints it). CAFile trusts a CA bundle instead. With
	// neither, the system's roots verify the certificate and its name.
	// Whichever is set applies to every replica URL: pinned replicas must
	// present the same certificate (give each the same --tls-cert and
	// --tls-key); with a CA each may have its own, issued for its name.
	Fingerprint string
	CAFile      string
	// Token is the bearer token sent with every request; empty sends
	// none (enrollment, probing).
	Token string
	// HTTPClient replaces the client built from the settings above (tests
	// with their own TLS set-up); it cannot be combined with Fingerprint
	// or CAFile.
	HTTPClient *http.Client
	// UserAgent is sent as User-Agent; default "steward".
	UserAgent string
	// OnFailover, when set, is called when a request moves from one
	// replica to the next, with the error (or 5xx answer) that made it
	// move; for logs. It must be quick and safe for concurrent use.
	OnFailover func(from, to string, err error)
	// DialContext, when set, opens the client's TCP connections instead
	// of the default dialer (10s timeout, 30s keep-alive); everything
	// else (TLS, HTTP/2, pings, limits) stays as New sets it. The load
	// generator binds each simulated agent to its own source address
	// with it.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
}

// MaxURLs bounds how many replica URLs one Client takes.
const MaxURLs = 16

// MaxResponse bounds a response body unless a Request says otherwise: the
// largest message the hub sends (a report or a desired document) with
// room to spare.
const MaxResponse = 2 * wire.MaxReportSize

// MaxCAFileSize bounds Options.CAFile.
const MaxCAFileSize = 4 << 20

// Client talks to one hub, through one or several replica URLs.
type Client struct {
	bases []*url.URL
	// cur is the index in bases of the replica requests go to first: the
	// last one that answered. It starts at a random replica so agents
	// listing the same URLs spread over them.
	cur        *atomic.Int32
	token      string
	ua         string
	hc         *http.Client
	onFailover func(from, to string, err error)
}

// New checks opts and returns a Client. It does not contact the hub.
func New(opts Options) (*Client, error) {
	bases, err := ParseURLs(opts.URL)
	if err != nil {
		return nil, err
	}
	c := &Client{bases: bases, cur: new(atomic.Int32), token: opts.Token, ua: opts.UserAgent, onFailover: opts.OnFailover}
	c.cur.Store(int32(rand.IntN(len(bases))))
	if c.ua == "" {
		c.ua = "steward"
	}
	if opts.HTTPClient != nil {
		if opts.Fingerprint != "" || opts.CAFile != "" || opts.DialContext != nil {
			return nil, errors.New("hubclient: Options.HTTPClient cannot be combined with Fingerprint, CAFile or DialContext")
		}
		c.hc = opts.HTTPClient
		return c, nil
	}
	var conf *tls.Config
	switch {
	case opts.Fingerprint != "" && opts.CAFile != "":
		return nil, errors.New("hub: set either the certificate fingerprint or a CA file, not both")
	case opts.Fingerprint != "":
		want, err := tlspin.Parse(opts.Fingerprint)
		if err != nil {
			return nil, fmt.Errorf("hub fingerprint: %w (as `steward hub` prints it)", err)
		}
		conf = tlspin.Config(want, func(w, g string) error { return &MismatchError{Want: w, Got: g} })
	case opts.CAFile != "":
		pem, err := safefile.ReadFile(opts.CAFile, MaxCAFileSize)
		if err != nil {
			return nil, fmt.Errorf("hub CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("hub CA file %s holds no PEM certificate", opts.CAFile)
		}
		conf = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	default:
		conf = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	dial := opts.DialContext
	if dial == nil {
		dial = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	}
	c.hc = &http.Client{
		Transport: &http.Transport{
			Proxy:             http.ProxyFromEnvironment,
			DialContext:       dial,
			TLSClientConfig:   conf,
			ForceAttemptHTTP2: true,
			// Over HTTP/2 one connection carries the long-poll and the
			// reports: a ping after 30s of silence, and the connection
			// dropped if it goes unanswered for 15s, so a connection a
			// NAT forgot does not hold every request.
			HTTP2:                 &http.HTTP2Config{SendPingTimeout: 30 * time.Second, PingTimeout: 15 * time.Second},
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: 0, // long polls hold the response; the caller's context bounds it
			MaxIdleConns:          8,
			IdleConnTimeout:       90 * time.Second,
		},
		// The hub never redirects; following one could send the token
		// elsewhere.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return c, nil
}

// ParseURL checks a hub URL: https, or http to a loopback host; no
// user info, query or fragment. The path, if any, is kept as a prefix.
func ParseURL(s string) (*url.URL, error) {
	if s == "" {
		return nil, errors.New("hub URL is empty: give the hub's address, e.g. https://hub.example:8440")
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("hub URL %q: %w", s, err)
	}
	if u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, fmt.Errorf("hub URL %q: want https://HOST[:PORT]", s)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("hub URL %q: no user, query or fragment, just https://HOST[:PORT]", redact(u))
	}
	if u.Scheme == "http" && !isLoopback(u.Hostname()) {
		return nil, fmt.Errorf("hub URL %q: plain http is accepted only to a loopback address (development); use https", s)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	return u, nil
}

// ParseURLs checks a list of hub replica URLs separated by commas (one
// URL is a list of one), each as ParseURL checks it; a URL given twice or
// more than MaxURLs are refused.
func ParseURLs(s string) ([]*url.URL, error) {
	parts := strings.Split(s, ",")
	if len(parts) > MaxURLs {
		return nil, fmt.Errorf("hub URLs: %d given; at most %d replicas", len(parts), MaxURLs)
	}
	out := make([]*url.URL, 0, len(parts))
	seen := map[string]bool{}
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if p == "" && len(parts) > 1 {
			return nil, fmt.Errorf("hub URLs %q: URL %d of %d is empty (a stray comma?)", s, i+1, len(parts))
		}
		u, err := ParseURL(p)
		if err != nil {
			return nil, err
		}
		if seen[u.String()] {
			return nil, fmt.Errorf("hub URLs: %s is given twice", u)
		}
		seen[u.String()] = true
		out = append(out, u)
	}
	return out, nil
}

func redact(u *url.URL) string {
	v := *u
	v.User, v.RawQuery, v.Fragment = nil, "", ""
	return v.String()
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// URL returns the base URL of the replica requests go to first (the
// last one that answered).
func (c *Client) URL() string { return c.bases[int(c.cur.Load())%len(c.bases)].String() }

// URLs returns every replica URL, in the order given.
func (c *Client) URLs() []string {
	out := make([]string, len(c.bases))
	for i, b := range c.bases {
		out[i] = b.String()
	}
	return out
}

// Replicas returns one Client per replica URL, each talking to its
// replica only (no failover), sharing c's transport and token: to check
// every replica (steward agent check).
func (c *Client) Replicas() []*Client {
	out := make([]*Client, len(c.bases))
	for i, b := range c.bases {
		d := *c
		d.bases, d.cur, d.onFailover = []*url.URL{b}, new(atomic.Int32), nil
		out[i] = &d
	}
	return out
}

// WithToken returns a Client for the same hub that sends tok.
func (c *Client) WithToken(tok string) *Client {
	d := *c
	d.token = tok
	return &d
}

// Request is one call to the hub.
type Request struct {
	Method string
	Path   string // absolute, e.g. /v1/hosts; path segments must already be escaped
	Query  url.Values
	Body   []byte // sent as application/json unless Header says otherwise
	Header http.Header
	// MaxResponse bounds the response body; 0 means MaxResponse.
	MaxResponse int64
}

// Response is the hub's answer to a Request, whatever its status.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// Do sends req and reads the whole response (bounded). It returns an
// error only when no complete response arrived; the status is the
// caller's to judge (see Response.Err).
//
// With several replicas, Do sends req to the replica that answered last;
// when that one gives no complete response (refused, reset, TLS or dial
// timeout, a pinned certificate that does not match) or answers 500, 502,
// 503 or 504, it sends req again to the next replica, each replica once,
// and returns the last answer or error. The next calls start at the
// replica that answered. A request cut by ctx's deadline is not sent
// again (ctx is spent), but the next call starts at the next replica, so
// a replica that accepts connections and never answers is left too. A
// request may thus reach two replicas: the hub's agent API is idempotent
// for exactly that (a report, heartbeat, job result or receipt sent
// again changes nothing).
func (c *Client) Do(ctx context.Context, req Request) (*Response, error) {
	n := len(c.bases)
	start := int(c.cur.Load()) % n
	var resp *Response
	var err error
	for i := range n {
		idx := (start + i) % n
		resp, err = c.doOne(ctx, c.bases[idx], req)
		if ctx.Err() != nil {
			if n > 1 && errors.Is(ctx.Err(), context.DeadlineExceeded) && err != nil {
				// No answer in the caller's time: the next call tries the
				// next replica.
				c.cur.CompareAndSwap(int32(start), int32((idx+1)%n))
			}
			return resp, err
		}
		if !shouldFailover(resp, err) || n == 1 {
			if i > 0 {
				c.cur.CompareAndSwap(int32(start), int32(idx))
			}
			return resp, err
		}
		if c.onFailover != nil && i+1 < n {
			why := err
			if why == nil {
				why = resp.Err(req.Method, req.Path)
			}
			c.onFailover(c.bases[idx].String(), c.bases[(idx+1)%n].String(), why)
		}
	}
	// Every replica failed: the next call starts where this one did not.
	c.cur.CompareAndSwap(int32(start), int32((start+1)%n))
	return resp, err
}

// shouldFailover reports whether an answer (or its absence) says the
// replica, rather than the request, is at fault.
func shouldFailover(resp *Response, err error) bool {
	if err != nil {
		var te *TransportError
		return errors.As(err, &te)
	}
	switch resp.Status {
	case http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// doOne sends req to the replica at base.
func (c *Client) doOne(ctx context.Context, base *url.URL, req Request) (*Response, error) {
	u := *base
	u.Path = base.Path + req.Path
	u.RawPath = ""
	if len(req.Query) > 0 {
		u.RawQuery = req.Query.Encode()
	}
	var body io.Reader
	if req.Body != nil {
		body = bytes.NewReader(req.Body)
	}
	hr, err := http.NewRequestWithContext(ctx, req.Method, u.String(), body)
	if err != nil {
		return nil, fmt.Errorf("hub: %s %s: %w", req.Method, req.Path, err)
	}
	for k, vs := range req.Header {
		hr.Header[k] = vs
	}
	if req.Body != nil && hr.Header.Get("Content-Type") == "" {
		hr.Header.Set("Content-Type", "application/json")
	}
	hr.Header.Set("Accept", "application/json")
	hr.Header.Set("User-Agent", c.ua)
	if c.token != "" {
		hr.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(hr)
	if err != nil {
		return nil, &TransportError{Method: req.Method, Path: req.Path, Err: err}
	}
	defer resp.Body.Close()
	max := req.MaxResponse
	if max <= 0 {
		max = MaxResponse
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, max+1))
	if err != nil {
		return nil, &TransportError{Method: req.Method, Path: req.Path, Err: fmt.Errorf("reading the response: %w", err)}
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("hub: %s %s: response larger than %d bytes; refused", req.Method, req.Path, max)
	}
	return &Response{Status: resp.StatusCode, Header: resp.Header, Body: b}, nil
}

// Err returns nil for a 2xx response and otherwise the hub's error as
// *Error (with the hub's own message when the body is a wire.Error).
func (r *Response) Err(method, path string) error {
	if r.Status >= 200 && r.Status < 300 {
		return nil
	}
	e := &Error{Method: method, Path: path, Status: r.Status}
	var we wire.Error
	if json.Unmarshal(r.Body, &we) == nil && we.Error != "" {
		e.Code, e.Message, e.HaveSeq = we.Code, we.Error, we.HaveSeq
	} else {
		e.Message = strings.TrimSpace(string(r.Body))
		if len(e.Message) > 200 {
			e.Message = e.Message[:200] + "…"
		}
		if e.Message == "" {
			e.Message = http.StatusText(r.Status)
		}
	}
	return e
}

// JSON sends in (marshalled, unless nil) and decodes a 2xx response into
// out (unless nil). A non-2xx status is an *Error.
func (c *Client) JSON(ctx context.Context, method, path string, query url.Values, in, out any) error {
	req := Request{Method: method, Path: path, Query: query}
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("hub: encoding the %s %s request: %w", method, path, err)
		}
		req.Body = b
	}
	resp, err := c.Do(ctx, req)
	if err != nil {
		return err
	}
	if err := resp.Err(method, path); err != nil {
		return err
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(resp.Body, out); err != nil {
		return fmt.Errorf("hub: %s %s: the response is not what this steward expects (%v); is the hub the same version?", method, path, err)
	}
	return nil
}

// Error is a response from the hub with a non-2xx status.
type Error struct {
	Method, Path string
	Status       int
	Code         string // the hub's machine code, "" if the body was not a hub error
	Message      string
	// HaveSeq is the hub's wire.Error.HaveSeq (chain_gap answers), nil
	// when absent.
	HaveSeq *uint64
}

func (e *Error) Error() string {
	if e.Code != "" {
		return fmt.Sprintf("hub: %s %s: %d %s: %s", e.Method, e.Path, e.Status, e.Code, e.Message)
	}
	return fmt.Sprintf("hub: %s %s: %d: %s", e.Method, e.Path, e.Status, e.Message)
}

// IsCode reports whether err is a hub *Error with the given code.
func IsCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// StatusOf returns the HTTP status of a hub *Error, or 0.
func StatusOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// TransportError is a request that got no complete response: the hub
// is unreachable, the connection broke, or TLS was refused.
type TransportError struct {
	Method, Path string
	Err          error
}

func (e *TransportError) Error() string {
	return fmt.Sprintf("hub: %s %s: %v", e.Method, e.Path, e.Err)
}

func (e *TransportError) Unwrap() error { return e.Err }

// MismatchError is a hub whose certificate is not the pinned one.
type MismatchError struct {
	Want, Got string
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("hub certificate fingerprint %s does not match the pinned %s: if the hub's certificate was replaced on purpose, pin the new fingerprint (`steward hub` prints it); otherwise something between you and the hub is impersonating it", e.Got, e.Want)
}

// Probe connects to the hub at rawURL without trusting anything and
// returns the SHA-256 fingerprint of the certificate it presents, for an
// operator to confirm on first contact (as ssh does). No token is sent
// and no request is made; the caller must show the fingerprint and pin it
// only once a person (or --hub-fingerprint) confirmed it.
func Probe(ctx context.Context, rawURL string) (string, error) {
	u, err := ParseURL(rawURL)
	if err != nil {
		return "", err
	}
	if u.Scheme != "https" {
		return "", fmt.Errorf("hub URL %s is plain http: there is no certificate to pin", u)
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "443")
	}
	d := tls.Dialer{Config: &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: true, ServerName: u.Hostname()}}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", fmt.Errorf("hub %s: %w", u, err)
	}
	defer conn.Close()
	cs := conn.(*tls.Conn).ConnectionState()
	if len(cs.PeerCertificates) == 0 {
		return "", fmt.Errorf("hub %s presented no certificate", u)
	}
	return tlspin.Of(cs.PeerCertificates[0].Raw), nil
}

// Enroll exchanges a one-time join token for the host's bearer token
// (POST /v1/enroll). c must carry no token; the join token is sent in the
// body and never appears in an error.
func (c *Client) Enroll(ctx context.Context, joinToken string) (wire.EnrollResponse, error) {
	var out wire.EnrollResponse
	if joinToken == "" {
		return out, errors.New("join token is empty: ask an operator for one (steward hosts add HOST)")
	}
	err := c.JSON(ctx, http.MethodPost, "/v1/enroll", nil, wire.EnrollRequest{JoinToken: joinToken}, &out)
	if err != nil {
		return out, err
	}
	if out.Host == "" || out.Token == "" {
		return out, errors.New("hub: enrollment answered without a host or token; is the hub the same version?")
	}
	return out, nil
}
