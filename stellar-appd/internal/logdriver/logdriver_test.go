package logdriver

import (
	"strings"
	"testing"
)

func TestIs_findsTheFlagAnywhere(t *testing.T) {
	// The shim passes the query as key/value pairs in map order.
	args := []string{"--app", "web", Flag, "1", "--dir", "/x"}
	if !Is(args) {
		t.Fatal("flag not found")
	}
	if Is([]string{"--config", "/etc/stellar/stellar.toml"}) {
		t.Fatal("daemon args taken for the log driver")
	}
	for k := range Args("a", "s", "0.s.a", "/d", "/j.sock") {
		if !strings.HasPrefix(k, "--") {
			t.Fatalf("key %q is not a flag", k)
		}
	}
}

func TestCopyLines(t *testing.T) {
	tests := []struct {
		name, in string
		want     []string
	}{
		{"lines", "a\nb\n", []string{"a", "b"}},
		{"no trailing newline", "a\nb", []string{"a", "b"}},
		{"crlf", "a\r\n", []string{"a"}},
		{"empty", "", nil},
		{"long line", strings.Repeat("x", 100000) + "\n", []string{strings.Repeat("x", 100000)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			copyLines(strings.NewReader(tt.in), func(l string) { got = append(got, l) })
			if strings.Join(got, "|") != strings.Join(tt.want, "|") {
				t.Fatalf("got %q", got)
			}
		})
	}
}
