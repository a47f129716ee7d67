package lab_test

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func TestBenchPage_latestRunOfEachTest(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "results.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	rs, err := readResults(data)
	if err != nil {
		t.Fatal(err)
	}
	got := benchPage(rs, "`lab/results/e2e.jsonl`")
	golden := filepath.Join("testdata", "LAB.md.golden")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("bench page differs from %s (go test -run TestBenchPage -update):\n%s", golden, got)
	}
}

func TestWriteBenchPage_fromResultsFile(t *testing.T) {
	dir := t.TempDir()
	res := filepath.Join(dir, "e2e.jsonl")
	page := filepath.Join(dir, "LAB.md")
	line := `{"test":"poweroff-node3","time":"t","version":"v","detect_s":4.1,"replace_s":71.3,"records_lost":0,"requests_failed":0,"requests":120}` + "\n"
	if err := os.WriteFile(res, []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeBenchPage(res, page); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "| poweroff-node3 | 4.1 | 71.3 | – | 0 | 0 of 120 |") {
		t.Errorf("page lacks the row:\n%s", b)
	}
	if err := writeBenchPage(filepath.Join(dir, "missing.jsonl"), page); err == nil {
		t.Error("no error for a missing results file")
	}
}

func TestReadResults_badLines(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"not json", "{\"test\":\"a\"}\nnope\n", "results line 2"},
		{"no test name", `{"detect_s":1}`, "line 1: no test name"},
		{"wrong type", `{"test":"a","detect_s":"fast"}`, "results line 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := readResults([]byte(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("readResults(%q) = %v, want an error with %q", tc.in, err, tc.want)
			}
		})
	}
}

func FuzzReadResults(f *testing.F) {
	if b, err := os.ReadFile(filepath.Join("testdata", "results.jsonl")); err == nil {
		f.Add(b)
	}
	f.Add([]byte(`{"test":"x|y\nz","note":"|"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		rs, err := readResults(data)
		if err != nil {
			return
		}
		page := benchPage(rs, "x")
		for _, r := range rs {
			if r.Test == "" {
				t.Fatal("a result with no test name was accepted")
			}
		}
		if n := bytes.Count(page, []byte("\n| ")); n > len(rs)+1 {
			t.Fatalf("%d rows for %d results", n, len(rs))
		}
	})
}
