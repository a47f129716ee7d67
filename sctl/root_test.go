package main

import (
	"strings"
	"testing"
)

func TestRoot_unknownSubcommandIsAnError(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		wantErr string // "" when the group's help is printed and it succeeds
	}{
		{args: []string{"state", "put", "k"}, wantErr: `unknown command "put" for "sctl state"`},
		{args: []string{"cluster", "nodez"}, wantErr: `(did you mean "nodes"?)`},
		{args: []string{"cluster", "keys", "rotate"}, wantErr: `unknown command "rotate" for "sctl cluster keys"`},
		{args: []string{"state"}},
		{args: []string{"cluster", "keys"}},
	} {
		t.Run(strings.Join(tc.args, "_"), func(t *testing.T) {
			out, err := runSctlNS(t, tc.args...)
			if tc.wantErr == "" {
				if err != nil || !strings.Contains(out, "Available Commands:") {
					t.Fatalf("err = %v, output %q; want the group's help", err, out)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want it to contain %s", err, tc.wantErr)
			}
		})
	}
}
