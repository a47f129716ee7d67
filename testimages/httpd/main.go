// Command httpd is Stellar's tiny HTTP test service, packed into the
// stellar.test/httpd image: GET / answers with the hostname and a line of
// text, GET /health says whether it is healthy.
//
// Flags (each also read from the environment):
//
//	--listen ADDR  address to listen on (LISTEN, default ":8080")
//	--text TEXT    line of text GET / answers with (TEXT)
//
// POST /fail makes /health answer 503, POST /recover makes it 200 again, so
// tests can drive health checks. "httpd probe URL" GETs URL and exits 0 on a
// 2xx answer, for exec health checks inside the image.
package main

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
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	if err := run(context.Background(), os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "httpd:", err)
		os.Exit(1)
	}
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func run(ctx context.Context, args []string) error {
	if len(args) > 0 && args[0] == "probe" {
		if len(args) != 2 {
			return errors.New("usage: httpd probe URL")
		}
		return probe(ctx, args[1])
	}
	fset := flag.NewFlagSet("httpd", flag.ContinueOnError)
	listen := fset.String("listen", envOr("LISTEN", ":8080"), "address to listen on (env LISTEN)")
	text := fset.String("text", envOr("TEXT", "hello from stellar httpd"), "line of text GET / answers with (env TEXT)")
	quiet := fset.Bool("quiet", os.Getenv("QUIET") != "", "do not log each request (env QUIET); benchmarks use it so the backend's own logging is not measured")
	if err := fset.Parse(args); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, os.Interrupt)
	defer stop()

	host, _ := os.Hostname()
	var unhealthy atomic.Bool
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s\n%s\n", host, *text)
	})
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		if unhealthy.Load() {
			http.Error(w, "unhealthy", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("POST /fail", func(w http.ResponseWriter, r *http.Request) {
		unhealthy.Store(true)
		fmt.Fprintln(w, "now unhealthy")
	})
	mux.HandleFunc("POST /recover", func(w http.ResponseWriter, r *http.Request) {
		unhealthy.Store(false)
		fmt.Fprintln(w, "now healthy")
	})

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *listen, err)
	}
	log := slog.New(slog.NewTextHandler(os.Stdout, nil))
	log.Info("serving", "addr", ln.Addr().String(), "hostname", host)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !*quiet {
				log.Info("request", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
			}
			mux.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
		shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(shutCtx)
	}
}

func probe(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("probe %s: %w", url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("probe %s: %w", url, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(os.Stdout, resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("probe %s: status %s", url, resp.Status)
	}
	return nil
}
