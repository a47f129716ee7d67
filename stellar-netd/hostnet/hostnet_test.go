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

func TestMasqueradeRules_golden(t *testing.T) {
	got := MasqueradeRules(netip.MustParsePrefix("172.16.4.0/22"), netip.MustParsePrefix("172.16.0.0/12"), "stellar0")
	golden(t, "masquerade.nft", got)
}
