// Package errdefs defines the kinds of error every Stellar API returns and
// maps them to and from HTTP, in this one place, so that
// errors.Is(err, errdefs.ErrNotFound) holds on both sides of a socket.
package errdefs

import (
	"errors"
	"fmt"
	"net/http"
)

// The error kinds. Wrap them with fmt.Errorf("...: %w", ErrNotFound) or use
// the constructors below; test them with errors.Is.
var (
	ErrNotFound           = errors.New("not found")
	ErrAlreadyExists      = errors.New("already exists")
	ErrInvalidArgument    = errors.New("invalid argument")
	ErrConflict           = errors.New("conflict")
	ErrUnavailable        = errors.New("unavailable")
	ErrResourceExhausted  = errors.New("resource exhausted")
	ErrPermissionDenied   = errors.New("permission denied")
	ErrGone               = errors.New("gone")
	ErrUnsupportedVersion = errors.New("unsupported version")
	ErrInternal           = errors.New("internal error")
)

// kind ties an error kind to its wire code and HTTP status.
type kind struct {
	err    error
	code   string
	status int
}

// kinds is the one table that maps kinds to the wire. Order matters only
// for errors that wrap several kinds: the first match wins.
var kinds = []kind{
	{ErrNotFound, "not_found", http.StatusNotFound},
	{ErrAlreadyExists, "already_exists", http.StatusConflict},
	{ErrInvalidArgument, "invalid_argument", http.StatusBadRequest},
	{ErrConflict, "conflict", http.StatusPreconditionFailed},
	{ErrUnavailable, "unavailable", http.StatusServiceUnavailable},
	{ErrResourceExhausted, "resource_exhausted", http.StatusInsufficientStorage},
	{ErrPermissionDenied, "permission_denied", http.StatusForbidden},
	{ErrGone, "gone", http.StatusGone},
	{ErrUnsupportedVersion, "unsupported_version", http.StatusBadRequest},
	{ErrInternal, "internal", http.StatusInternalServerError},
}

// Error is an error as it travels on the wire: a kind and a message.
type Error struct {
	// Kind is one of the Err* values.
	Kind error
	// Message is the full human-readable message.
	Message string
}

func (e *Error) Error() string { return e.Message }

// Unwrap lets errors.Is see the kind.
func (e *Error) Unwrap() error { return e.Kind }

// New returns an error of the given kind with a formatted message.
func New(k error, format string, args ...any) error {
	return &Error{Kind: k, Message: fmt.Sprintf(format, args...)}
}

// Body is the JSON body of every error response:
// {"error":{"code":"not_found","message":"..."}}.
type Body struct {
	Error BodyError `json:"error"`
}

// BodyError is the inner object of Body.
type BodyError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// ToHTTP returns the HTTP status and the wire body for err. An error of no
// known kind is an internal error.
func ToHTTP(err error) (int, Body) {
	for _, k := range kinds {
		if errors.Is(err, k.err) {
			return k.status, Body{Error: BodyError{Code: k.code, Message: err.Error()}}
		}
	}
	return http.StatusInternalServerError, Body{Error: BodyError{Code: "internal", Message: err.Error()}}
}

// FromHTTP turns an error response back into an error of the right kind.
// The code wins over the status; a body with no known code falls back to the
// status.
func FromHTTP(status int, b Body) error {
	msg := b.Error.Message
	if msg == "" {
		msg = http.StatusText(status)
	}
	for _, k := range kinds {
		if b.Error.Code == k.code {
			return &Error{Kind: k.err, Message: msg}
		}
	}
	for _, k := range kinds {
		if status == k.status {
			return &Error{Kind: k.err, Message: msg}
		}
	}
	return &Error{Kind: ErrInternal, Message: fmt.Sprintf("unexpected status %d: %s", status, msg)}
}

// Code returns the wire code of err's kind ("internal" when none).
func Code(err error) string {
	_, b := ToHTTP(err)
	return b.Error.Code
}
