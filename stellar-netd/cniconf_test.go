package main

import (
	"flag"
	"os"
	"path/filepath"
	"testing"

	"stellar.dev/daemon/config"
)

var update = flag.Bool("update", false, "rewrite golden files")

func TestCNIConf_golden(t *testing.T) {
	cfg := config.DefaultConfig()
	got, err := cniConf(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join("testdata", "10-stellar.conflist")
	if *update {
		os.WriteFile(p, got, 0o644)
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if string(want) != string(got) {
		t.Fatalf("CNI configuration differs from %s:\n%s", p, got)
	}
}
