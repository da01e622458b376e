package cli

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func TestLoginConfirmsFingerprintAndSaves0600(t *testing.T) {
	h := newTestHub(t)
	e := newOpEnv(t)
	out, stderr, err := e.run("yes\n"+h.Token+"\n", "login", "--hub", h.URL, "--context", "lab")
	if err != nil {
		t.Fatalf("login: %v\nstderr: %s", err, stderr)
	}
	if !strings.Contains(stderr, "The hub's certificate fingerprint is\n  "+h.Fingerprint+"\n") || !strings.Contains(stderr, "Trust it? [y/N]") {
		t.Errorf("login prompt:\n%s\nwant the fingerprint %s shown and a [y/N] question", stderr, h.Fingerprint)
	}
	if strings.Contains(out+stderr, h.Token) {
		t.Error("login printed the token")
	}
	st, err := os.Stat(e.config)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("config file: %v, %v; want mode 0600", st, err)
	}
	if dst, err := os.Stat(filepath.Dir(e.config)); err != nil || dst.Mode().Perm() != 0o700 {
		t.Fatalf("config dir: %v, %v; want mode 0700", dst, err)
	}
	cfg, err := loadConfig(e.config)
	if err != nil {
		t.Fatal(err)
	}
	want := opContext{Hub: h.URL, Fingerprint: h.Fingerprint, Token: h.Token}
	if cfg.Current != "lab" || cfg.Contexts["lab"] == nil || *cfg.Contexts["lab"] != want {
		t.Fatalf("saved config: current %q, lab %+v; want current lab, %+v", cfg.Current, cfg.Contexts["lab"], want)
	}

	// A second login to the same hub does not ask again: the pin is known.
	_, stderr, err = e.run(h.Token+"\n", "login", "--hub", h.URL, "--context", "lab2")
	if err != nil || strings.Contains(stderr, "Trust it?") {
		t.Fatalf("second login: %v\n%s\nwant no question for a pinned hub", err, stderr)
	}
}

func TestLoginRefusalsSaveNothing(t *testing.T) {
	h := newTestHub(t)
	other := newTestHub(t) // another certificate
	cases := []struct {
		name    string
		stdin   string
		args    []string
		wantErr string
	}{
		{"fingerprint not confirmed", "n\n" + h.Token + "\n", []string{"--hub", h.URL}, "not trusted; nothing saved"},
		{"no answer", "", []string{"--hub", h.URL}, "not trusted; nothing saved"},
		{"wrong token", "", []string{"--hub", h.URL, "--hub-fingerprint", h.Fingerprint, "--token-file", writeTemp(t, "stwo_wrong")}, "refused the operator token"},
		{"pinned fingerprint differs", "", []string{"--hub", h.URL, "--hub-fingerprint", other.Fingerprint, "--token-file", writeTemp(t, h.Token)}, "does not match the pinned"},
		{"bad fingerprint", "", []string{"--hub", h.URL, "--hub-fingerprint", "zz"}, "--hub-fingerprint"},
		{"empty token file", "", []string{"--hub", h.URL, "--hub-fingerprint", h.Fingerprint, "--token-file", writeTemp(t, "\n")}, "is empty"},
		{"no hub", "", nil, "--hub URL is required"},
		{"plain http elsewhere", "", []string{"--hub", "http://192.0.2.1:8440"}, "loopback"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newOpEnv(t)
			_, _, err := e.run(tc.stdin, append([]string{"login"}, tc.args...)...)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("login %q: got %v; want an error containing %q", tc.args, err, tc.wantErr)
			}
			if ExitCode(err) == 0 {
				t.Fatalf("exit code 0 for a refused login")
			}
			if _, err := os.Stat(e.config); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("config after a refused login: %v; want no file", err)
			}
		})
	}
}

func TestLoginRefusesChangedCertificate(t *testing.T) {
	h := newTestHub(t)
	e := newOpEnv(t)
	e.login(h, "lab")
	// The same address now presents another certificate: a context that
	// pins the old one for this URL must refuse, as ssh does.
	cfg, _ := loadConfig(e.config)
	cfg.Contexts["lab"].Fingerprint = newTestHub(t).Fingerprint
	if err := saveConfig(e.config, cfg); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(e.config)
	_, _, err := e.run("y\n"+h.Token+"\n", "login", "--hub", h.URL, "--context", "lab")
	if err == nil || !strings.Contains(err.Error(), "now presents certificate "+h.Fingerprint) {
		t.Fatalf("login to a hub whose certificate changed: got %v; want a refusal naming the new fingerprint", err)
	}
	if after, _ := os.ReadFile(e.config); string(after) != string(before) {
		t.Fatal("a refused login changed the config")
	}
}

func TestContextListUseRm(t *testing.T) {
	a, b := newTestHub(t), newTestHub(t)
	e := newOpEnv(t)
	e.login(a, "a")
	e.login(b, "b")
	repl := []string{a.URL, "https://HUB-A", b.URL, "https://HUB-B", a.Fingerprint, "FP-A", b.Fingerprint, "FP-B"}
	for _, f := range []string{"json", "yaml"} {
		out, _, err := e.run("", "context", "list", "-o", f)
		if err != nil {
			t.Fatalf("context list -o %s: %v", f, err)
		}
		if strings.Contains(out, a.Token) || strings.Contains(out, b.Token) {
			t.Fatalf("context list printed a token")
		}
		golden(t, "context-list."+f, out, repl...)
	}
	if _, _, err := e.run("", "context", "use", "a"); err != nil {
		t.Fatal(err)
	}
	if cfg, _ := loadConfig(e.config); cfg.Current != "a" {
		t.Fatalf("after use a: current %q", cfg.Current)
	}
	if _, _, err := e.run("", "context", "use", "nope"); err == nil || !strings.Contains(err.Error(), `no context "nope"`) {
		t.Fatalf("use nope: got %v; want no such context", err)
	}
	if _, _, err := e.run("", "context", "rm", "a"); err != nil {
		t.Fatal(err)
	}
	if cfg, _ := loadConfig(e.config); cfg.Current != "" || cfg.Contexts["a"] != nil || cfg.Contexts["b"] == nil {
		t.Fatalf("after rm a: %+v", cfg)
	}
	if _, _, err := e.run("", "context", "list", "-o", "xml"); ExitCode(err) != ExitUsage {
		t.Fatalf("-o xml: got %v (exit %d); want exit %d", err, ExitCode(err), ExitUsage)
	}
}

// targetOf resolves the operator target of a command with args as flags.
func targetOf(t *testing.T, args ...string) (opTarget, error) {
	t.Helper()
	cmd := &cobra.Command{Use: "x"}
	addOperatorFlags(cmd)
	if err := cmd.Flags().Parse(args); err != nil {
		t.Fatal(err)
	}
	return operatorTarget(cmd)
}

func TestOperatorTargetPrecedence(t *testing.T) {
	a, b := newTestHub(t), newTestHub(t)
	e := newOpEnv(t)
	e.login(a, "a")
	e.login(b, "b") // current

	got, err := targetOf(t, "--login-file", e.config)
	if err != nil || got.Hub != b.URL || got.Token != b.Token || got.Fingerprint != b.Fingerprint {
		t.Fatalf("current context: %+v, %v; want hub b", got, err)
	}
	got, err = targetOf(t, "--login-file", e.config, "--context", "a")
	if err != nil || got.Hub != a.URL || got.Token != a.Token || got.Context != "a" {
		t.Fatalf("--context a: %+v, %v; want hub a", got, err)
	}
	// --hub naming another hub than the context's never gets its token.
	_, err = targetOf(t, "--login-file", e.config, "--context", "a", "--hub", b.URL)
	if err == nil || !strings.Contains(err.Error(), "not sent elsewhere") {
		t.Fatalf("--hub b with context a: got %v; want a refusal to send a's token", err)
	}
	// --hub naming the context's own hub keeps its pin and token.
	got, err = targetOf(t, "--login-file", e.config, "--hub", b.URL+"/")
	if err != nil || got.Token != b.Token || got.Fingerprint != b.Fingerprint {
		t.Fatalf("--hub b/ with current b: %+v, %v", got, err)
	}
	_, err = targetOf(t, "--config", filepath.Join(t.TempDir(), "none.yaml"))
	if err == nil || !strings.Contains(err.Error(), "steward login") {
		t.Fatalf("no config: got %v; want advice to log in", err)
	}
	_, err = targetOf(t, "--login-file", e.config, "--context", "zz")
	if err == nil || !strings.Contains(err.Error(), `no context "zz"`) {
		t.Fatalf("--context zz: got %v", err)
	}

	// The client really talks to the hub with the resolved token and pin.
	got, _ = targetOf(t, "--login-file", e.config, "--context", "a")
	c, err := got.Client()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.JSON(t.Context(), "GET", "/v1/hosts", nil, nil, nil); err != nil {
		t.Fatalf("GET /v1/hosts with context a: %v", err)
	}
}

func TestConfigErrorsNameFileAndLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	for _, tc := range []struct{ body, want string }{
		{"current-context: a\ncontexts:\n  a:\n    hub: https://h:1\n    token: t\n    colour: red\n", "line 6"},
		{"contexts:\n  a:\n    hub: ftp://h\n    token: t\n", "contexts.a.hub"},
		{"current-context: b\n", `current-context "b"`},
		{"contexts: [\n", "line"},
	} {
		os.WriteFile(path, []byte(tc.body), 0o600)
		_, err := loadConfig(path)
		if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("config %q: got %v; want an error naming %s and %q", tc.body, err, path, tc.want)
		}
	}
}

func TestOutputYAMLKeepsJSONFieldsAndOrder(t *testing.T) {
	v := struct {
		Zed  string         `json:"zed"`
		Alph int            `json:"alph"`
		Num  string         `json:"num"`
		List []any          `json:"list"`
		Obj  map[string]int `json:"obj"`
		Nil  *int           `json:"nil"`
	}{"z", 3, "0123", []any{1.5, true, "yes"}, map[string]int{"b": 2, "a": 1}, nil}
	var sb strings.Builder
	if err := writeOutput(&sb, outputYAML, v, nil); err != nil {
		t.Fatal(err)
	}
	want := "zed: z\nalph: 3\nnum: \"0123\"\nlist:\n  - 1.5\n  - true\n  - \"yes\"\nobj:\n  a: 1\n  b: 2\nnil: null\n"
	if sb.String() != want {
		t.Fatalf("yaml:\n%s\nwant:\n%s", sb.String(), want)
	}
}

func writeTemp(t *testing.T, s string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestLoginFileFlag: operator commands take their login file from
// --login-file or STEWARD_LOGIN_FILE; STEWARD_CONFIG, the settings file
// of steward hub, agent and sim, never redirects them; the old --config
// still works, with a deprecation notice.
func TestLoginFileFlag(t *testing.T) {
	h := newTestHub(t)
	e := newOpEnv(t)
	e.login(h, "a")
	settings := filepath.Join(t.TempDir(), "hub.yaml")
	if err := os.WriteFile(settings, []byte("listen: 127.0.0.1:0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("XDG_CONFIG_HOME", t.TempDir()) // the default login file: none
	t.Setenv("STEWARD_CONFIG", settings)
	run := func(args ...string) (string, error) {
		var out, errb bytes.Buffer
		err := RunIO(t.Context(), args, strings.NewReader(""), &out, &errb)
		return errb.String(), err
	}
	if stderr, err := run("hosts", "list"); err == nil || !strings.Contains(err.Error(), "steward login") {
		t.Fatalf("hosts list with only STEWARD_CONFIG set: %v (stderr %q); want advice to log in (STEWARD_CONFIG is not a login file)", err, stderr)
	}
	t.Setenv("STEWARD_LOGIN_FILE", e.config)
	if stderr, err := run("hosts", "list"); err != nil {
		t.Fatalf("hosts list with STEWARD_LOGIN_FILE: %v\n%s", err, stderr)
	}
	t.Setenv("STEWARD_LOGIN_FILE", "")
	stderr, err := run("hosts", "list", "--config", e.config)
	if err != nil {
		t.Fatalf("hosts list --config (deprecated): %v\n%s", err, stderr)
	}
	if !strings.Contains(stderr, "--login-file") {
		t.Errorf("hosts list --config: stderr %q; want a notice naming --login-file", stderr)
	}
}
