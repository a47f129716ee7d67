package lab

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Suite is the Debian release the nodes run.
const Suite = "bookworm"

// rootfsRecipe is bumped whenever the way the rootfs is built changes, so the
// cache key changes with it.
const rootfsRecipe = "3"

// BasePackages are installed in every node's root file system.
var BasePackages = []string{
	"systemd", "systemd-sysv", "dbus", "iproute2", "containerd", "runc",
	"containernetworking-plugins", "iptables", "nftables", "dnsutils", "curl",
	"iputils-ping", "ca-certificates", "busybox-static", "procps", "adduser",
	"tcpdump", "less",
}

// cgroupRemountScript re-mounts the cgroup v1 controllers read-write inside a
// node, which runc needs (nspawn mounts them read-only).
const cgroupRemountScript = `#!/bin/sh
# Re-mount cgroup v1 controllers read-write so runc can use them inside this
# systemd-nspawn node. Installed by stellar-lab.
for c in cpu cpuacct cpuset memory devices freezer blkio pids net_cls net_prio perf_event hugetlb rdma misc; do
	p=/sys/fs/cgroup/$c
	[ -d "$p" ] || continue
	[ -L "$p" ] && continue
	mountpoint -q "$p" || continue
	umount "$p" && mount -t cgroup -o "$c" cgroup "$p" || mount -t cgroup -o "$c" cgroup "$p" || true
done
exit 0
`

const cgroupRemountUnit = `[Unit]
Description=Re-mount cgroup v1 controllers read-write (stellar-lab node)
DefaultDependencies=no
After=local-fs.target
Before=containerd.service sysinit.target
ConditionVirtualization=container

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/stellar-lab-cgroup-remount

[Install]
WantedBy=sysinit.target containerd.service
`

// rootfsKey names a rootfs by what is in it.
func rootfsKey(pkgs []string) string {
	h := sha256.New()
	fmt.Fprintf(h, "recipe=%s\nsuite=%s\n", rootfsRecipe, Suite)
	for _, p := range pkgs {
		fmt.Fprintln(h, p)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// normalizePackages sorts and dedups a package list.
func normalizePackages(pkgs []string) []string {
	var out []string
	for _, p := range pkgs {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// EnsureRootfs returns the cached root file system holding BasePackages plus
// extra, building it with debootstrap first if it is not cached yet.
func (l *Lab) EnsureRootfs(ctx context.Context, extra []string) (string, error) {
	pkgs := normalizePackages(append(slices.Clone(BasePackages), extra...))
	dir := filepath.Join(l.CacheDir, "rootfs-"+rootfsKey(pkgs))
	if _, err := os.Stat(filepath.Join(dir, ".stellar-lab-packages")); err == nil {
		return dir, nil
	}
	if err := os.MkdirAll(l.CacheDir, 0o755); err != nil {
		return "", fmt.Errorf("make cache dir: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(l.CacheDir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", fmt.Errorf("open cache lock: %w", err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("lock cache: %w", err)
	}
	if _, err := os.Stat(filepath.Join(dir, ".stellar-lab-packages")); err == nil {
		return dir, nil // built by someone else meanwhile
	}
	start := time.Now()
	l.Log.Info("building node rootfs (once, cached)", "dir", dir, "packages", strings.Join(pkgs, ","))
	if err := l.buildRootfs(ctx, dir, pkgs); err != nil {
		return "", fmt.Errorf("build rootfs %s: %w", dir, err)
	}
	l.Log.Info("node rootfs built", "dir", dir, "took", time.Since(start).Round(time.Second))
	return dir, nil
}

func (l *Lab) buildRootfs(ctx context.Context, dir string, pkgs []string) error {
	tmp := dir + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	mirrors, err := hostMirrors()
	if err != nil {
		return fmt.Errorf("read host apt sources: %w", err)
	}
	aptConf := hostAptConfig(ctx)
	env := os.Environ()
	if p := aptProxy(aptConf); p != "" {
		env = append(env, "http_proxy="+p, "https_proxy="+p)
	}
	args := []string{"--variant=minbase", "--include=systemd,systemd-sysv,dbus,iproute2", Suite, tmp, mirrors.main}
	if err := l.runLogged(ctx, env, "debootstrap", args...); err != nil {
		return fmt.Errorf("debootstrap: %w", err)
	}
	var sources strings.Builder
	fmt.Fprintf(&sources, "deb %s %s main\ndeb %s %s-updates main\n", mirrors.main, Suite, mirrors.main, Suite)
	if mirrors.security != "" {
		fmt.Fprintf(&sources, "deb %s %s-security main\n", mirrors.security, Suite)
	}
	files := map[string]string{
		"etc/apt/sources.list":                  sources.String(),
		"etc/apt/apt.conf.d/90stellar-lab":      aptConf,
		"usr/sbin/policy-rc.d":                  "#!/bin/sh\nexit 101\n",
		"etc/dpkg/dpkg.cfg.d/stellar-lab-nodoc": "path-exclude /usr/share/doc/*\npath-exclude /usr/share/man/*\npath-exclude /usr/share/locale/*\n",
	}
	if err := writeFiles(tmp, files); err != nil {
		return err
	}
	install := "apt-get update && apt-get install -y --no-install-recommends " + strings.Join(pkgs, " ") + " && apt-get clean"
	err = l.runLogged(ctx, append(nspawnEnv(), "DEBIAN_FRONTEND=noninteractive"), "systemd-nspawn",
		"-D", tmp, "--register=no", "--keep-unit", "--pipe", "-E", "DEBIAN_FRONTEND=noninteractive",
		"/bin/sh", "-c", install)
	removeNspawnLock(tmp)
	_ = os.Remove(filepath.Join("/run/systemd/nspawn/propagate", filepath.Base(tmp)))
	if err != nil {
		return fmt.Errorf("install packages: %w", err)
	}
	if err := os.Remove(filepath.Join(tmp, "usr/sbin/policy-rc.d")); err != nil {
		return err
	}
	files = map[string]string{
		"usr/local/sbin/stellar-lab-cgroup-remount":        cgroupRemountScript,
		"etc/systemd/system/stellar-lab-cgroup-v1.service": cgroupRemountUnit,
		"etc/resolv.conf": "# stellar-lab: nodes have no way out of the lab\nnameserver " + GatewayAddr.String() + "\n",
		"etc/machine-id":  "",
		"etc/systemd/journald.conf.d/stellar-lab.conf": "[Journal]\nStorage=persistent\nRateLimitIntervalSec=0\n",
		"etc/systemd/system.conf.d/stellar-lab.conf":   "[Manager]\nDefaultTimeoutStopSec=15s\n",
		"etc/profile.d/stellar-lab.sh":                 "export SYSTEMD_PAGER=cat\n",
		".stellar-lab-packages.tmp":                    strings.Join(pkgs, "\n") + "\n",
	}
	if err := writeFiles(tmp, files); err != nil {
		return err
	}
	if err := os.Chmod(filepath.Join(tmp, "usr/local/sbin/stellar-lab-cgroup-remount"), 0o755); err != nil {
		return err
	}
	_ = os.Remove(filepath.Join(tmp, "etc/hostname"))
	_ = os.Remove(filepath.Join(tmp, "var/lib/dbus/machine-id"))
	if err := os.MkdirAll(filepath.Join(tmp, "var/log/journal"), 0o2755); err != nil {
		return err
	}
	links := map[string]string{
		"etc/systemd/system/sysinit.target.wants/stellar-lab-cgroup-v1.service":     "/etc/systemd/system/stellar-lab-cgroup-v1.service",
		"etc/systemd/system/containerd.service.wants/stellar-lab-cgroup-v1.service": "/etc/systemd/system/stellar-lab-cgroup-v1.service",
		"etc/systemd/system/multi-user.target.wants/containerd.service":             "/lib/systemd/system/containerd.service",
		"etc/systemd/system/console-getty.service":                                  "/dev/null",
		"etc/systemd/system/getty@.service":                                         "/dev/null",
		"etc/systemd/system/systemd-networkd-wait-online.service":                   "/dev/null",
	}
	for name, target := range links {
		p := filepath.Join(tmp, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		_ = os.Remove(p)
		if err := os.Symlink(target, p); err != nil {
			return err
		}
	}
	if err := os.Rename(filepath.Join(tmp, ".stellar-lab-packages.tmp"), filepath.Join(tmp, ".stellar-lab-packages")); err != nil {
		return err
	}
	return os.Rename(tmp, dir)
}

func writeFiles(root string, files map[string]string) error {
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		_ = os.Remove(p) // may be a symlink (resolv.conf)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", p, err)
		}
	}
	return nil
}

type mirrors struct{ main, security string }

// hostMirrors reads the host's apt sources and returns the Debian mirror
// serving the suite and the one serving its security updates.
func hostMirrors() (mirrors, error) {
	var m mirrors
	var files []string
	if _, err := os.Stat("/etc/apt/sources.list"); err == nil {
		files = append(files, "/etc/apt/sources.list")
	}
	for _, pat := range []string{"/etc/apt/sources.list.d/*.list", "/etc/apt/sources.list.d/*.sources"} {
		g, _ := filepath.Glob(pat)
		files = append(files, g...)
	}
	for _, f := range files {
		for _, e := range parseSources(f) {
			for _, s := range e.suites {
				switch s {
				case Suite:
					if m.main == "" {
						m.main = e.uri
					}
				case Suite + "-security", Suite + "/updates":
					if m.security == "" {
						m.security = e.uri
					}
				}
			}
		}
	}
	if m.main == "" {
		m.main = "http://deb.debian.org/debian"
	}
	return m, nil
}

type sourceEntry struct {
	uri    string
	suites []string
}

// parseSources reads one-line (.list) or deb822 (.sources) apt sources.
func parseSources(path string) []sourceEntry {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []sourceEntry
	sc := bufio.NewScanner(f)
	if strings.HasSuffix(path, ".sources") {
		var cur sourceEntry
		var isDeb, enabled = false, true
		flush := func() {
			if isDeb && enabled && cur.uri != "" {
				out = append(out, cur)
			}
			cur, isDeb, enabled = sourceEntry{}, false, true
		}
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line == "" {
				flush()
				continue
			}
			if strings.HasPrefix(line, "#") {
				continue
			}
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			v = strings.TrimSpace(v)
			switch strings.ToLower(k) {
			case "types":
				isDeb = slices.Contains(strings.Fields(v), "deb")
			case "uris":
				if fs := strings.Fields(v); len(fs) > 0 {
					cur.uri = fs[0]
				}
			case "suites":
				cur.suites = strings.Fields(v)
			case "enabled":
				enabled = strings.ToLower(v) != "no"
			}
		}
		flush()
		return out
	}
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 3 || fs[0] != "deb" {
			continue
		}
		fs = fs[1:]
		if strings.HasPrefix(fs[0], "[") { // options
			for len(fs) > 0 && !strings.HasSuffix(fs[0], "]") {
				fs = fs[1:]
			}
			if len(fs) > 0 {
				fs = fs[1:]
			}
		}
		if len(fs) >= 2 {
			out = append(out, sourceEntry{uri: fs[0], suites: []string{fs[1]}})
		}
	}
	return out
}

// hostAptConfig returns the host's apt proxy and validity settings as an apt
// configuration fragment, so the rootfs build fetches the same way the host does.
func hostAptConfig(ctx context.Context) string {
	out, err := exec.CommandContext(ctx, "apt-config", "dump").Output()
	if err != nil {
		return ""
	}
	var b strings.Builder
	for _, line := range strings.Split(string(out), "\n") {
		k, _, _ := strings.Cut(line, " ")
		lk := strings.ToLower(k)
		if strings.HasPrefix(lk, "acquire::") && (strings.Contains(lk, "proxy") ||
			lk == "acquire::check-valid-until" || lk == "acquire::check-date") {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// aptProxy returns the http proxy named in an apt config fragment, if any.
func aptProxy(conf string) string {
	for _, line := range strings.Split(conf, "\n") {
		k, v, _ := strings.Cut(line, " ")
		if strings.EqualFold(k, "Acquire::http::Proxy") {
			v = strings.Trim(strings.TrimSuffix(strings.TrimSpace(v), ";"), `"`)
			if v != "" && !strings.EqualFold(v, "DIRECT") && v != "false" {
				return v
			}
		}
	}
	return ""
}

// nspawnEnv is the environment systemd-nspawn needs on these hosts.
func nspawnEnv() []string {
	return append(os.Environ(),
		"SYSTEMD_SECCOMP=0",
		"SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=0",
		"SYSTEMD_NSPAWN_API_VFS_WRITABLE=1",
	)
}

// runLogged runs a command, sending its output to the log's writer (stderr).
func (l *Lab) runLogged(ctx context.Context, env []string, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// run runs a command and returns its combined output; the error includes the output.
func run(ctx context.Context, name string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return !errors.Is(err, fs.ErrNotExist)
}
