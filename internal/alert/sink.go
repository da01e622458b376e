package alert

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/smtp"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/steward-pve/steward/internal/safefile"
)

// Sink sends one alert somewhere. Send is safe for concurrent use and
// bounded by ctx; an error wrapping ErrPermanent means retrying cannot
// help (the hub gives the message up). Errors never hold a secret.
type Sink interface {
	Send(ctx context.Context, m Message) error
}

// Message is an alert as the outbox delivers it: with its outbox id, the
// same on every attempt (a receiver dedups redeliveries by it).
type Message struct {
	ID    int64
	Alert Alert
}

// ErrPermanent marks a send that retrying cannot fix.
var ErrPermanent = errors.New("alert: the sink refused the message for good")

// Webhook headers. The signature is
//
//	X-Steward-Signature: sha256=HEX(HMAC-SHA256(key, TIMESTAMP + "." + BODY))
//
// with TIMESTAMP the X-Steward-Timestamp header (Unix seconds) and BODY
// the exact request body; X-Steward-Delivery is the outbox id, the same
// on every attempt. See VerifyWebhook.
const (
	HeaderTimestamp = "X-Steward-Timestamp"
	HeaderSignature = "X-Steward-Signature"
	HeaderDelivery  = "X-Steward-Delivery"
)

// WebhookBody is the JSON a webhook sink posts.
type WebhookBody struct {
	ID int64 `json:"id"` // the delivery id (X-Steward-Delivery)
	Alert
	Title string `json:"title"`
}

// Sign returns the X-Steward-Signature value of body sent at timestamp ts.
func Sign(key []byte, ts int64, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(strconv.FormatInt(ts, 10)))
	m.Write([]byte("."))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// VerifyWebhook checks a webhook request's signature and refuses a
// timestamp further than tolerance from now (a replay of an old request).
// A receiver also drops a delivery id it has already seen within
// tolerance (a replay of a fresh one, or an at-least-once redelivery).
func VerifyWebhook(key []byte, h http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	ts, err := strconv.ParseInt(h.Get(HeaderTimestamp), 10, 64)
	if err != nil {
		return fmt.Errorf("alert: %s is missing or not Unix seconds", HeaderTimestamp)
	}
	if d := now.Sub(time.Unix(ts, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("alert: the webhook's timestamp is %v away from now (more than %v): a replay or a wrong clock", d.Round(time.Second), tolerance)
	}
	if !hmac.Equal([]byte(h.Get(HeaderSignature)), []byte(Sign(key, ts, body))) {
		return errors.New("alert: the webhook's signature does not match its body and timestamp")
	}
	return nil
}

// Options are what sinks share.
type Options struct {
	// HTTPClient for the HTTP sinks (nil: one with a 30s timeout).
	HTTPClient *http.Client
	Now        func() time.Time
	// Getenv and ReadFile resolve secrets (nil: os.Getenv and a bounded
	// regular-file read).
	Getenv   func(string) string
	ReadFile func(string) ([]byte, error)
}

const maxSecretFile = 64 << 10

func (o *Options) defaults() {
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	if o.ReadFile == nil {
		o.ReadFile = func(p string) ([]byte, error) { return safefile.ReadFile(p, maxSecretFile) }
	}
}

// resolve reads a secret; the error names where it looked, never the value.
func (o *Options) resolve(what string, s Secret) (string, error) {
	switch {
	case s.Value != "":
		return s.Value, nil
	case s.Env != "":
		v := o.Getenv(s.Env)
		if v == "" {
			return "", fmt.Errorf("%s: environment variable %s is empty or unset", what, s.Env)
		}
		return v, nil
	case s.File != "":
		b, err := o.ReadFile(s.File)
		if err != nil {
			return "", fmt.Errorf("%s: reading %s: %w", what, s.File, err)
		}
		v := strings.TrimSpace(string(b))
		if v == "" {
			return "", fmt.Errorf("%s: %s is empty", what, s.File)
		}
		return v, nil
	}
	return "", nil
}

// Build makes the sinks of c, reading their secrets. An error names the
// sink and what was wrong.
func Build(c *Config, o Options) (map[string]Sink, error) {
	o.defaults()
	out := map[string]Sink{}
	for name, sc := range c.Sinks {
		s, err := buildSink(sc, o)
		if err != nil {
			return nil, fmt.Errorf("alert: sinks.%s: %w", name, err)
		}
		out[name] = s
	}
	return out, nil
}

func buildSink(sc SinkConfig, o Options) (Sink, error) {
	client := o.HTTPClient
	var roots *x509.CertPool
	if sc.CAFile != "" {
		pem, err := safefile.ReadFile(sc.CAFile, 1<<20)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file: %s holds no PEM certificate", sc.CAFile)
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
		client = &http.Client{Timeout: client.Timeout, Transport: tr}
	}
	switch sc.Type {
	case SinkWebhook:
		key, err := o.resolve("secret", sc.Secret)
		if err != nil {
			return nil, err
		}
		return &webhook{url: sc.URL, key: []byte(key), client: client, now: o.Now}, nil
	case SinkSlack:
		u := sc.URL
		if u == "" {
			var err error
			if u, err = o.resolve("url_secret", sc.URLSecret); err != nil {
				return nil, err
			}
			if err := checkHTTPURL("url_secret", u); err != nil {
				return nil, err
			}
		}
		return &slack{url: u, client: client}, nil
	case SinkNtfy:
		tok, err := o.resolve("token", sc.Token)
		if err != nil {
			return nil, err
		}
		return &ntfy{url: sc.URL, token: tok, client: client}, nil
	case SinkSMTP:
		pw, err := o.resolve("password", sc.Password)
		if err != nil {
			return nil, err
		}
		server := sc.Server
		if _, _, err := net.SplitHostPort(server); err != nil {
			server = net.JoinHostPort(server, "587")
		}
		return &SMTP{Server: server, From: sc.From, To: sc.To, Username: sc.Username, Password: pw, RootCAs: roots, Now: o.Now}, nil
	}
	return nil, fmt.Errorf("unknown type %q", sc.Type)
}

// post sends body and classifies the answer: 2xx ok, 408/429/5xx
// retryable, other 4xx permanent. The URL (which may hold a secret, as a
// Slack webhook's does) is never in the error.
func post(ctx context.Context, client *http.Client, url string, hdr http.Header, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%w: building the request failed", ErrPermanent)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		var ue interface{ Unwrap() error }
		if errors.As(err, &ue) {
			err = ue.Unwrap() // *url.Error carries the URL: drop it
		}
		return fmt.Errorf("posting: %v", err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		return nil
	case c == http.StatusRequestTimeout || c == http.StatusTooManyRequests || c >= 500:
		return fmt.Errorf("the receiver answered %s", resp.Status)
	default:
		return fmt.Errorf("%w: the receiver answered %s", ErrPermanent, resp.Status)
	}
}

type webhook struct {
	url    string
	key    []byte
	client *http.Client
	now    func() time.Time
}

func (w *webhook) Send(ctx context.Context, m Message) error {
	body, err := json.Marshal(WebhookBody{ID: m.ID, Alert: m.Alert, Title: m.Alert.Title()})
	if err != nil {
		return fmt.Errorf("%w: encoding: %v", ErrPermanent, err)
	}
	ts := w.now().Unix()
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	h.Set(HeaderSignature, Sign(w.key, ts, body))
	h.Set(HeaderDelivery, strconv.FormatInt(m.ID, 10))
	return post(ctx, w.client, w.url, h, body)
}

// SlackBody is what the Slack/Mattermost sink posts: the incoming
// webhook's plain "text" message, which both accept.
type SlackBody struct {
	Text string `json:"text"`
}

type slack struct {
	url    string
	client *http.Client
}

func (s *slack) Send(ctx context.Context, m Message) error {
	body, _ := json.Marshal(SlackBody{Text: "*" + m.Alert.Title() + "*\n" + m.Alert.Text()})
	return post(ctx, s.client, s.url, http.Header{"Content-Type": {"application/json"}}, body)
}

type ntfy struct {
	url, token string
	client     *http.Client
}

// ntfy publishes to the topic URL: the body is the message, the title,
// tags and priority go in ntfy's headers.
func (n *ntfy) Send(ctx context.Context, m Message) error {
	h := http.Header{}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Title", m.Alert.Title())
	h.Set("Tags", strings.ReplaceAll(m.Alert.Event, ".", "_"))
	prio := "default"
	switch m.Alert.Event {
	case ReceiptsBroken, HostSilent, OpFailed:
		prio = "high"
	}
	h.Set("Priority", prio)
	if n.token != "" {
		h.Set("Authorization", "Bearer "+n.token)
	}
	return post(ctx, n.client, n.url, h, []byte(m.Alert.Text()))
}

// SMTP sends e-mail. It requires STARTTLS (verified against RootCAs, or
// the system's roots) before anything else, authentication included: a
// server that does not offer it is refused, never spoken to in clear.
type SMTP struct {
	Server   string // host:port
	From     string
	To       []string
	Username string // empty: no AUTH
	Password string
	RootCAs  *x509.CertPool
	Now      func() time.Time
}

// ErrNoSTARTTLS: the SMTP server does not offer STARTTLS.
var ErrNoSTARTTLS = errors.New("alert: the SMTP server does not offer STARTTLS; steward sends mail only over TLS")

// Send implements Sink.
func (s *SMTP) Send(ctx context.Context, m Message) error {
	host, _, err := net.SplitHostPort(s.Server)
	if err != nil {
		return fmt.Errorf("%w: server %q is not host:port", ErrPermanent, s.Server)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", s.Server)
	if err != nil {
		return fmt.Errorf("connecting to %s: %w", s.Server, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	} else {
		conn.SetDeadline(time.Now().Add(time.Minute))
	}
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		return fmt.Errorf("SMTP greeting from %s: %w", s.Server, err)
	}
	defer c.Close()
	if err := c.Hello("localhost"); err != nil {
		return fmt.Errorf("SMTP EHLO to %s: %w", s.Server, err)
	}
	if ok, _ := c.Extension("STARTTLS"); !ok {
		return fmt.Errorf("%w (%s)", ErrNoSTARTTLS, s.Server)
	}
	if err := c.StartTLS(&tls.Config{ServerName: host, RootCAs: s.RootCAs, MinVersion: tls.VersionTLS12}); err != nil {
		return fmt.Errorf("SMTP STARTTLS with %s: %w", s.Server, err)
	}
	if s.Username != "" {
		if err := c.Auth(smtp.PlainAuth("", s.Username, s.Password, host)); err != nil {
			return fmt.Errorf("%w: SMTP authentication as %s failed: %v", ErrPermanent, s.Username, err)
		}
	}
	if err := c.Mail(s.From); err != nil {
		return fmt.Errorf("SMTP MAIL FROM: %w", err)
	}
	for _, to := range s.To {
		if err := c.Rcpt(to); err != nil {
			return fmt.Errorf("SMTP RCPT TO %s: %w", to, err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("SMTP DATA: %w", err)
	}
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	var msg bytes.Buffer
	fmt.Fprintf(&msg, "From: %s\r\nTo: %s\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <steward-%d-%d@%s>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
		s.From, strings.Join(s.To, ", "), headerSafe(m.Alert.Title()), now().Format(time.RFC1123Z), m.ID, now().UnixNano(), host)
	msg.WriteString(strings.ReplaceAll(m.Alert.Text(), "\n", "\r\n") + "\r\n")
	if _, err := w.Write(msg.Bytes()); err != nil {
		return fmt.Errorf("SMTP DATA: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("SMTP DATA: %w", err)
	}
	return c.Quit()
}

// headerSafe keeps a header value on one line.
func headerSafe(s string) string {
	return strings.NewReplacer("\r", " ", "\n", " ").Replace(s)
}
