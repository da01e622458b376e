package pve

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/steward-pve/steward/internal/safefile"
	"github.com/steward-pve/steward/internal/tlspin"
)

// DefaultTimeout is the per-request timeout when Options.Timeout is zero.
const DefaultTimeout = 30 * time.Second

// maxBody bounds how much of a response body the client reads; the
// largest real responses (cluster resources of big clusters) are a few MB.
const maxBody = 64 << 20

// Options configures a Client.
type Options struct {
	// URL is the PVE API endpoint, "https://host:8006"; the client appends
	// /api2/json (a URL already ending in /api2/json is accepted).
	URL string
	// Token authenticates every request. Required.
	Token Token
	// Fingerprint, when set, pins the node certificate: the handshake
	// succeeds only if the leaf certificate's SHA-256 equals it, and CA and
	// host name verification are skipped (PVE's node certificates are
	// signed by a per-cluster CA nobody else trusts; this is how Proxmox's
	// own API client works). Colon-hex as PVE shows ssl_fingerprint, case
	// and colons optional.
	Fingerprint string
	// CAFile is a PEM bundle of CAs to trust instead of the system roots
	// (e.g. a copy of /etc/pve/pve-root-ca.pem). Host names are verified.
	CAFile string
	// InsecureSkipVerify disables all certificate verification. Only ever
	// set it from a flag named --pve-insecure-skip-verify; New logs a
	// warning when it is set.
	InsecureSkipVerify bool
	// Timeout bounds each request (not WaitTask as a whole); default 30s.
	Timeout time.Duration
	// Logger receives debug lines per request and the insecure-mode
	// warning; nil means no logging. The token is never logged.
	Logger *slog.Logger
	// HTTPClient replaces the client's own HTTP client (tests, custom
	// transports). When set, Fingerprint, CAFile and InsecureSkipVerify
	// must be empty: TLS is then the caller's business, and silently
	// ignoring a pin would be worse than an error.
	HTTPClient *http.Client
	// Observe, when set, is called once per request after it finished,
	// with the method, the path as a route template (Route), the HTTP
	// status (0 when no response arrived) and how long it took. It is
	// for metrics: it must be quick and safe for concurrent use, and it
	// never sees parameters, bodies or the token.
	Observe func(method, route string, status int, d time.Duration) `json:"-"`
}

// Client talks to one PVE API endpoint. It is safe for concurrent use.
// Reads may be retried by callers; mutations are sent exactly once and
// never retried by the client.
type Client struct {
	base    string // https://host:8006/api2/json
	auth    string // Authorization header value
	secret  string // for redaction
	http    *http.Client
	timeout time.Duration
	log     *slog.Logger

	// sleep waits d or until ctx is done; replaced in tests.
	sleep func(ctx context.Context, d time.Duration) error
	// jitter returns a factor in [0,1) for backoff jitter; replaced in tests.
	jitter func() float64

	// tlsHints: TLS is configured from Options (not a caller's HTTPClient),
	// so a certificate failure can name the flag that fixes it.
	tlsHints bool
	caFile   string

	observe func(method, route string, status int, d time.Duration)
}

// New validates opts and returns a Client. It does no I/O besides reading
// CAFile.
func New(opts Options) (*Client, error) {
	u, err := url.Parse(strings.TrimSpace(opts.URL))
	if err != nil || u.Host == "" {
		return nil, errors.New("pve: URL must look like https://host:8006")
	}
	if u.Scheme != "https" {
		return nil, fmt.Errorf("pve: URL scheme %q is not https; PVE serves its API only over TLS", u.Scheme)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, errors.New("pve: URL must not carry user info, query or fragment; use Token for credentials")
	}
	path := strings.TrimSuffix(u.Path, "/")
	path = strings.TrimSuffix(path, "/api2/json")
	base := u.Scheme + "://" + u.Host + path + "/api2/json"

	if opts.Token.IsZero() {
		return nil, errors.New("pve: no API token given")
	}
	if err := checkTokenID(opts.Token.ID); err != nil {
		return nil, fmt.Errorf("pve: bad API token: %w", err)
	}
	if opts.Token.Secret == "" || !headerSafe(opts.Token.Secret) {
		return nil, errors.New("pve: bad API token: empty secret or one with spaces or control characters")
	}

	c := &Client{
		base:    base,
		auth:    opts.Token.header(),
		secret:  opts.Token.Secret,
		timeout: opts.Timeout,
		log:     opts.Logger,
		sleep:   sleepCtx,
		jitter:  rand.Float64,
		observe: opts.Observe,
	}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}

	if opts.HTTPClient != nil {
		if opts.Fingerprint != "" || opts.CAFile != "" || opts.InsecureSkipVerify {
			return nil, errors.New("pve: Options.HTTPClient cannot be combined with Fingerprint, CAFile or InsecureSkipVerify; configure TLS on the HTTP client instead")
		}
		c.http = opts.HTTPClient
		return c, nil
	}

	tlsConf, err := tlsConfig(opts)
	if err != nil {
		return nil, err
	}
	c.tlsHints, c.caFile = true, opts.CAFile
	if opts.InsecureSkipVerify {
		c.log.Warn("pve: TLS CERTIFICATE VERIFICATION IS DISABLED (--pve-insecure-skip-verify): anyone on the network path can impersonate PVE and capture the API token; pin the node certificate with --pve-fingerprint instead",
			"url", base)
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	c.http = &http.Client{
		Transport: &http.Transport{
			// No proxy: PVE hosts often set http_proxy for apt, and the
			// API must not be routed through it.
			Proxy:                 nil,
			DialContext:           dialer.DialContext,
			TLSClientConfig:       tlsConf,
			TLSHandshakeTimeout:   10 * time.Second,
			MaxIdleConns:          32,
			MaxIdleConnsPerHost:   16,
			IdleConnTimeout:       90 * time.Second,
			ExpectContinueTimeout: time.Second,
		},
		// PVE's API does not redirect; following one could send the
		// token elsewhere.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return c, nil
}

func tlsConfig(opts Options) (*tls.Config, error) {
	conf := &tls.Config{MinVersion: tls.VersionTLS12}
	set := 0
	for _, b := range []bool{opts.Fingerprint != "", opts.CAFile != "", opts.InsecureSkipVerify} {
		if b {
			set++
		}
	}
	if set > 1 {
		return nil, errors.New("pve: set at most one of Fingerprint, CAFile and InsecureSkipVerify")
	}
	switch {
	case opts.Fingerprint != "":
		want, err := ParseFingerprint(opts.Fingerprint)
		if err != nil {
			return nil, err
		}
		// Pinning (package tlspin) replaces Go's CA and host-name
		// verification; this is the only place verification is turned
		// off without the user asking for it.
		conf = tlspin.Config(want, func(w, g string) error { return &FingerprintMismatchError{Want: w, Got: g} })
	case opts.CAFile != "":
		pem, err := safefile.ReadFile(opts.CAFile, MaxCAFileSize)
		if err != nil {
			return nil, fmt.Errorf("pve: read CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("pve: CA file %s holds no PEM certificate", opts.CAFile)
		}
		conf.RootCAs = pool
	case opts.InsecureSkipVerify:
		conf.InsecureSkipVerify = true
	}
	return conf, nil
}

// MaxCAFileSize bounds the CA bundle read from Options.CAFile; a full
// system bundle is a few hundred KiB.
const MaxCAFileSize = 4 << 20

// ParseFingerprint parses a SHA-256 certificate fingerprint in PVE's
// colon-hex form ("80:D4:…:F5"); case and colons are optional.
func ParseFingerprint(s string) ([sha256.Size]byte, error) {
	fp, err := tlspin.Parse(s)
	if err != nil {
		return fp, fmt.Errorf("pve: %w (as PVE shows ssl_fingerprint)", err)
	}
	return fp, nil
}

// FormatFingerprint formats a digest as PVE does: upper-case hex bytes
// separated by colons.
func FormatFingerprint(sum []byte) string { return tlspin.Format(sum) }

// CertFingerprint returns the PVE-style SHA-256 fingerprint of a DER
// certificate.
func CertFingerprint(der []byte) string { return tlspin.Of(der) }

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// pathOf joins escaped path segments: pathOf("nodes", node, "qemu").
func pathOf(segs ...string) string {
	var b strings.Builder
	for _, s := range segs {
		b.WriteByte('/')
		b.WriteString(url.PathEscape(s))
	}
	return b.String()
}

// call performs one request and returns the raw "data" member of a 2xx
// body. Parameters go in the query for GET and DELETE (PVE rejects a body
// on those) and form-encoded in the body for POST and PUT. mutation marks
// calls whose lost response must be reported as OutcomeUnknownError.
func (c *Client) call(ctx context.Context, method, path string, params url.Values, mutation bool) (json.RawMessage, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("pve: %s %s not sent: %w", method, path, err)
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()

	target := c.base + path
	var body io.Reader
	encoded := params.Encode()
	switch method {
	case http.MethodGet, http.MethodDelete:
		if encoded != "" {
			target += "?" + encoded
		}
	default:
		body = strings.NewReader(encoded)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return nil, fmt.Errorf("pve: build request %s %s: %w", method, path, err)
	}
	req.Header.Set("Authorization", c.auth)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}

	var sent atomic.Bool
	trace := &httptrace.ClientTrace{
		WroteRequest: func(i httptrace.WroteRequestInfo) {
			if i.Err == nil {
				sent.Store(true)
			}
		},
	}
	req = req.WithContext(httptrace.WithClientTrace(ctx, trace))

	start := time.Now()
	resp, err := c.http.Do(req)
	if err != nil {
		c.observeRequest(method, path, 0, start)
		c.log.Debug("pve request failed", "method", method, "path", path, "sent", sent.Load(), "err", c.redact(err))
		return nil, c.transportError(parent, method, path, sent.Load(), mutation, err)
	}
	defer resp.Body.Close()
	raw, rerr := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	c.observeRequest(method, path, resp.StatusCode, start)
	c.log.Debug("pve request", "method", method, "path", path, "status", resp.StatusCode, "bytes", len(raw), "duration", time.Since(start))

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, c.apiError(method, path, resp, raw)
	}
	if rerr == nil && len(raw) > maxBody {
		rerr = fmt.Errorf("response body larger than %d bytes", maxBody)
	}
	if rerr != nil {
		// The status line said success but the body was cut off.
		if mutation {
			return nil, &OutcomeUnknownError{Method: method, Path: path, Err: c.redact(rerr)}
		}
		return nil, &TransportError{Method: method, Path: path, Sent: true, Err: c.redact(rerr)}
	}
	var env envelope[json.RawMessage]
	if err := json.Unmarshal(raw, &env); err != nil {
		if mutation {
			return nil, &OutcomeUnknownError{Method: method, Path: path, Err: fmt.Errorf("response is not PVE's JSON envelope: %w", err)}
		}
		return nil, fmt.Errorf("pve: %s %s: response is not PVE's JSON envelope: %w", method, path, err)
	}
	return env.Data, nil
}

func (c *Client) observeRequest(method, path string, status int, start time.Time) {
	if c.observe != nil {
		c.observe(method, Route(path), status, time.Since(start))
	}
}

// Route turns a request path below /api2/json into its route template,
// so that metrics have few label values: the node, VMID, task id,
// snapshot and storage segments become {node}, {vmid}, {upid},
// {snapname} and {storage}: "/nodes/pve/qemu/101/status/start" →
// "/nodes/{node}/qemu/{vmid}/status/start".
func Route(path string) string {
	segs := strings.Split(strings.TrimPrefix(path, "/"), "/")
	for i := 1; i < len(segs); i++ {
		prev := segs[i-1]
		switch {
		case prev == "nodes" && i == 1:
			segs[i] = "{node}"
		case (prev == "qemu" || prev == "lxc") && segs[i] != "":
			segs[i] = "{vmid}"
		case prev == "tasks":
			segs[i] = "{upid}"
		case prev == "snapshot":
			segs[i] = "{snapname}"
		case prev == "storage" && i == 3:
			segs[i] = "{storage}"
		}
	}
	return "/" + strings.Join(segs, "/")
}

// transportError classifies a failure without response. parent is the
// caller's context: when it is done, the failure is the caller's doing and
// not retryable, whatever the transport said.
func (c *Client) transportError(parent context.Context, method, path string, sent, mutation bool, err error) error {
	err = c.redact(err)
	if sent && mutation {
		return &OutcomeUnknownError{Method: method, Path: path, Err: err}
	}
	te := &TransportError{Method: method, Path: path, Sent: sent, Err: err, callerDone: parent.Err() != nil}
	if c.tlsHints {
		te.hint = certHint(err, c.caFile)
	}
	return te
}

func (c *Client) apiError(method, path string, resp *http.Response, raw []byte) *APIError {
	e := &APIError{Method: method, Path: path, StatusCode: resp.StatusCode}
	// http.Response.Status is "<code> <reason phrase>".
	e.Message = strings.TrimSpace(strings.TrimPrefix(resp.Status, strconv.Itoa(resp.StatusCode)))
	if len(raw) > 0 && len(raw) <= maxBody {
		var eb errorBody
		if json.Unmarshal(raw, &eb) == nil {
			e.BodyMessage = string(eb.Message)
			if len(eb.Errors) > 0 {
				e.Errors = make(map[string]string, len(eb.Errors))
				for k, v := range eb.Errors {
					e.Errors[k] = c.redactString(string(v))
				}
			}
		}
	}
	e.Message = c.redactString(e.Message)
	e.BodyMessage = c.redactString(e.BodyMessage)
	return e
}

func (c *Client) redactString(s string) string {
	if c.secret == "" || !strings.Contains(s, c.secret) {
		return s
	}
	return strings.ReplaceAll(s, c.secret, redacted)
}

// redact makes sure err's text does not contain the token secret. Go's
// HTTP stack never puts headers into errors, so this is a safety net.
func (c *Client) redact(err error) error {
	if err == nil || c.secret == "" {
		return err
	}
	msg := err.Error()
	if !strings.Contains(msg, c.secret) {
		return err
	}
	return &redactedError{msg: strings.ReplaceAll(msg, c.secret, redacted), err: err}
}

// getRaw performs a read and returns its non-null data member.
func (c *Client) getRaw(ctx context.Context, path string, q url.Values) (json.RawMessage, error) {
	data, err := c.call(ctx, http.MethodGet, path, q, false)
	if err != nil {
		return nil, err
	}
	if isNull(data) {
		return nil, fmt.Errorf("pve: GET %s: response data is null", path)
	}
	return data, nil
}

// get performs a read and decodes data into T.
func get[T any](ctx context.Context, c *Client, path string, q url.Values) (T, error) {
	var v T
	data, err := c.getRaw(ctx, path, q)
	if err != nil {
		return v, err
	}
	if err := json.Unmarshal(data, &v); err != nil {
		var zero T
		return zero, fmt.Errorf("pve: GET %s: decode response: %w", path, err)
	}
	return v, nil
}

func isNull(data json.RawMessage) bool {
	d := bytes.TrimSpace(data)
	return len(d) == 0 || string(d) == "null"
}
