package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// nodeEnv is the environment commands run with inside a node.
func nodeEnv() []string {
	env := []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=/root", "LANG=C.UTF-8", "SYSTEMD_PAGER=cat", "PAGER=cat",
	}
	if t := os.Getenv("TERM"); t != "" {
		env = append(env, "TERM="+t)
	}
	return env
}

// Command returns a command that runs args inside node (all of the node's
// namespaces, entered with nsenter), or inside the client namespace when node
// is "client". The caller sets its stdio and runs it.
func (l *Lab) Command(ctx context.Context, node string, args ...string) (*exec.Cmd, error) {
	if len(args) == 0 {
		return nil, errors.New("no command")
	}
	if node == Client {
		if !netnsExists(l.ClientNS()) {
			return nil, errors.New("the lab is not up: no client namespace")
		}
		cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + netnsPath(l.ClientNS()), "--"}, args...)...)
		return cmd, nil
	}
	if _, err := NodeIndex(node); err != nil {
		return nil, err
	}
	s, err := l.readNodeState(node)
	if err != nil || !l.running(s) || s.InitPID == 0 {
		return nil, fmt.Errorf("node %s is not running", node)
	}
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(s.InitPID), "-a", "--"}, args...)...)
	cmd.Env = nodeEnv()
	// nsenter forks to enter the node's PID namespace and does not pass
	// signals on: when ctx ends, kill the command inside, not only nsenter.
	cmd.Cancel = func() error {
		SignalInside(cmd, syscall.SIGKILL)
		return cmd.Process.Kill()
	}
	cmd.WaitDelay = 5 * time.Second
	return cmd, nil
}

// SignalInside sends sig to the command a started Command runs inside the
// node (nsenter's child), not to nsenter itself.
func SignalInside(cmd *exec.Cmd, sig syscall.Signal) {
	if cmd.Process == nil {
		return
	}
	for _, p := range allProcs() {
		if p.ppid == cmd.Process.Pid {
			_ = syscall.Kill(p.pid, sig)
		}
	}
}

// Exec runs args inside node with the given stdio (nil: none). A command that
// ran and failed returns an *exec.ExitError; ExitCode reads its code.
func (l *Lab) Exec(ctx context.Context, node string, stdin io.Reader, stdout, stderr io.Writer, args ...string) error {
	cmd, err := l.Command(ctx, node, args...)
	if err != nil {
		return err
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	return cmd.Run()
}

// Output runs args inside node and returns its stdout; on failure the error
// holds stderr too.
func (l *Lab) Output(ctx context.Context, node string, args ...string) (string, error) {
	var out, errb bytes.Buffer
	err := l.Exec(ctx, node, nil, &out, &errb, args...)
	if err != nil {
		return out.String(), fmt.Errorf("%s: %s: %w: %s", node, strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// Sh runs a shell script inside node and returns its stdout.
func (l *Lab) Sh(ctx context.Context, node, script string) (string, error) {
	return l.Output(ctx, node, "/bin/sh", "-c", script)
}

// CopyIn copies the host file src to dst inside node (mode 0644).
func (l *Lab) CopyIn(ctx context.Context, node, src, dst string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	var errb bytes.Buffer
	script := `set -e; mkdir -p "$(dirname "$1")"; cat > "$1.tmp"; mv "$1.tmp" "$1"`
	if err := l.Exec(ctx, node, f, io.Discard, &errb, "/bin/sh", "-c", script, "sh", dst); err != nil {
		return fmt.Errorf("copy %s to %s:%s: %w: %s", src, node, dst, err, strings.TrimSpace(errb.String()))
	}
	return nil
}

// WriteFile writes data to path inside node.
func (l *Lab) WriteFile(ctx context.Context, node, path string, data []byte) error {
	var errb bytes.Buffer
	script := `set -e; mkdir -p "$(dirname "$1")"; cat > "$1.tmp"; mv "$1.tmp" "$1"`
	if err := l.Exec(ctx, node, bytes.NewReader(data), io.Discard, &errb, "/bin/sh", "-c", script, "sh", path); err != nil {
		return fmt.Errorf("write %s:%s: %w: %s", node, path, err, strings.TrimSpace(errb.String()))
	}
	return nil
}

// ExitCode returns the exit code carried by err: 0 for nil, the command's
// code for an *exec.ExitError, 1 otherwise.
func ExitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if c := ee.ExitCode(); c >= 0 {
			return c
		}
		return 128 + 9
	}
	return 1
}

// Logs writes the node's journal (all, or one unit's) to w; follow keeps
// streaming until ctx ends.
func (l *Lab) Logs(ctx context.Context, node, unit string, follow bool, lines int, w io.Writer) error {
	args := []string{"journalctl", "--no-pager"}
	if unit != "" {
		args = append(args, "-u", unit)
	}
	if follow {
		args = append(args, "-f")
	}
	if lines > 0 {
		args = append(args, "-n", strconv.Itoa(lines))
	}
	return l.Exec(ctx, node, nil, w, w, args...)
}
