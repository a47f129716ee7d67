// Package daemon runs a Stellar daemon: it parses the command line, loads
// the configuration, takes its sockets (from systemd or bound itself),
// serves the local API with /v1/health, /v1/version and /metrics, speaks
// sd_notify (READY, RELOADING, STOPPING, WATCHDOG), reloads on SIGHUP and
// stops gracefully on SIGTERM. Each daemon supplies a Spec.
package daemon

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"stellar.dev/api"
	"stellar.dev/api/errdefs"
	"stellar.dev/daemon/config"
	"stellar.dev/daemon/httpapi"
	"stellar.dev/daemon/listen"
	"stellar.dev/daemon/logging"
	"stellar.dev/daemon/metrics"
	"stellar.dev/daemon/sdnotify"
)

// Spec describes one daemon.
type Spec struct {
	// Name is the short name: "gossip", "netd", "dnsd", "proxyd", "appd".
	// The binary is "stellar-<name>", the socket <run_dir>/<name>.sock, the
	// state <state_dir>/<name>/.
	Name string
	// Summary is one line for --help's NAME section.
	Summary string
	// Description is --help's DESCRIPTION section: what the daemon does.
	Description string
	// Files lists extra FILES entries for --help (path -> meaning).
	Files map[string]string
	// Sockets returns the sockets the daemon needs beside its API socket
	// (role "api"), with the addresses to bind when not socket-activated.
	Sockets func(cfg config.Config) []listen.Spec
	// New builds the service. It must do no I/O: Run does.
	New func(env *Env) (Service, error)
	// Commands are extra subcommands ("cleanup").
	Commands []Command
}

// Command is an extra subcommand of a daemon binary.
type Command struct {
	Name    string
	Summary string
	Run     func(ctx context.Context, cfg config.Config, log *slog.Logger, args []string) error
}

// Env is what a service gets from the framework.
type Env struct {
	// Config is the effective configuration.
	Config config.Config
	// Log is the daemon's logger.
	Log *slog.Logger
	// Sockets holds the sockets of the roles named by Spec.Sockets.
	Sockets *listen.Set
	// Mux is the API mux: register handlers with Go 1.22 patterns
	// ("GET /v1/apps/{name}"). /v1/health, /v1/version and /metrics are
	// already there.
	Mux *http.ServeMux
	// Metrics is the daemon's registry, served at /metrics.
	Metrics *metrics.Registry
}

// Service is a daemon's own work.
type Service interface {
	// Run does the work until ctx is done. It calls ready once it serves
	// (never waiting for peers: a lone node must come up).
	Run(ctx context.Context, ready func()) error
}

// HealthChecker is implemented by services with a health check; the
// watchdog is fed only while it passes, and /v1/health reports it.
type HealthChecker interface {
	Health(ctx context.Context) error
}

// Reloader is implemented by services that apply a new configuration on
// SIGHUP. A service without it keeps running with the old configuration
// and logs that a restart is needed.
type Reloader interface {
	Reload(ctx context.Context, cfg config.Config) error
}

// Binary returns "stellar-<name>".
func (s Spec) Binary() string { return "stellar-" + s.Name }

// Run runs the binary described by spec with the command-line args
// (without the program name).
func Run(ctx context.Context, spec Spec, args []string) error {
	fs := flag.NewFlagSet(spec.Binary(), flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfgPath := fs.String("config", "", "")
	help := fs.Bool("help", false, "")
	fs.BoolVar(help, "h", false, "")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w (see %s --help)", err, spec.Binary())
	}
	if *help {
		fmt.Print(Help(spec))
		return nil
	}
	rest := fs.Args()
	cmd := "run"
	if len(rest) > 0 {
		cmd, rest = rest[0], rest[1:]
	}
	// Flags may follow the command, too: "stellar-dnsd config --config x".
	if err := fs.Parse(rest); err != nil {
		return fmt.Errorf("%w (see %s --help)", err, spec.Binary())
	}
	if *help {
		fmt.Print(Help(spec))
		return nil
	}
	rest = fs.Args()
	if cmd == "help" {
		fmt.Print(Help(spec))
		return nil
	}
	if cmd == "version" {
		v := api.CurrentVersion(spec.Binary())
		fmt.Printf("%s %s (wire %d, %s)\n", v.Daemon, v.Version, v.Wire, v.Go)
		return nil
	}
	path := config.Path(*cfgPath)
	explicit := *cfgPath != "" || os.Getenv(config.EnvPath) != ""
	cfg, err := config.Load(path, explicit)
	if err != nil {
		return err
	}
	level := new(slog.LevelVar)
	level.Set(logging.ParseLevel(cfg.Node.LogLevel))
	log := logging.New(spec.Binary(), level, os.Stderr)
	switch cmd {
	case "config":
		fmt.Print(cfg.TOML())
		return nil
	case "run":
		if len(rest) > 0 {
			return fmt.Errorf("unexpected argument %q (see %s --help)", rest[0], spec.Binary())
		}
		return serve(ctx, spec, cfg, path, explicit, level, log)
	}
	for _, c := range spec.Commands {
		if c.Name == cmd {
			return c.Run(ctx, cfg, log, rest)
		}
	}
	return fmt.Errorf("unknown command %q (see %s --help)", cmd, spec.Binary())
}

// Help returns the man-page style --help text.
func Help(spec Spec) string {
	var b strings.Builder
	bin := spec.Binary()
	fmt.Fprintf(&b, "NAME\n    %s - %s\n\n", bin, spec.Summary)
	fmt.Fprintf(&b, "SYNOPSIS\n    %s [--config PATH] [run]\n    %s [--config PATH] config\n    %s version\n", bin, bin, bin)
	for _, c := range spec.Commands {
		fmt.Fprintf(&b, "    %s [--config PATH] %s\n", bin, c.Name)
	}
	fmt.Fprintf(&b, "\nDESCRIPTION\n%s\n", indent(spec.Description))
	b.WriteString("\nCOMMANDS\n")
	cmds := [][2]string{
		{"run", "Run the daemon (the default). Under systemd it takes its sockets from the .socket units and reports readiness with sd_notify; otherwise it binds them itself."},
		{"config", "Print the effective configuration (the file over the defaults) as TOML."},
		{"version", "Print the version and the wire version it speaks."},
	}
	for _, c := range spec.Commands {
		cmds = append(cmds, [2]string{c.Name, c.Summary})
	}
	for _, c := range cmds {
		fmt.Fprintf(&b, "    %s\n%s\n", c[0], indent2(c[1]))
	}
	b.WriteString("\nOPTIONS\n")
	fmt.Fprintf(&b, "    --config PATH\n%s\n", indent2("Read the configuration from PATH instead of "+config.DefaultPath+" (also $"+config.EnvPath+"). A missing default file means every default; a missing file named here is an error."))
	fmt.Fprintf(&b, "    -h, --help\n%s\n", indent2("Show this help."))
	b.WriteString("\nSIGNALS\n")
	b.WriteString(indent2("SIGTERM, SIGINT: stop gracefully (the node stays in the cluster).\nSIGHUP: reload the configuration file."))
	b.WriteString("\n\nFILES\n")
	files := map[string]string{
		config.DefaultPath:                    "The configuration file, section [" + section(spec.Name) + "] and [node].",
		"/run/stellar/" + spec.Name + ".sock": "The local API socket (HTTP/JSON): try curl --unix-socket /run/stellar/" + spec.Name + ".sock http://x/v1/health",
		"/var/lib/stellar/" + spec.Name + "/": "The daemon's state.",
	}
	for k, v := range spec.Files {
		files[k] = v
	}
	keys := make([]string, 0, len(files))
	for k := range files {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "    %s\n%s\n", k, indent2(files[k]))
	}
	fmt.Fprintf(&b, "\nSEE ALSO\n    sctl(1), stellar.target, journalctl -u %s\n", bin)
	return b.String()
}

func section(name string) string {
	switch name {
	case "netd":
		return "network"
	case "dnsd":
		return "dns"
	case "proxyd":
		return "proxy"
	case "appd":
		return "apps"
	}
	return name
}

func indent(s string) string  { return indentBy(s, "    ") }
func indent2(s string) string { return indentBy(s, "        ") }

func indentBy(s, p string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = p + l
		}
	}
	return strings.Join(lines, "\n")
}

// serve runs the daemon until a stop signal or a fatal error.
func serve(parent context.Context, spec Spec, cfg config.Config, path string, explicit bool, level *slog.LevelVar, log *slog.Logger) error {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()

	specs := []listen.Spec{{Name: "api", Network: "unix", Addr: cfg.Socket(spec.Name)}}
	if spec.Sockets != nil {
		specs = append(specs, spec.Sockets(cfg)...)
	}
	socks, err := listen.Open(ctx, specs, log)
	if err != nil {
		return fmt.Errorf("open sockets: %w", err)
	}
	defer socks.Close()

	reg := metrics.NewRegistry()
	mux := http.NewServeMux()
	env := &Env{Config: cfg, Log: log, Sockets: socks, Mux: mux, Metrics: reg}
	svc, err := spec.New(env)
	if err != nil {
		return fmt.Errorf("set up %s: %w", spec.Binary(), err)
	}
	health := func(ctx context.Context) error {
		if hc, ok := svc.(HealthChecker); ok {
			return hc.Health(ctx)
		}
		return nil
	}
	mux.HandleFunc("GET /v1/health", func(w http.ResponseWriter, r *http.Request) {
		if err := health(r.Context()); err != nil {
			httpapi.WriteJSON(w, http.StatusServiceUnavailable, api.Health{Status: "unhealthy", Error: err.Error()})
			return
		}
		httpapi.WriteJSON(w, http.StatusOK, api.Health{Status: "ok"})
	})
	mux.HandleFunc("GET /v1/version", func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteJSON(w, http.StatusOK, api.CurrentVersion(spec.Binary()))
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", metrics.ContentType)
		reg.Write(w)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteError(w, errdefs.New(errdefs.ErrNotFound, "no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	srv := &http.Server{
		Handler:           httpapi.Middleware(mux, mux, reg, log),
		ConnContext:       listen.ConnContext,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	for _, l := range socks.Listeners("api") {
		wg.Add(1)
		go func(l net.Listener) {
			defer wg.Done()
			if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("serve api on %s: %w", l.Addr(), err)
			}
		}(l)
	}

	var readyOnce sync.Once
	ready := func() {
		readyOnce.Do(func() {
			if _, err := sdnotify.Notify(sdnotify.Ready); err != nil {
				log.Warn("tell systemd we are ready", "err", err)
			}
			log.Info("ready", "version", api.Version, "socket", cfg.Socket(spec.Name), "activated", socks.Activated("api"))
		})
	}
	runDone := make(chan error, 1)
	go func() { runDone <- svc.Run(ctx, ready) }()

	if iv := sdnotify.WatchdogInterval(); iv > 0 {
		go watchdog(ctx, iv, health, log)
	}

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)

	var runErr error
	stopping := false
loop:
	for {
		select {
		case s := <-sigs:
			if s == syscall.SIGHUP {
				reload(ctx, svc, path, explicit, level, log)
				continue
			}
			log.Info("stopping", "signal", s.String())
			stopping = true
			break loop
		case <-parent.Done():
			stopping = true
			break loop
		case err := <-errc:
			runErr = err
			break loop
		case err := <-runDone:
			runDone = nil
			if err != nil && ctx.Err() == nil {
				runErr = err
			}
			break loop
		}
	}
	if _, err := sdnotify.Notify(sdnotify.Stopping); err != nil {
		log.Warn("tell systemd we are stopping", "err", err)
	}
	cancel()
	shutCtx, shutCancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer shutCancel()
	_ = srv.Shutdown(shutCtx)
	if runDone != nil {
		select {
		case err := <-runDone:
			if err != nil && !errors.Is(err, context.Canceled) && runErr == nil && !stopping {
				runErr = err
			}
		case <-shutCtx.Done():
			log.Warn("service did not stop in time")
		}
	}
	wg.Wait()
	if runErr != nil {
		log.Error("exiting", "err", runErr)
		return runErr
	}
	log.Info("stopped")
	return nil
}

func reload(ctx context.Context, svc Service, path string, explicit bool, level *slog.LevelVar, log *slog.Logger) {
	if _, err := sdnotify.Notify(sdnotify.ReloadingNow()); err != nil {
		log.Warn("tell systemd we are reloading", "err", err)
	}
	defer sdnotify.Notify(sdnotify.Ready)
	cfg, err := config.Load(path, explicit)
	if err != nil {
		log.Error("reload config: keeping the running one", "err", err)
		return
	}
	level.Set(logging.ParseLevel(cfg.Node.LogLevel))
	r, ok := svc.(Reloader)
	if !ok {
		log.Info("config reloaded: log level applied; restart the service for other changes")
		return
	}
	if err := r.Reload(ctx, cfg); err != nil {
		log.Error("apply reloaded config", "err", err)
		return
	}
	log.Info("config reloaded")
}

func watchdog(ctx context.Context, every time.Duration, health func(context.Context) error, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		hctx, cancel := context.WithTimeout(ctx, every)
		err := health(hctx)
		cancel()
		if err != nil {
			log.Warn("health check failed: not feeding the watchdog", "err", err)
			continue
		}
		if _, err := sdnotify.Notify(sdnotify.Watchdog); err != nil {
			log.Warn("feed watchdog", "err", err)
		}
	}
}

// Main is the whole main function of a daemon binary: it runs spec with the
// process's arguments and exits non-zero on error.
func Main(spec Spec) {
	if err := Run(context.Background(), spec, os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", spec.Binary(), err)
		os.Exit(1)
	}
}

// SetDefaultGCPercent sets the garbage collector's target (GOGC) to p
// unless the operator set GOGC in the environment, which wins. A daemon
// that idles with a small live heap calls it first thing in main: Go's
// default of 100 lets the heap double between collections, and the pages it
// touched stay resident.
func SetDefaultGCPercent(p int) {
	if _, ok := os.LookupEnv("GOGC"); ok {
		return
	}
	debug.SetGCPercent(p)
}
