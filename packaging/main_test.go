package main

import (
	"bytes"
	"crypto/md5"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/steward-pve/steward/internal/cli"
	"github.com/steward-pve/steward/internal/preflight"
)

func TestDebVersion(t *testing.T) {
	for _, tc := range []struct{ describe, when, want string }{
		{"v1.2.3", "20261205113935", "1.2.3"},
		{"v1.2.3-dirty", "20261205113935", "1.2.3+dirty"},
		{"v1.2.3-4-gabc1234", "20261205113935", "1.2.3+4.gabc1234"},
		{"v1.2.3-4-gabc1234-dirty", "20261205113935", "1.2.3+4.gabc1234+dirty"},
		{"v0.1.0~rc1", "20261205113935", "0.1.0~rc1"},
		{"9d919a1", "20261205113935", "0~20261205113935.g9d919a1"},
		{"9d919a1-dirty", "20261205113935", "0~20261205113935.g9d919a1+dirty"},
	} {
		got, err := debVersion(tc.describe, tc.when)
		if err != nil || got != tc.want {
			t.Errorf("debVersion(%q, %q) = %q, %v; want %q", tc.describe, tc.when, got, err, tc.want)
		}
	}
	for _, tc := range []struct{ describe, when string }{
		{"v1.2.3-rc1", "20261205113935"}, // a hyphen would start a Debian revision
		{"release-1", "20261205113935"},
		{"9d919a1", "yesterday"},
		{"", ""},
	} {
		if got, err := debVersion(tc.describe, tc.when); err == nil {
			t.Errorf("debVersion(%q, %q) = %q; want an error", tc.describe, tc.when, got)
		}
	}
}

// TestDebVersionOrder: versions must sort as the commits do, by dpkg's own
// rules, or apt would refuse an upgrade or take a downgrade for one.
func TestDebVersionOrder(t *testing.T) {
	dpkg := needTool(t, "dpkg")
	// Each is older than the next.
	order := []string{"0~20261205113935.g9d919a1", "0~20261206000000.gabc1234", "0.1.0~rc1", "0.1.0", "0.1.0+4.gabc1234", "0.1.0+12.g0000000", "0.1.1"}
	for i := 0; i+1 < len(order); i++ {
		cmd := exec.CommandContext(t.Context(), dpkg, "--compare-versions", order[i], "lt", order[i+1])
		if err := cmd.Run(); err != nil {
			t.Errorf("dpkg --compare-versions %s lt %s: %v; want true", order[i], order[i+1], err)
		}
	}
}

func TestDebArch(t *testing.T) {
	for goarch, want := range map[string]string{"amd64": "amd64", "arm64": "arm64", "386": "i386", "arm": "armhf", "ppc64le": "ppc64el"} {
		if got, err := debArch(goarch); err != nil || got != want {
			t.Errorf("debArch(%q) = %q, %v; want %q", goarch, got, err, want)
		}
	}
	if _, err := debArch("wasm"); err == nil || !strings.Contains(err.Error(), "wasm") {
		t.Errorf("debArch(wasm) error = %v; want one naming wasm", err)
	}
}

func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found: the package tests need Debian's dpkg (apt-get install dpkg)", name)
	}
	return p
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.Bytes())
	}
	return string(out)
}

// TestPackage builds the .deb (around a quickly built binary) and checks
// it as dpkg sees it: control fields, the exact file list with modes and
// owners, conffiles, md5sums, the maintainer scripts, the units and the
// completions, and that the packaged binary runs.
func TestPackage(t *testing.T) {
	dpkgDeb := needTool(t, "dpkg-deb")
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "steward")
	run(t, "go", "build", "-ldflags", "-X "+modulePath+"/internal/cli.Version=1.2.3", "-o", bin, modulePath+"/cmd/steward")
	deb, err := build(t.Context(), options{OutDir: filepath.Join(tmp, "dist"), Version: "1.2.3", Arch: runtime.GOARCH,
		Binary: bin, Maintainer: "Test <test@example.invalid>"})
	if err != nil {
		t.Fatal(err)
	}
	arch, _ := debArch(runtime.GOARCH)
	if want := filepath.Join(tmp, "dist", "steward_1.2.3_"+arch+".deb"); deb != want {
		t.Errorf("package path %s; want %s", deb, want)
	}

	t.Run("control", func(t *testing.T) {
		for field, want := range map[string]string{
			"Package": "steward", "Version": "1.2.3", "Architecture": arch, "Depends": "passwd",
			"Maintainer": "Test <test@example.invalid>", "Section": "admin", "Priority": "optional",
		} {
			if got := strings.TrimSpace(run(t, dpkgDeb, "--field", deb, field)); got != want {
				t.Errorf("control %s: %q; want %q", field, got, want)
			}
		}
		size := strings.TrimSpace(run(t, dpkgDeb, "--field", deb, "Installed-Size"))
		fi, err := os.Stat(bin)
		if err != nil {
			t.Fatal(err)
		}
		var kib int64
		if _, err := fmt.Sscan(size, &kib); err != nil || kib < fi.Size()/1024 {
			t.Errorf("Installed-Size %q; want at least the binary's %d KiB", size, fi.Size()/1024)
		}
	})

	t.Run("files", func(t *testing.T) {
		want := map[string]string{ // path -> mode owner
			"./":                           "drwxr-xr-x root/root",
			"./etc/":                       "drwxr-xr-x root/root",
			"./etc/steward/":               "drwxr-x--- root/root",
			"./etc/steward/agent.env":      "-rw-r----- root/root",
			"./etc/steward/hub.env":        "-rw-r----- root/root",
			"./usr/":                       "drwxr-xr-x root/root",
			"./usr/bin/":                   "drwxr-xr-x root/root",
			"./usr/bin/steward":            "-rwxr-xr-x root/root",
			"./usr/lib/":                   "drwxr-xr-x root/root",
			"./usr/lib/systemd/":           "drwxr-xr-x root/root",
			"./usr/lib/systemd/system/":    "drwxr-xr-x root/root",
			"./usr/share/":                 "drwxr-xr-x root/root",
			"./usr/share/doc/":             "drwxr-xr-x root/root",
			"./usr/share/doc/steward/":     "drwxr-xr-x root/root",
			"./usr/share/bash-completion/": "drwxr-xr-x root/root",
			"./usr/share/bash-completion/completions/":           "drwxr-xr-x root/root",
			"./usr/share/zsh/":                                   "drwxr-xr-x root/root",
			"./usr/share/zsh/vendor-completions/":                "drwxr-xr-x root/root",
			"./usr/share/fish/":                                  "drwxr-xr-x root/root",
			"./usr/share/fish/vendor_completions.d/":             "drwxr-xr-x root/root",
			"./usr/lib/systemd/system/steward-agent.service":     "-rw-r--r-- root/root",
			"./usr/lib/systemd/system/steward-hub.service":       "-rw-r--r-- root/root",
			"./usr/share/doc/steward/copyright":                  "-rw-r--r-- root/root",
			"./usr/share/bash-completion/completions/steward":    "-rw-r--r-- root/root",
			"./usr/share/zsh/vendor-completions/_steward":        "-rw-r--r-- root/root",
			"./usr/share/fish/vendor_completions.d/steward.fish": "-rw-r--r-- root/root",
		}
		got := map[string]string{}
		for line := range strings.Lines(run(t, dpkgDeb, "--contents", deb)) {
			f := strings.Fields(line)
			if len(f) != 6 {
				t.Fatalf("dpkg-deb --contents line %q: want 6 fields", line)
			}
			got[f[5]] = f[0] + " " + f[1]
		}
		for p, w := range want {
			if got[p] != w {
				t.Errorf("%s: %q; want %q", p, got[p], w)
			}
		}
		for p := range got {
			if _, ok := want[p]; !ok {
				t.Errorf("unexpected file in the package: %s", p)
			}
		}
	})

	ctl := filepath.Join(tmp, "control")
	run(t, dpkgDeb, "--control", deb, ctl)
	root := filepath.Join(tmp, "root")
	run(t, dpkgDeb, "--extract", deb, root)
	read := func(t *testing.T, p string) string {
		t.Helper()
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}

	t.Run("conffiles", func(t *testing.T) {
		if got, want := read(t, filepath.Join(ctl, "conffiles")), "/etc/steward/agent.env\n/etc/steward/hub.env\n"; got != want {
			t.Errorf("conffiles %q; want %q", got, want)
		}
	})

	t.Run("md5sums", func(t *testing.T) {
		n := 0
		for line := range strings.Lines(read(t, filepath.Join(ctl, "md5sums"))) {
			sum, p, ok := strings.Cut(strings.TrimSpace(line), "  ")
			if !ok {
				t.Fatalf("md5sums line %q", line)
			}
			n++
			data := read(t, filepath.Join(root, p))
			if got := fmt.Sprintf("%x", md5.Sum([]byte(data))); got != sum {
				t.Errorf("md5sums %s: %s; the file's is %s", p, sum, got)
			}
		}
		if n != 7 { // every file but the two conffiles
			t.Errorf("md5sums lists %d files; want 7", n)
		}
	})

	t.Run("maintainer scripts", func(t *testing.T) {
		for _, s := range []string{"postinst", "prerm", "postrm"} {
			p := filepath.Join(ctl, s)
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatalf("%s: %v", s, err)
			}
			if fi.Mode().Perm() != 0o755 {
				t.Errorf("%s mode %v; want 0755", s, fi.Mode().Perm())
			}
			if out, err := exec.CommandContext(t.Context(), "sh", "-n", p).CombinedOutput(); err != nil {
				t.Errorf("sh -n %s: %v\n%s", s, err, out)
			}
			if !strings.HasPrefix(read(t, p), "#!/bin/sh\n") {
				t.Errorf("%s does not start with #!/bin/sh", s)
			}
		}
		postinst, postrm := read(t, filepath.Join(ctl, "postinst")), read(t, filepath.Join(ctl, "postrm"))
		if !strings.Contains(postinst, "useradd --system") {
			t.Error("postinst does not create the steward system user")
		}
		// The user goes only on purge: userdel appears after "purge)" and
		// before the next case label.
		purge := postrm[strings.Index(postrm, "purge)"):]
		purge = purge[:strings.Index(purge, ";;")]
		if !strings.Contains(purge, "userdel steward") || strings.Count(postrm, "userdel") != 1 {
			t.Errorf("postrm must delete the steward user on purge only; its purge branch:\n%s", purge)
		}
	})

	t.Run("units", func(t *testing.T) {
		for unit, exec := range map[string]string{"steward-agent.service": "ExecStart=/usr/bin/steward agent\n", "steward-hub.service": "ExecStart=/usr/bin/steward hub\n"} {
			u := read(t, filepath.Join(root, "usr/lib/systemd/system", unit))
			for _, want := range []string{exec, "User=steward\n", "Group=steward\n", "NoNewPrivileges=yes\n", "WantedBy=multi-user.target\n"} {
				if !strings.Contains(u, want) {
					t.Errorf("%s lacks %q", unit, want)
				}
			}
		}
		agent := read(t, filepath.Join(root, "usr/lib/systemd/system/steward-agent.service"))
		if strings.Index(agent, "EnvironmentFile=-/etc/steward/agent.env") < strings.LastIndex(agent, "Environment=STEWARD_") {
			t.Error("steward-agent.service: EnvironmentFile must follow the Environment= defaults it overrides")
		}
	})

	t.Run("completions", func(t *testing.T) {
		for p, want := range map[string]string{
			"usr/share/bash-completion/completions/steward":    "# bash completion V2 for steward",
			"usr/share/zsh/vendor-completions/_steward":        "#compdef steward",
			"usr/share/fish/vendor_completions.d/steward.fish": "# fish completion for steward",
		} {
			if got := read(t, filepath.Join(root, p)); !strings.HasPrefix(got, want) {
				t.Errorf("%s starts %q; want %q", p, got[:min(len(got), 40)], want)
			}
		}
		if out, err := exec.CommandContext(t.Context(), "bash", "-n", filepath.Join(root, "usr/share/bash-completion/completions/steward")).CombinedOutput(); err != nil {
			t.Errorf("bash -n on the bash completion: %v\n%s", err, out)
		}
	})

	t.Run("binary runs", func(t *testing.T) {
		out := run(t, filepath.Join(root, "usr/bin/steward"), "--version")
		if !strings.HasPrefix(out, "steward 1.2.3 ") {
			t.Errorf("steward --version printed %q; want steward 1.2.3 ...", out)
		}
	})
}

// TestBuildRefusesBadInput: a bad version or architecture is refused
// before anything is built or written.
func TestBuildRefusesBadInput(t *testing.T) {
	out := filepath.Join(t.TempDir(), "dist")
	for _, o := range []options{
		{OutDir: out, Version: "v1.2.3", Arch: runtime.GOARCH, Binary: "/nonexistent"},
		{OutDir: out, Version: "1.2.3-rc1", Arch: runtime.GOARCH, Binary: "/nonexistent"},
		{OutDir: out, Version: "1.2.3", Arch: "wasm", Binary: "/nonexistent"},
	} {
		if _, err := build(t.Context(), o); err == nil {
			t.Errorf("build(%+v) succeeded; want an error", o)
		}
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("%s exists after refused builds (err %v); want nothing written", out, err)
	}
}

// TestSettingsNameRealFlags: a STEWARD_ variable that matches no flag is
// ignored without a word, so every one the units set, and every one the
// .env files suggest, must be the environment name of a flag of the
// command the unit runs.
func TestSettingsNameRealFlags(t *testing.T) {
	root := cli.Tree()
	envOf := func(cmdName string) map[string]bool {
		c, _, err := root.Find([]string{cmdName})
		if err != nil || c.Name() != cmdName {
			t.Fatalf("no command %q in the CLI", cmdName)
		}
		m := map[string]bool{}
		add := func(f *pflag.Flag) { m[cli.EnvName(f.Name)] = true }
		c.LocalFlags().VisitAll(add) // persistent ones declared here included
		c.InheritedFlags().VisitAll(add)
		return m
	}
	varName := regexp.MustCompile(`STEWARD_[A-Z0-9_]+`)
	for _, tc := range []struct{ unit, env, command string }{
		{"steward-agent.service", "agent.env", "agent"},
		{"steward-hub.service", "hub.env", "hub"},
	} {
		flags := envOf(tc.command)
		for _, name := range []string{tc.unit, tc.env} {
			b, err := assets.ReadFile(name)
			if err != nil {
				t.Fatal(err)
			}
			found := varName.FindAllString(string(b), -1)
			if len(found) == 0 {
				t.Errorf("%s names no STEWARD_ variable", name)
			}
			for _, v := range found {
				if !flags[v] {
					t.Errorf("%s: %s is no flag of `steward %s`", name, v, tc.command)
				}
			}
		}
		u, _ := assets.ReadFile(tc.unit)
		if !strings.Contains(string(u), "ExecStart=/usr/bin/steward "+tc.command+"\n") {
			t.Errorf("%s does not run `steward %s`", tc.unit, tc.command)
		}
	}
}

// TestReadmeRoleCoversAgentCheck: the PVE role README.md tells operators
// to create must hold every privilege `steward agent check` demands
// (preflight's lists, taken from what steward's calls need), or an
// operator following the README would fail the check.
func TestReadmeRoleCoversAgentCheck(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`pveum role add Steward --privs "([^"]+)"`).FindSubmatch(b)
	if m == nil {
		t.Fatal(`README.md has no line pveum role add Steward --privs "..."`)
	}
	role := map[string]bool{}
	for _, p := range strings.Split(string(m[1]), ",") {
		role[strings.TrimSpace(p)] = true
	}
	needs := append(append([]preflight.Need{}, preflight.GuestNeeds...), preflight.StorageNeeds...)
	if len(needs) < 5 {
		t.Fatalf("preflight lists %d privileges; want the guest and storage ones", len(needs))
	}
	for _, n := range needs {
		if !role[n.Priv] {
			t.Errorf("README's Steward role lacks %s, which steward agent check needs (%s)", n.Priv, n.For)
		}
	}
}
