package hubclient_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/steward-pve/steward/internal/hub"
	"github.com/steward-pve/steward/internal/hub/store"
	"github.com/steward-pve/steward/internal/hub/store/sqlite"
	"github.com/steward-pve/steward/internal/hubclient"
	"github.com/steward-pve/steward/internal/tlspin"
	"github.com/steward-pve/steward/internal/wire"
)

// newHub starts a real hub on a loopback TLS listener and returns its URL,
// its certificate's fingerprint and an operator token.
func newHub(t *testing.T) (url, fp, opTok string) {
	t.Helper()
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "hub.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	opTok = hub.NewToken("stwo_")
	if err := st.CreateOperator(t.Context(), "alice", store.HashToken(opTok)); err != nil {
		t.Fatal(err)
	}
	h := hub.New(st, hub.Options{})
	srv := httptest.NewTLSServer(h.Handler())
	t.Cleanup(func() { h.Shutdown(); srv.Close() })
	return srv.URL, tlspin.Of(srv.Certificate().Raw), opTok
}

func TestPinnedEnroll(t *testing.T) {
	url, fp, opTok := newHub(t)
	op, err := hubclient.New(hubclient.Options{URL: url, Fingerprint: fp, Token: opTok})
	if err != nil {
		t.Fatal(err)
	}
	var jt struct {
		JoinToken string `json:"join_token"`
	}
	if err := op.JSON(t.Context(), http.MethodPost, "/v1/hosts/pve-a/join-token", nil, nil, &jt); err != nil {
		t.Fatalf("join token: %v", err)
	}
	anon := op.WithToken("")
	got, err := anon.Enroll(t.Context(), jt.JoinToken)
	if err != nil {
		t.Fatalf("enroll: %v", err)
	}
	if got.Host != "pve-a" || got.Token == "" {
		t.Fatalf("enroll: got %+v; want host pve-a and a token", got)
	}
	// A join token is single use, and the error never repeats it.
	_, err = anon.Enroll(t.Context(), jt.JoinToken)
	if !hubclient.IsCode(err, "bad_join_token") || hubclient.StatusOf(err) != 401 {
		t.Fatalf("second enroll: got %v; want 401 bad_join_token", err)
	}
	if strings.Contains(err.Error(), jt.JoinToken) {
		t.Fatalf("error %q contains the join token", err)
	}
	// The host token works on the agent API and not on the operator API.
	host := op.WithToken(got.Token)
	err = host.JSON(t.Context(), http.MethodGet, "/v1/hosts", nil, nil, nil)
	if hubclient.StatusOf(err) != http.StatusUnauthorized && hubclient.StatusOf(err) != http.StatusForbidden {
		t.Fatalf("host token on the operator API: got %v; want 401 or 403", err)
	}
	if err != nil && strings.Contains(err.Error(), got.Token) {
		t.Fatalf("error %q contains the host token", err)
	}
}

func TestFingerprintMismatch(t *testing.T) {
	url, fp, opTok := newHub(t)
	wrong := strings.Replace(fp, fp[:2], flip(fp[:2]), 1)
	c, err := hubclient.New(hubclient.Options{URL: url, Fingerprint: wrong, Token: opTok})
	if err != nil {
		t.Fatal(err)
	}
	err = c.JSON(t.Context(), http.MethodGet, "/v1/hosts", nil, nil, nil)
	var mm *hubclient.MismatchError
	if !errors.As(err, &mm) || mm.Got != fp {
		t.Fatalf("got %v; want a MismatchError naming the hub's fingerprint %s", err, fp)
	}
	if strings.Contains(err.Error(), opTok) {
		t.Fatalf("error %q contains the token", err)
	}
	// Without a pin or CA, the self-signed hub is not trusted either.
	c, _ = hubclient.New(hubclient.Options{URL: url, Token: opTok})
	if err := c.JSON(t.Context(), http.MethodGet, "/v1/hosts", nil, nil, nil); err == nil {
		t.Fatal("an unpinned self-signed hub was trusted")
	}
}

func flip(h string) string {
	if h == "00" {
		return "01"
	}
	return "00"
}

func TestProbe(t *testing.T) {
	url, fp, _ := newHub(t)
	got, err := hubclient.Probe(t.Context(), url)
	if err != nil || got != fp {
		t.Fatalf("Probe: got %q, %v; want %s", got, err, fp)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := hubclient.Probe(ctx, url); err == nil {
		t.Fatal("Probe with a cancelled context succeeded")
	}
}

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		in, want string // want "" means refused
	}{
		{"https://hub.example:8440", "https://hub.example:8440"},
		{"https://hub.example:8440/", "https://hub.example:8440"},
		{"https://hub.example/steward/", "https://hub.example/steward"},
		{"http://127.0.0.1:8440", "http://127.0.0.1:8440"},
		{"http://[::1]:8440", "http://[::1]:8440"},
		{"http://localhost:8440", "http://localhost:8440"},
		{"http://hub.example:8440", ""},
		{"http://10.0.0.5:8440", ""},
		{"ftp://hub.example", ""},
		{"hub.example:8440", ""},
		{"https://user:secret@hub.example", ""},
		{"https://hub.example/?token=x", ""},
		{"", ""},
	} {
		u, err := hubclient.ParseURL(tc.in)
		switch {
		case tc.want == "" && err == nil:
			t.Errorf("ParseURL(%q) = %s; want an error", tc.in, u)
		case tc.want != "" && err != nil:
			t.Errorf("ParseURL(%q): %v; want %s", tc.in, err, tc.want)
		case tc.want != "" && u.String() != tc.want:
			t.Errorf("ParseURL(%q) = %s; want %s", tc.in, u, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("ParseURL(%q): error %q repeats the password", tc.in, err)
		}
	}
}

func TestBoundedResponse(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(strings.Repeat("x", 2000)))
	}))
	t.Cleanup(srv.Close)
	c, err := hubclient.New(hubclient.Options{URL: srv.URL, HTTPClient: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Do(t.Context(), hubclient.Request{Method: "GET", Path: "/x", MaxResponse: 1000}); err == nil || !strings.Contains(err.Error(), "larger than 1000") {
		t.Fatalf("got %v; want a refused oversized response", err)
	}
	// A non-JSON error body still becomes an *Error with the status.
	srv2 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "bad gateway from the proxy", http.StatusBadGateway)
	}))
	t.Cleanup(srv2.Close)
	c2, _ := hubclient.New(hubclient.Options{URL: srv2.URL, HTTPClient: srv2.Client()})
	err = c2.JSON(t.Context(), "GET", "/v1/hosts", nil, nil, nil)
	if hubclient.StatusOf(err) != 502 || !strings.Contains(err.Error(), "bad gateway from the proxy") {
		t.Fatalf("got %v; want a 502 *Error with the proxy's text", err)
	}
}

// TestReceiptGapHaveSeq: the hub's chain_gap answer says where its chain
// ends in have_seq, which wins over the message; a hub from before
// have_seq is read from its message; an answer with neither is an error,
// never a guess.
func TestReceiptGapHaveSeq(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		have       uint64
		ok         bool
	}{
		{"field", `{"error":"gap (the hub holds up to seq 99; send from 100)","code":"chain_gap","have_seq":7}`, 7, true},
		{"field zero", `{"error":"gap","code":"chain_gap","have_seq":0}`, 0, true},
		{"old hub", `{"error":"gap (the hub holds up to seq 5; send from 6)","code":"chain_gap"}`, 5, true},
		{"neither", `{"error":"gap","code":"chain_gap"}`, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusConflict)
				w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			c, err := hubclient.New(hubclient.Options{URL: srv.URL, HTTPClient: srv.Client()})
			if err != nil {
				t.Fatal(err)
			}
			rc := wire.Receipt{Seq: 1, Prev: wire.ZeroHash, Type: wire.ReceiptDecision}
			rc.Hash = wire.ReceiptHash(rc)
			_, err = c.Receipts(t.Context(), wire.Receipts{Host: "h", Receipts: []wire.Receipt{rc}})
			var gap *hubclient.ReceiptGapError
			switch {
			case tc.ok && (!errors.As(err, &gap) || gap.Have != tc.have):
				t.Fatalf("err = %v; want a gap at seq %d", err, tc.have)
			case !tc.ok && (errors.As(err, &gap) || err == nil || !strings.Contains(err.Error(), "did not say")):
				t.Fatalf("err = %v; want an error saying the hub did not say where its chain ends", err)
			}
		})
	}
}
