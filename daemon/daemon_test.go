package daemon

import (
	"context"
	"strings"
	"testing"
)

func testSpec() Spec {
	return Spec{
		Name:        "testd",
		Summary:     "a daemon for tests",
		Description: "It does nothing.",
		Commands:    []Command{{Name: "cleanup", Summary: "Remove what it made."}},
	}
}

func TestHelp_isManPageShaped(t *testing.T) {
	h := Help(testSpec())
	for _, want := range []string{"NAME\n    stellar-testd - a daemon for tests", "SYNOPSIS", "DESCRIPTION\n    It does nothing.", "COMMANDS", "    cleanup\n        Remove what it made.", "OPTIONS", "--config PATH", "SIGNALS", "FILES", "/run/stellar/testd.sock", "SEE ALSO"} {
		if !strings.Contains(h, want) {
			t.Errorf("help lacks %q:\n%s", want, h)
		}
	}
}

func TestRun_badArguments(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"--nope"}, "flag provided but not defined: -nope"},
		{[]string{"run", "extra"}, `unexpected argument "extra"`},
		{[]string{"--config", "/nonexistent/stellar.toml", "config"}, "read config"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			err := Run(context.Background(), testSpec(), tt.args)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want %q", err, tt.want)
			}
		})
	}
}
