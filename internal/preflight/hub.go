package preflight

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/steward-pve/steward/internal/hubclient"
)

// checkHub checks every hub replica the agent may use (each URL of
// cfg.Hub, on its own): see checkReplica. With several, each check's name
// ends with the replica's URL.
func checkHub(ctx context.Context, cfg Config) []Result {
	reps := cfg.Hub.Replicas()
	if len(reps) == 1 {
		return checkReplica(ctx, cfg, reps[0])
	}
	var rs []Result
	for _, c := range reps {
		for _, r := range checkReplica(ctx, cfg, c) {
			r.Check += " " + c.URL()
			rs = append(rs, r)
		}
	}
	return rs
}

// checkReplica checks that the hub at hc's URL answers (GET /healthz),
// that its certificate is the one the agent trusts, and that it accepts
// the host's token for this host (GET /v1/agent/hosts/{host}/jobs, which
// changes nothing).
func checkReplica(ctx context.Context, cfg Config, hc *hubclient.Client) []Result {
	where := hc.URL()
	resp, err := hc.Do(ctx, hubclient.Request{Method: http.MethodGet, Path: "/healthz"})
	var te *hubclient.TransportError
	var mm *hubclient.MismatchError
	switch {
	case err == nil:
	case errors.As(err, &mm):
		return []Result{
			{Check: "hub reachable", OK: true, Detail: where + " accepts connections"},
			{Check: "hub certificate", Detail: mm.Error()},
		}
	case errors.As(err, &te) && isDialError(te.Err):
		return []Result{{Check: "hub reachable", Detail: err.Error(),
			Fix: "check --hub and that the hub runs and is reachable from this host (the agent only connects out)"}}
	case errors.As(err, &te) && isHubTLSError(te.Err):
		return []Result{
			{Check: "hub reachable", OK: true, Detail: where + " accepts connections"},
			{Check: "hub certificate", Detail: err.Error(),
				Fix: "pin the hub's certificate with --hub-fingerprint (`steward hub` prints it)"},
		}
	default:
		return []Result{{Check: "hub reachable", Detail: err.Error(), Fix: "check --hub and the network path to the hub"}}
	}
	rs := []Result{{Check: "hub reachable", OK: true, Detail: where + " answers"}}
	if resp.Status != http.StatusOK {
		rs[0] = Result{Check: "hub reachable", Detail: resp.Err(http.MethodGet, "/healthz").Error(),
			Fix: "is --hub a steward hub's URL?"}
		return rs
	}
	switch {
	case strings.HasPrefix(where, "http://"):
		rs = append(rs, Result{Check: "hub certificate", OK: true, Detail: "plain http on loopback (development): no certificate"})
	case cfg.HubPinned:
		rs = append(rs, Result{Check: "hub certificate", OK: true, Detail: "matches the pinned fingerprint"})
	default:
		rs = append(rs, Result{Check: "hub certificate", OK: true, Detail: "verified"})
	}
	if cfg.HubEnrollPending {
		return append(rs, Result{Check: "hub enrollment", OK: true,
			Detail: "not enrolled yet: the agent enrolls with its --join-token when it starts (the one-time token is not spent by this check)"})
	}
	path := "/v1/agent/hosts/" + url.PathEscape(cfg.HubHost) + "/jobs"
	resp, err = hc.Do(ctx, hubclient.Request{Method: http.MethodGet, Path: path})
	if err != nil {
		return append(rs, Result{Check: "hub authentication", Detail: err.Error(), Fix: "run the check again; the hub stopped answering"})
	}
	if err := resp.Err(http.MethodGet, path); err != nil {
		fix := "see the hub's message"
		switch resp.Status {
		case http.StatusUnauthorized:
			fix = "the host token is unknown or revoked: ask an operator for a join token and enroll again (--join-token)"
		case http.StatusForbidden:
			fix = "the token belongs to another host: check --host, or enroll this host with its own join token"
		}
		return append(rs, Result{Check: "hub authentication", Detail: err.Error(), Fix: fix})
	}
	return append(rs, Result{Check: "hub authentication", OK: true, Detail: "the hub accepts the token of host " + cfg.HubHost})
}

func isHubTLSError(err error) bool {
	var ua x509.UnknownAuthorityError
	var ci x509.CertificateInvalidError
	var hn x509.HostnameError
	var cv *tls.CertificateVerificationError
	var rh tls.RecordHeaderError
	return errors.As(err, &ua) || errors.As(err, &ci) || errors.As(err, &hn) || errors.As(err, &cv) || errors.As(err, &rh) ||
		strings.Contains(err.Error(), "tls: ")
}
