// Package httpapi serves a daemon's JSON API over HTTP the Stellar way:
// JSON bodies, errors as errdefs kinds, the wire version checked on every
// request, requests counted, and every change logged with who asked.
package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"stellar.dev/api"
	"stellar.dev/api/errdefs"
	"stellar.dev/daemon/listen"
	"stellar.dev/daemon/metrics"
)

// MaxBody is the largest request body DecodeJSON reads.
const MaxBody = 4 << 20

// WriteJSON writes v as JSON with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// WriteError writes err as {"error":{"code","message"}} with the status of
// its kind.
func WriteError(w http.ResponseWriter, err error) {
	status, body := errdefs.ToHTTP(err)
	WriteJSON(w, status, body)
}

// DecodeJSON reads the JSON body of r into v, refusing unknown fields, more
// than MaxBody bytes and trailing data, with an invalid-argument error that
// says what is wrong.
func DecodeJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, MaxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return errdefs.New(errdefs.ErrInvalidArgument, "request body is larger than %d bytes", MaxBody)
		}
		if errors.Is(err, io.EOF) {
			return errdefs.New(errdefs.ErrInvalidArgument, "request body is empty")
		}
		return errdefs.New(errdefs.ErrInvalidArgument, "decode request body: %v", err)
	}
	if dec.More() {
		return errdefs.New(errdefs.ErrInvalidArgument, "request body has data after the JSON value")
	}
	return nil
}

// HandlerFunc is a handler that returns an error instead of writing it.
type HandlerFunc func(w http.ResponseWriter, r *http.Request) error

// Handle adapts h: a returned error is written with WriteError.
func Handle(h HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			WriteError(w, err)
		}
	})
}

// statusWriter remembers the status written.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusWriter) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// Middleware wraps a daemon's API handler: it answers the wire version,
// refuses a request of another wire version, recovers panics, counts and
// times requests by route pattern, and logs every change request with the
// caller's credentials.
func Middleware(h http.Handler, mux *http.ServeMux, reg *metrics.Registry, log *slog.Logger) http.Handler {
	reqs := reg.Counter("stellar_api_requests_total", "API requests by route and status code.", "method", "route", "code")
	lat := reg.Histogram("stellar_api_request_seconds", "API request latency by route.", nil, "method", "route")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		w.Header().Set(api.WireHeader, strconv.Itoa(api.WireVersion))
		sw := &statusWriter{ResponseWriter: w}
		_, route := mux.Handler(r)
		if route == "" {
			route = "other"
		}
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				log.Error("api handler panicked", "method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(p))
				if sw.status == 0 {
					WriteError(sw, errdefs.New(errdefs.ErrInternal, "internal error serving %s %s", r.Method, r.URL.Path))
				}
			}
			code := sw.status
			if code == 0 {
				code = http.StatusOK
			}
			reqs.With(r.Method, route, strconv.Itoa(code)).Inc()
			lat.With(r.Method, route).Observe(time.Since(start).Seconds())
		}()
		if v := r.Header.Get(api.WireHeader); v != "" {
			if n, err := strconv.Atoi(v); err != nil || n != api.WireVersion {
				WriteError(sw, errdefs.New(errdefs.ErrUnsupportedVersion, "the client speaks wire version %s, this daemon speaks %d: upgrade the older side", v, api.WireVersion))
				return
			}
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			attrs := []any{"method", r.Method, "path", r.URL.Path}
			if c, ok := listen.PeerCred(r.Context()); ok {
				attrs = append(attrs, "uid", c.UID, "gid", c.GID, "pid", c.PID)
			} else if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
				attrs = append(attrs, "peer", r.TLS.PeerCertificates[0].Subject.CommonName)
			}
			log.Info("change requested", attrs...)
		}
		h.ServeHTTP(sw, r)
	})
}
