package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"
)

// debInfo is what the lab needs to know about Stellar's .deb.
type debInfo struct {
	path, pkg, version string
	depends            []string // first alternative of each Depends/Pre-Depends
}

func readDeb(ctx context.Context, path string) (*debInfo, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	out, err := run(ctx, "dpkg-deb", "--showformat=${Package}\n${Version}\n${Depends}\n${Pre-Depends}\n", "--show", abs)
	if err != nil {
		return nil, fmt.Errorf("read .deb %s: %w", path, err)
	}
	lines := strings.Split(out, "\n")
	for len(lines) < 4 {
		lines = append(lines, "")
	}
	d := &debInfo{path: abs, pkg: strings.TrimSpace(lines[0]), version: strings.TrimSpace(lines[1])}
	d.depends = parseDepends(lines[2] + "," + lines[3])
	return d, nil
}

var versionConstraint = regexp.MustCompile(`\s*\(.*?\)|\s*\[.*?\]|\s*<.*?>`)

// parseDepends turns a Depends field into package names, taking the first
// alternative of each entry and dropping versions and architecture qualifiers.
func parseDepends(field string) []string {
	var out []string
	for _, ent := range strings.Split(field, ",") {
		alt, _, _ := strings.Cut(ent, "|")
		alt = versionConstraint.ReplaceAllString(alt, "")
		alt, _, _ = strings.Cut(strings.TrimSpace(alt), ":")
		if alt != "" {
			out = append(out, alt)
		}
	}
	return normalizePackages(out)
}

// newestDeb finds the newest dist/stellar_*_amd64.deb in the current
// directory or one of its parents.
func newestDeb() string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		matches, _ := filepath.Glob(filepath.Join(dir, "dist", "stellar_*_amd64.deb"))
		var best string
		var bestT time.Time
		for _, m := range matches {
			if st, err := os.Stat(m); err == nil && st.ModTime().After(bestT) {
				best, bestT = m, st.ModTime()
			}
		}
		if best != "" {
			return best
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

// NodeConfig is the stellar.toml the lab writes into node i before Stellar
// first starts there.
func NodeConfig(i int) string {
	return fmt.Sprintf("# Written by stellar-lab before Stellar first started on this node.\n[node]\nname = %q\nadvertise = %q\n", NodeName(i), NodeAddr(i))
}

// installStellar installs the .deb on nodes 1..n where that version is not
// installed yet (on all of them at once: each node has its own disk),
// starts stellar.target and forms the cluster.
func (l *Lab) installStellar(ctx context.Context, n int, deb *debInfo) error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 1; i <= n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i-1] = l.installOn(ctx, i, deb)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return l.formCluster(ctx, n)
}

// installOn installs the .deb on node i unless that version is there, and
// starts stellar.target.
func (l *Lab) installOn(ctx context.Context, i int, deb *debInfo) error {
	name := NodeName(i)
	have, _ := l.Output(ctx, name, "dpkg-query", "-W", "-f=${Version}", deb.pkg)
	if strings.TrimSpace(have) == deb.version {
		return nil
	}
	l.Log.Info("installing Stellar", "node", name, "deb", filepath.Base(deb.path), "version", deb.version)
	if _, err := l.Output(ctx, name, "test", "-e", "/etc/stellar/stellar.toml"); err != nil {
		if err := l.WriteFile(ctx, name, "/etc/stellar/stellar.toml", []byte(NodeConfig(i))); err != nil {
			return fmt.Errorf("write config on %s: %w", name, err)
		}
	}
	dst := "/root/stellar-lab/" + filepath.Base(deb.path)
	if err := l.CopyIn(ctx, name, deb.path, dst); err != nil {
		return err
	}
	if out, err := l.Output(ctx, name, "apt-get", "install", "-y", "--no-install-recommends",
		"-o", "Dpkg::Options::=--force-confold", "-o", "Dpkg::Options::=--force-confdef", dst); err != nil {
		return fmt.Errorf("install %s on %s: %w\n%s", filepath.Base(deb.path), name, err, out)
	}
	if _, err := l.Output(ctx, name, "systemctl", "enable", "--now", "stellar.target"); err != nil {
		return fmt.Errorf("start stellar.target on %s: %w", name, err)
	}
	l.Log.Info("Stellar installed", "node", name)
	return nil
}

// formCluster makes node1 issue a join token and every other node not yet
// joined use it. Joins are remembered on the node's disk.
func (l *Lab) formCluster(ctx context.Context, n int) error {
	var pending []string
	for i := 2; i <= n; i++ {
		if !exists(filepath.Join(l.nodeDisk(NodeName(i)), "stellar-joined")) {
			pending = append(pending, NodeName(i))
		}
	}
	if len(pending) == 0 {
		return nil
	}
	var token string
	var lastErr error
	for try := 0; try < 6; try++ {
		actx, cancel := context.WithTimeout(ctx, 15*time.Second)
		out, err := l.Output(actx, "node1", "sctl", "cluster", "token")
		cancel()
		if err != nil && actx.Err() != nil && ctx.Err() == nil {
			l.Log.Warn("cannot form the cluster: `sctl cluster token` on node1 did not answer in 15s; nodes run alone", "err", err)
			return nil
		}
		if err == nil {
			token = lastField(out)
			break
		}
		lastErr = err
		if missingCommand(err) {
			l.Log.Warn("cannot form the cluster: `sctl cluster token` is not available on node1; nodes run alone", "err", err)
			return nil
		}
		if err := sleepCtx(ctx, 2*time.Second); err != nil {
			return err
		}
	}
	if token == "" {
		l.Log.Warn("cannot form the cluster: no token from node1; nodes run alone", "err", lastErr)
		return nil
	}
	for _, name := range pending {
		jctx, cancel := context.WithTimeout(ctx, time.Minute)
		_, err := l.Output(jctx, name, "sctl", "cluster", "join", token)
		cancel()
		if err != nil {
			if missingCommand(err) {
				l.Log.Warn("cannot join: `sctl cluster join` is not available", "node", name, "err", err)
				continue
			}
			if ctx.Err() == nil {
				l.Log.Warn("cannot join; the node runs alone (run `sctl cluster join` in it by hand, or up again)", "node", name, "err", err)
				continue
			}
			return fmt.Errorf("join %s to the cluster: %w", name, err)
		}
		if err := os.WriteFile(filepath.Join(l.nodeDisk(name), "stellar-joined"), []byte(token+"\n"), 0o600); err != nil {
			return err
		}
		l.Log.Info("node joined the cluster", "node", name)
	}
	return nil
}

func lastField(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	f := strings.Fields(lines[len(lines)-1])
	if len(f) == 0 {
		return ""
	}
	return f[len(f)-1]
}

// missingCommand says whether err looks like an absent binary or subcommand.
func missingCommand(err error) bool {
	if ExitCode(err) == 127 || ExitCode(err) == 126 {
		return true
	}
	msg := strings.ToLower(err.Error())
	for _, s := range []string{"unknown command", "no such file", "not found", "unknown subcommand", "usage:"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// missingPackages returns the packages of want not installed in rootfs,
// judging by its dpkg status file (a package that is only provided
// virtually counts as missing).
func missingPackages(rootfs string, want []string) []string {
	b, err := os.ReadFile(filepath.Join(rootfs, "var/lib/dpkg/status"))
	if err != nil {
		return want
	}
	installed := map[string]bool{}
	for _, para := range strings.Split(string(b), "\n\n") {
		var pkg string
		ok := false
		for _, line := range strings.Split(para, "\n") {
			if v, found := strings.CutPrefix(line, "Package: "); found {
				pkg = v
			}
			if strings.HasPrefix(line, "Status: ") && strings.HasSuffix(line, " installed") {
				ok = true
			}
			if v, found := strings.CutPrefix(line, "Provides: "); found && ok {
				for _, p := range strings.Split(v, ",") {
					p = versionConstraint.ReplaceAllString(p, "")
					installed[strings.TrimSpace(p)] = true
				}
			}
		}
		if ok && pkg != "" {
			installed[pkg] = true
		}
	}
	var out []string
	for _, p := range want {
		if !installed[p] {
			out = append(out, p)
		}
	}
	return out
}
