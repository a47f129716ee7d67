// Package logging builds a daemon's slog.Logger: text to stderr, or, when
// stderr is the journal, native journald entries whose attributes become
// structured fields (journalctl STELLAR_APP=web).
package logging

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/coreos/go-systemd/v22/journal"
	"golang.org/x/sys/unix"
)

// ParseLevel turns "debug", "info", "warn" or "error" into a level.
func ParseLevel(s string) slog.Level {
	switch s {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// New returns the logger of the daemon named ident ("stellar-dnsd") at the
// given level. Output goes to the journal when JOURNAL_STREAM says stderr
// is connected to it, otherwise as text to w.
func New(ident string, level *slog.LevelVar, w io.Writer) *slog.Logger {
	if StderrIsJournal() && journal.Enabled() {
		return slog.New(&journalHandler{ident: ident, level: level, send: journal.Send})
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// StderrIsJournal reports whether stderr is the journal's stream, as
// systemd says in JOURNAL_STREAM=<dev>:<ino>.
func StderrIsJournal() bool {
	js := os.Getenv("JOURNAL_STREAM")
	if js == "" {
		return false
	}
	var st unix.Stat_t
	if err := unix.Fstat(2, &st); err != nil {
		return false
	}
	return js == fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

type sendFunc func(msg string, p journal.Priority, vars map[string]string) error

type journalHandler struct {
	ident  string
	level  *slog.LevelVar
	send   sendFunc
	prefix string      // group prefix, "GROUP_"
	attrs  []slog.Attr // from WithAttrs, already prefixed
}

func (h *journalHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level.Level() }

func (h *journalHandler) Handle(_ context.Context, r slog.Record) error {
	vars := map[string]string{"SYSLOG_IDENTIFIER": h.ident}
	var text strings.Builder
	text.WriteString(r.Message)
	add := func(prefix string, a slog.Attr) {
		addAttr(vars, &text, prefix, a)
	}
	for _, a := range h.attrs {
		add("", a)
	}
	r.Attrs(func(a slog.Attr) bool { add(h.prefix, a); return true })
	return h.send(text.String(), priority(r.Level), vars)
}

// addAttr sets a journal field for a and appends key=value to the message
// text, so plain `journalctl` output stays readable.
func addAttr(vars map[string]string, text *strings.Builder, prefix string, a slog.Attr) {
	a.Value = a.Value.Resolve()
	if a.Value.Kind() == slog.KindGroup {
		for _, g := range a.Value.Group() {
			addAttr(vars, text, prefix+a.Key+"_", g)
		}
		return
	}
	if a.Key == "" {
		return
	}
	v := a.Value.String()
	vars[FieldName(prefix+a.Key)] = v
	if strings.ContainsAny(v, " \t\"") {
		v = fmt.Sprintf("%q", v)
	}
	fmt.Fprintf(text, " %s=%s", prefix+a.Key, v)
}

// FieldName turns an attribute key into a journal field name: upper case,
// anything but letters, digits and '_' becomes '_', never a leading '_' or
// digit.
func FieldName(k string) string {
	b := []byte(strings.ToUpper(k))
	for i, c := range b {
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			b[i] = '_'
		}
	}
	s := strings.TrimLeft(string(b), "_")
	if s == "" || s[0] >= '0' && s[0] <= '9' {
		s = "F_" + s
	}
	return s
}

func priority(l slog.Level) journal.Priority {
	switch {
	case l >= slog.LevelError:
		return journal.PriErr
	case l >= slog.LevelWarn:
		return journal.PriWarning
	case l >= slog.LevelInfo:
		return journal.PriInfo
	}
	return journal.PriDebug
}

func (h *journalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	nh := &journalHandler{ident: h.ident, level: h.level, send: h.send, prefix: h.prefix}
	nh.attrs = append(append([]slog.Attr{}, h.attrs...), prefixed(h.prefix, as)...)
	return nh
}

func prefixed(p string, as []slog.Attr) []slog.Attr {
	if p == "" {
		return as
	}
	out := make([]slog.Attr, len(as))
	for i, a := range as {
		out[i] = slog.Attr{Key: p + a.Key, Value: a.Value}
	}
	return out
}

func (h *journalHandler) WithGroup(name string) slog.Handler {
	return &journalHandler{ident: h.ident, level: h.level, send: h.send, prefix: h.prefix + name + "_", attrs: h.attrs}
}
