// Command packaging builds steward's Debian package for Proxmox VE hosts
// (Proxmox VE is Debian): the static steward binary, systemd units for the
// agent and the hub, their settings under /etc/steward (conffiles, kept on
// upgrade), shell completions for bash, zsh and fish, and maintainer
// scripts that create the steward system user (postinst) and delete it on
// purge (postrm). Run it from anywhere inside the repository:
//
//	go run ./packaging [-o dist] [-version 1.2.3] [-arch amd64] [-binary FILE]
//
// It prints the path of the .deb it wrote, dist/steward_VERSION_ARCH.deb.
// The version defaults to one derived from `git describe` (a tag v1.2.3 is
// 1.2.3; commits after it make 1.2.3+4.gHASH; with no tag,
// 0~YYYYMMDDHHMMSS.gHASH from the commit time, which sorts below any
// release). The package is assembled in a staging tree and built by
// dpkg-deb, so it needs Debian's dpkg (on Debian and Ubuntu it is always
// there).
package main

import (
	"bytes"
	"context"
	"crypto/md5"
	"embed"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"

	"github.com/steward-pve/steward/internal/cli"
)

//go:embed steward-agent.service steward-hub.service agent.env hub.env debian/postinst debian/prerm debian/postrm
var assets embed.FS

// options are the command's flags.
type options struct {
	OutDir     string // where the .deb goes; created if missing
	Version    string // Debian version; "" derives it from git describe
	Arch       string // GOARCH of the binary; the Debian architecture follows
	Binary     string // a steward binary to package; "" builds one
	Maintainer string
}

func main() {
	var o options
	flag.StringVar(&o.OutDir, "o", "dist", "directory to write the .deb to")
	flag.StringVar(&o.Version, "version", "", "package version (default: from git describe)")
	flag.StringVar(&o.Arch, "arch", runtime.GOARCH, "GOARCH to build for (amd64, arm64, ...)")
	flag.StringVar(&o.Binary, "binary", "", "package this steward binary instead of building one (it must be built for -arch)")
	flag.StringVar(&o.Maintainer, "maintainer", "steward developers <steward@steward-pve.invalid>", "the package's Maintainer field")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "packaging: unexpected arguments %q\n", flag.Args())
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	deb, err := build(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "packaging:", err)
		os.Exit(1)
	}
	fmt.Println(deb)
}

const (
	modulePath = "github.com/steward-pve/steward"
	homepage   = "https://github.com/steward-pve/steward"
)

// file is one regular file of the package's data.
type file struct {
	path     string // absolute, as installed
	mode     fs.FileMode
	data     []byte
	conffile bool
}

// dirModes are directories whose mode is not 0755.
var dirModes = map[string]fs.FileMode{
	// The agent reads its token, CA, signers and desired state here;
	// postinst gives the steward group read access, nobody else has any.
	"/etc/steward": 0o750,
}

// build stages the package and runs dpkg-deb; it returns the .deb's path.
func build(ctx context.Context, o options) (string, error) {
	arch, err := debArch(o.Arch)
	if err != nil {
		return "", err
	}
	version := o.Version
	if version == "" {
		if version, err = gitVersion(ctx); err != nil {
			return "", err
		}
	}
	if err := checkVersion(version); err != nil {
		return "", err
	}
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		return "", errors.New("dpkg-deb not found: building the .deb needs Debian's dpkg (apt-get install dpkg)")
	}
	stage, err := os.MkdirTemp("", "steward-deb-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(stage)

	bin := o.Binary
	if bin == "" {
		bin = filepath.Join(stage, "steward.bin")
		if err := buildBinary(ctx, o.Arch, version, bin); err != nil {
			return "", err
		}
	}
	binData, err := os.ReadFile(bin)
	if err != nil {
		return "", fmt.Errorf("reading the steward binary: %w", err)
	}
	files, err := packageFiles(binData)
	if err != nil {
		return "", err
	}
	root := filepath.Join(stage, "root")
	if err := stageTree(root, files); err != nil {
		return "", err
	}
	if err := writeControl(root, files, controlFields(version, arch, o.Maintainer, installedSize(files))); err != nil {
		return "", err
	}
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return "", err
	}
	deb := filepath.Join(o.OutDir, fmt.Sprintf("steward_%s_%s.deb", version, arch))
	// gzip: readable by every dpkg and by the standard library.
	cmd := exec.CommandContext(ctx, "dpkg-deb", "--root-owner-group", "-Zgzip", "--build", root, deb)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("dpkg-deb --build: %w\n%s", err, out)
	}
	return deb, nil
}

// packageFiles lists every file the package installs.
func packageFiles(binary []byte) ([]file, error) {
	asset := func(name string) []byte {
		b, err := assets.ReadFile(name)
		if err != nil {
			panic(err) // embedded at compile time
		}
		return b
	}
	files := []file{
		{path: "/usr/bin/steward", mode: 0o755, data: binary},
		{path: "/usr/lib/systemd/system/steward-agent.service", mode: 0o644, data: asset("steward-agent.service")},
		{path: "/usr/lib/systemd/system/steward-hub.service", mode: 0o644, data: asset("steward-hub.service")},
		// 0640: an operator may put a secret (STEWARD_PVE_TOKEN) here;
		// systemd reads it as root.
		{path: "/etc/steward/agent.env", mode: 0o640, data: asset("agent.env"), conffile: true},
		{path: "/etc/steward/hub.env", mode: 0o640, data: asset("hub.env"), conffile: true},
		{path: "/usr/share/doc/steward/copyright", mode: 0o644, data: []byte(copyright)},
	}
	root := cli.Tree()
	var bash, zsh, fish bytes.Buffer
	if err := root.GenBashCompletionV2(&bash, true); err != nil {
		return nil, fmt.Errorf("bash completion: %w", err)
	}
	if err := root.GenZshCompletion(&zsh); err != nil {
		return nil, fmt.Errorf("zsh completion: %w", err)
	}
	if err := root.GenFishCompletion(&fish, true); err != nil {
		return nil, fmt.Errorf("fish completion: %w", err)
	}
	// Where Debian's bash-completion, zsh and fish packages look.
	files = append(files,
		file{path: "/usr/share/bash-completion/completions/steward", mode: 0o644, data: bash.Bytes()},
		file{path: "/usr/share/zsh/vendor-completions/_steward", mode: 0o644, data: zsh.Bytes()},
		file{path: "/usr/share/fish/vendor_completions.d/steward.fish", mode: 0o644, data: fish.Bytes()},
	)
	return files, nil
}

const copyright = `Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: steward
Source: ` + homepage + `

Files: *
Copyright: the steward authors
License: Apache-2.0
 On Debian systems the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
`

// stageTree writes files under root with exact modes (no umask) and
// creates their directories, 0755 unless dirModes says otherwise.
func stageTree(root string, files []file) error {
	mkdir := func(rel string) error {
		p := root
		for _, part := range strings.Split(strings.Trim(rel, "/"), "/") {
			p = filepath.Join(p, part)
			if err := os.Mkdir(p, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
				return err
			}
			mode, ok := dirModes["/"+filepath.ToSlash(strings.TrimPrefix(p, root+string(filepath.Separator)))]
			if !ok {
				mode = 0o755
			}
			if err := os.Chmod(p, mode); err != nil {
				return err
			}
		}
		return nil
	}
	if err := os.Mkdir(root, 0o755); err != nil {
		return err
	}
	if err := os.Chmod(root, 0o755); err != nil { // the tar's "./" entry
		return err
	}
	for _, f := range files {
		if err := mkdir(path.Dir(f.path)); err != nil {
			return err
		}
		p := filepath.Join(root, filepath.FromSlash(f.path))
		if err := os.WriteFile(p, f.data, f.mode); err != nil {
			return err
		}
		if err := os.Chmod(p, f.mode); err != nil {
			return err
		}
	}
	return nil
}

// controlFields returns DEBIAN/control.
func controlFields(version, arch, maintainer string, sizeKiB int64) string {
	return fmt.Sprintf(`Package: steward
Version: %s
Architecture: %s
Maintainer: %s
Installed-Size: %d
Depends: passwd
Suggests: openssh-client
Section: admin
Priority: optional
Homepage: %s
Description: declarative, pull-based control of Proxmox VE guests
 An agent on each Proxmox VE host converges the host's QEMU VMs and LXC
 containers toward desired state through the local PVE API; a hub keeps the
 fleet's desired state, reports and signed jobs. Anything that destroys or
 overwrites data runs only with an operator's OpenSSH signature bound to
 that exact action on that exact guest state.
 .
 This package installs the steward binary, systemd units for the agent
 (steward-agent.service) and the hub (steward-hub.service), their settings
 in /etc/steward, and shell completions for bash, zsh and fish. It creates
 the steward system user; it enables and starts no service.
`, version, arch, maintainer, sizeKiB, homepage)
}

// installedSize is Installed-Size: KiB, each file rounded up, plus one
// for each directory.
func installedSize(files []file) int64 {
	var kib int64
	dirs := map[string]bool{}
	for _, f := range files {
		kib += (int64(len(f.data)) + 1023) / 1024
		for d := path.Dir(f.path); d != "/"; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	return kib + int64(len(dirs))
}

// writeControl writes DEBIAN/: control, conffiles, md5sums and the
// maintainer scripts.
func writeControl(root string, files []file, control string) error {
	dir := filepath.Join(root, "DEBIAN")
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	var conffiles, sums []string
	for _, f := range files {
		if f.conffile {
			conffiles = append(conffiles, f.path)
			continue // dpkg tracks conffiles' sums itself
		}
		sums = append(sums, fmt.Sprintf("%x  %s", md5.Sum(f.data), strings.TrimPrefix(f.path, "/")))
	}
	sort.Strings(conffiles)
	sort.Slice(sums, func(i, j int) bool { return sums[i][34:] < sums[j][34:] })
	ctl := []file{
		{path: "control", mode: 0o644, data: []byte(control)},
		{path: "conffiles", mode: 0o644, data: []byte(strings.Join(conffiles, "\n") + "\n")},
		{path: "md5sums", mode: 0o644, data: []byte(strings.Join(sums, "\n") + "\n")},
	}
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		b, err := assets.ReadFile("debian/" + s)
		if err != nil {
			return err
		}
		ctl = append(ctl, file{path: s, mode: 0o755, data: b})
	}
	for _, f := range ctl {
		p := filepath.Join(dir, f.path)
		if err := os.WriteFile(p, f.data, f.mode); err != nil {
			return err
		}
		if err := os.Chmod(p, f.mode); err != nil {
			return err
		}
	}
	return nil
}

// buildBinary builds a static steward for linux/goarch with its version
// stamped (`steward --version`), without the builder's paths (-trimpath).
func buildBinary(ctx context.Context, goarch, version, out string) error {
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	cmd := exec.CommandContext(ctx, goTool, "build", "-trimpath", "-buildvcs=auto",
		"-ldflags", "-s -w -X "+modulePath+"/internal/cli.Version="+version,
		"-o", out, modulePath+"/cmd/steward")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch)
	if goarch == "arm" {
		cmd.Env = append(cmd.Env, "GOARM=7") // Debian armhf
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build (run inside the steward repository): %w\n%s", err, out)
	}
	return nil
}

// debArch maps a GOARCH to Debian's architecture name.
func debArch(goarch string) (string, error) {
	m := map[string]string{"amd64": "amd64", "arm64": "arm64", "386": "i386", "arm": "armhf",
		"ppc64le": "ppc64el", "riscv64": "riscv64", "s390x": "s390x", "loong64": "loong64"}
	if a, ok := m[goarch]; ok {
		return a, nil
	}
	return "", fmt.Errorf("-arch %q: no Debian architecture for it (want one of amd64, arm64, 386, arm, ppc64le, riscv64, s390x, loong64)", goarch)
}

// gitVersion derives the package version from the checkout (see
// debVersion).
func gitVersion(ctx context.Context) (string, error) {
	git := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Env = append(os.Environ(), "TZ=UTC")
		out, err := cmd.Output()
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				err = fmt.Errorf("%w: %s", err, bytes.TrimSpace(ee.Stderr))
			}
			return "", fmt.Errorf("git %s (outside a git checkout, pass -version): %w", strings.Join(args, " "), err)
		}
		return strings.TrimSpace(string(out)), nil
	}
	desc, err := git("describe", "--tags", "--match", "v[0-9]*", "--always", "--dirty", "--abbrev=7")
	if err != nil {
		return "", err
	}
	when, err := git("log", "-1", "--format=%cd", "--date=format-local:%Y%m%d%H%M%S")
	if err != nil {
		return "", err
	}
	return debVersion(desc, when)
}

var (
	describeTag  = regexp.MustCompile(`^v([0-9][0-9A-Za-z.~+]*?)(?:-([0-9]+)-g([0-9a-f]+))?(-dirty)?$`)
	describeHash = regexp.MustCompile(`^([0-9a-f]{4,})(-dirty)?$`)
	commitTime   = regexp.MustCompile(`^[0-9]{14}$`)
	debianVer    = regexp.MustCompile(`^[0-9][0-9A-Za-z.+~]*$`)
)

// debVersion turns `git describe --tags --always --dirty` output and the
// commit time (YYYYMMDDHHMMSS, UTC) into a Debian version that sorts as
// the commits do: v1.2.3 → 1.2.3; v1.2.3-4-gabc1234 → 1.2.3+4.gabc1234
// (after 1.2.3, before 1.2.4); no tag, abc1234 → 0~TIME.gabc1234 (before
// any release); uncommitted changes add +dirty.
func debVersion(describe, when string) (string, error) {
	var v string
	if m := describeTag.FindStringSubmatch(describe); m != nil {
		v = m[1]
		if m[2] != "" {
			v += "+" + m[2] + ".g" + m[3]
		}
		if m[4] != "" {
			v += "+dirty"
		}
	} else if m := describeHash.FindStringSubmatch(describe); m != nil {
		if !commitTime.MatchString(when) {
			return "", fmt.Errorf("commit time %q: want YYYYMMDDHHMMSS", when)
		}
		v = "0~" + when + ".g" + m[1]
		if m[2] != "" {
			v += "+dirty"
		}
	} else {
		return "", fmt.Errorf("git describe gave %q: want vX.Y.Z[-N-gHASH][-dirty] or a commit hash; pass -version", describe)
	}
	return v, checkVersion(v)
}

// checkVersion accepts a Debian version without epoch or revision (steward
// is a native package).
func checkVersion(v string) error {
	if !debianVer.MatchString(v) {
		return fmt.Errorf("version %q: a Debian version starts with a digit and holds only letters, digits and . + ~", v)
	}
	return nil
}
