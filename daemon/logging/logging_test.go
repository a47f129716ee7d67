package logging

import (
	"log/slog"
	"testing"

	"github.com/coreos/go-systemd/v22/journal"
)

func TestFieldName(t *testing.T) {
	for in, want := range map[string]string{
		"app": "APP", "stellar_app": "STELLAR_APP", "container.id": "CONTAINER_ID",
		"_x": "X", "1st": "F_1ST", "a-b": "A_B",
	} {
		if got := FieldName(in); got != want {
			t.Errorf("FieldName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestJournalHandler_structuredFields(t *testing.T) {
	var gotMsg string
	var gotVars map[string]string
	var gotPri journal.Priority
	lv := new(slog.LevelVar)
	h := &journalHandler{ident: "stellar-appd", level: lv, send: func(m string, p journal.Priority, v map[string]string) error {
		gotMsg, gotPri, gotVars = m, p, v
		return nil
	}}
	log := slog.New(h).With("stellar_app", "web")
	log.Warn("instance restarted", "stellar_service", "api", "restarts", 3)
	if gotMsg != "instance restarted stellar_app=web stellar_service=api restarts=3" {
		t.Fatalf("message %q", gotMsg)
	}
	if gotPri != journal.PriWarning {
		t.Fatalf("priority %v", gotPri)
	}
	for k, v := range map[string]string{"SYSLOG_IDENTIFIER": "stellar-appd", "STELLAR_APP": "web", "STELLAR_SERVICE": "api", "RESTARTS": "3"} {
		if gotVars[k] != v {
			t.Errorf("%s = %q, want %q (all: %v)", k, gotVars[k], v, gotVars)
		}
	}
	log.Debug("hidden")
	if gotMsg != "instance restarted stellar_app=web stellar_service=api restarts=3" {
		t.Fatal("debug should be filtered at info level")
	}
}
