// Package daemontest runs a real daemon binary in a test, the two ways
// systemd and a developer would: binding its own sockets, or handed them
// through LISTEN_FDS; with a fake NOTIFY_SOCKET that records sd_notify
// messages.
package daemontest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"stellar.dev/api/client"
)

var (
	buildMu sync.Mutex
	built   = map[string]string{}
)

// Build compiles the main package pkg (an import path) once per test
// process and returns the binary's path.
func Build(t testing.TB, pkg string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := built[pkg]; ok {
		return p
	}
	dir, err := os.MkdirTemp("", "stellar-bin-")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", pkg, err, b)
	}
	built[pkg] = out
	return out
}

// Notifier is a fake systemd notify socket.
type Notifier struct {
	Path string
	conn *net.UnixConn
	mu   sync.Mutex
	msgs []string
	cond chan struct{}
}

// NewNotifier listens on a datagram socket in dir.
func NewNotifier(t testing.TB, dir string) *Notifier {
	t.Helper()
	p := filepath.Join(dir, "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: p, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	n := &Notifier{Path: p, conn: c, cond: make(chan struct{}, 1)}
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := c.Read(buf)
			if err != nil {
				return
			}
			n.mu.Lock()
			n.msgs = append(n.msgs, string(buf[:k]))
			n.mu.Unlock()
			select {
			case n.cond <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() { c.Close() })
	return n
}

// Messages returns what was received so far.
func (n *Notifier) Messages() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.msgs...)
}

// WaitFor waits until a message containing s arrives.
func (n *Notifier) WaitFor(t testing.TB, s string, d time.Duration) {
	t.Helper()
	deadline := time.After(d)
	for {
		for _, m := range n.Messages() {
			if strings.Contains(m, s) {
				return
			}
		}
		select {
		case <-n.cond:
		case <-deadline:
			t.Fatalf("no %q from the daemon within %s; got %q", s, d, n.Messages())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Options say how to start a daemon.
type Options struct {
	// Name is the daemon's short name ("dnsd").
	Name string
	// Config is TOML added to the generated file; the generated [node]
	// section sets name, run_dir and state_dir, so Config must not repeat
	// [node] (use NodeConfig for more [node] keys).
	Config string
	// NodeConfig is added to the [node] section.
	NodeConfig string
	// Activated hands the API socket over as systemd does (LISTEN_FDS).
	Activated bool
	// Dir is the node's directory (default: a new temp dir).
	Dir string
	// Env is added to the daemon's environment.
	Env []string
	// Args are passed to the binary (default none: "run").
	Args []string
}

// Daemon is a running daemon process.
type Daemon struct {
	Cmd    *exec.Cmd
	Dir    string
	Socket string
	Config string
	Notify *Notifier
	Client *client.Client
	stderr *lockedBuffer
	done   chan struct{}
	err    error
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Start starts bin with a config in a fresh directory and returns at once.
func Start(t testing.TB, bin string, o Options) *Daemon {
	t.Helper()
	dir := o.Dir
	if dir == "" {
		// Short paths: a Unix socket path must fit in 108 bytes.
		d, err := os.MkdirTemp("", "st-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		dir = d
	}
	run := filepath.Join(dir, "run")
	state := filepath.Join(dir, "state")
	for _, d := range []string{run, state} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cfgPath := filepath.Join(dir, "stellar.toml")
	cfg := fmt.Sprintf("[node]\nname = \"test\"\nrun_dir = %q\nstate_dir = %q\nlog_level = \"debug\"\n%s\n%s\n", run, state, o.NodeConfig, o.Config)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	d := &Daemon{Dir: dir, Socket: filepath.Join(run, o.Name+".sock"), Config: cfgPath, stderr: &lockedBuffer{}, done: make(chan struct{})}
	d.Notify = NewNotifier(t, dir)
	args := append([]string{"--config", cfgPath}, o.Args...)
	var cmd *exec.Cmd
	env := append(os.Environ(), "NOTIFY_SOCKET="+d.Notify.Path)
	env = append(env, o.Env...)
	if o.Activated {
		l, err := net.Listen("unix", d.Socket)
		if err != nil {
			t.Fatal(err)
		}
		ul := l.(*net.UnixListener)
		ul.SetUnlinkOnClose(false)
		f, err := ul.File()
		if err != nil {
			t.Fatal(err)
		}
		l.Close() // the file keeps the socket open
		// LISTEN_PID must be the daemon's own pid: let a shell set it and exec.
		cmd = exec.Command("/bin/sh", append([]string{"-c", `LISTEN_PID=$$ exec "$0" "$@"`, bin}, args...)...)
		cmd.ExtraFiles = []*os.File{f}
		env = append(env, "LISTEN_FDS=1", "LISTEN_FDNAMES=api")
		t.Cleanup(func() { f.Close() })
	} else {
		cmd = exec.Command(bin, args...)
	}
	cmd.Env = env
	cmd.Stdout = d.stderr
	cmd.Stderr = d.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d.Cmd = cmd
	go func() {
		d.err = cmd.Wait()
		close(d.done)
	}()
	d.Client = client.Unix("stellar-"+o.Name, d.Socket).WithTimeout(5 * time.Second)
	t.Cleanup(func() {
		select {
		case <-d.done:
		default:
			cmd.Process.Kill()
			<-d.done
		}
		if t.Failed() {
			t.Logf("stellar-%s output:\n%s", o.Name, d.stderr.String())
		}
	})
	return d
}

// Output returns what the daemon wrote so far.
func (d *Daemon) Output() string { return d.stderr.String() }

// WaitHealth waits until GET /v1/health answers (with any status) and
// returns the status code.
func (d *Daemon) WaitHealth(t testing.TB, within time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := d.Client.Open(ctx, http.MethodGet, "/v1/health", nil, nil)
		cancel()
		if err == nil {
			resp.Body.Close()
			return resp.StatusCode
		}
		if strings.Contains(err.Error(), "unavailable") || strings.Contains(err.Error(), "unhealthy") {
			// 503 from an unhealthy daemon is still an answer.
			if !strings.Contains(err.Error(), "is not running") {
				return http.StatusServiceUnavailable
			}
		}
		select {
		case <-d.done:
			t.Fatalf("daemon exited before serving: %v\n%s", d.err, d.Output())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no answer on %s within %s: %v\n%s", d.Socket, within, err, d.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Signal sends sig to the daemon.
func (d *Daemon) Signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if err := d.Cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// Wait waits for the daemon to exit and returns its error (nil for exit 0).
func (d *Daemon) Wait(t testing.TB, within time.Duration) error {
	t.Helper()
	select {
	case <-d.done:
		return d.err
	case <-time.After(within):
		t.Fatalf("daemon did not exit within %s\n%s", within, d.Output())
		return nil
	}
}

// Done is closed when the daemon has exited.
func (d *Daemon) Done() <-chan struct{} { return d.done }

// Lifecycle runs the checks every daemon must pass, as subtests: started
// self-bound and socket-activated, it answers /v1/health and /v1/version,
// says READY=1, feeds the watchdog, says RELOADING=1 on SIGHUP, and on
// SIGTERM says STOPPING=1 and exits 0; a bad config
// file fails with file:line:key. config is TOML for the daemon's own
// section, to keep its other listeners on loopback test addresses.
func Lifecycle(t *testing.T, pkg, name, config string) {
	bin := Build(t, pkg)
	for _, activated := range []bool{false, true} {
		mode := "selfBound"
		if activated {
			mode = "socketActivated"
		}
		t.Run(mode, func(t *testing.T) {
			// The watchdog must be fed while the daemon's own health check
			// passes, even with no other daemon on the node.
			d := Start(t, bin, Options{Name: name, Config: config, Activated: activated, Env: []string{"WATCHDOG_USEC=400000"}})
			d.WaitHealth(t, 20*time.Second)
			d.Notify.WaitFor(t, "READY=1", 20*time.Second)
			d.Notify.WaitFor(t, "WATCHDOG=1", 20*time.Second)
			d.Signal(t, syscall.SIGHUP)
			d.Notify.WaitFor(t, "RELOADING=1", 20*time.Second)
			var v struct {
				Daemon string `json:"daemon"`
			}
			if err := d.Client.Do(context.Background(), http.MethodGet, "/v1/version", nil, &v); err != nil {
				t.Fatal(err)
			}
			if v.Daemon != "stellar-"+name {
				t.Fatalf("version says daemon %q", v.Daemon)
			}
			d.Signal(t, syscall.SIGTERM)
			if err := d.Wait(t, 20*time.Second); err != nil {
				t.Fatalf("exit after SIGTERM: %v\n%s", err, d.Output())
			}
			d.Notify.WaitFor(t, "STOPPING=1", time.Second)
			if activated {
				if _, err := os.Stat(d.Socket); err != nil {
					t.Fatalf("systemd's socket file must survive the daemon: %v", err)
				}
			}
		})
	}
	t.Run("badConfig", func(t *testing.T) {
		d := Start(t, bin, Options{Name: name, NodeConfig: "colour = \"red\""})
		err := d.Wait(t, 20*time.Second)
		if err == nil {
			t.Fatal("want a non-zero exit")
		}
		if !strings.Contains(d.Output(), d.Config+":6: key node.colour: unknown key") {
			t.Fatalf("error does not name file:line:key:\n%s", d.Output())
		}
	})
}
