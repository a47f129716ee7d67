package hostnet

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files")

func golden(t *testing.T, name, got string) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		os.WriteFile(p, []byte(got), 0o644)
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if string(want) != got {
		t.Fatalf("%s differs:\n--- want\n%s--- got\n%s", name, want, got)
	}
}

func TestTableRules_golden(t *testing.T) {
	got := TableRules(netip.MustParsePrefix("172.16.4.0/22"), netip.MustParsePrefix("172.16.0.0/12"), "stellar0")
	golden(t, "table.nft", got)
}

func TestHostMask(t *testing.T) {
	for _, tc := range []struct {
		bits int
		want string
	}{{22, "0.0.3.255"}, {24, "0.0.0.255"}, {16, "0.0.255.255"}, {30, "0.0.0.3"}, {8, "0.255.255.255"}} {
		t.Run(tc.want, func(t *testing.T) {
			if got := hostMask(tc.bits).String(); got != tc.want {
				t.Fatalf("hostMask(%d) = %s, want %s", tc.bits, got, tc.want)
			}
		})
	}
}
