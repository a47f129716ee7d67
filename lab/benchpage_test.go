package lab_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// The fault tests' figures also go into bench/ (issue 9, point 4): after
// each report, benchPage rewrites bench/LAB.md from the results file, one
// row per fault test (its latest line), so the end-to-end figures sit
// beside the benchmarks' RESULTS.md.

// benchPageFile is where the page goes: $STELLAR_E2E_BENCH, default
// ../bench/LAB.md (the test runs in lab/); "off" writes none.
func benchPageFile() string {
	if p := os.Getenv("STELLAR_E2E_BENCH"); p != "" {
		if p == "off" {
			return ""
		}
		return p
	}
	return filepath.Join("..", "bench", "LAB.md")
}

// readResults parses a results file: one JSON result a line; blank lines
// are skipped, a line that is not a result is an error naming it.
func readResults(data []byte) ([]result, error) {
	var out []result
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var r result
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			return nil, fmt.Errorf("results line %d: %w", n, err)
		}
		if r.Test == "" {
			return nil, fmt.Errorf("results line %d: no test name", n)
		}
		out = append(out, r)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read results: %w", err)
	}
	return out, nil
}

// benchPage renders the latest result of each test, in the order the
// tests first appear in rs, as bench/LAB.md.
func benchPage(rs []result, source string) []byte {
	latest := map[string]result{}
	var order []string
	for _, r := range rs {
		if _, ok := latest[r.Test]; !ok {
			order = append(order, r.Test)
		}
		latest[r.Test] = r
	}
	secs := func(v float64) string {
		if v == 0 {
			return "–"
		}
		return fmt.Sprintf("%.1f", v)
	}
	cell := func(s string) string {
		return strings.ReplaceAll(strings.ReplaceAll(s, "|", `\|`), "\n", " ")
	}
	var b bytes.Buffer
	b.WriteString(`# Stellar end-to-end fault figures (the lab)

Written by the lab's end-to-end test (` + "`go test ./lab -run TestEndToEnd`" + `, part of ` + "`make test`" + `, as root):
three nodes booted with systemd in ` + "`systemd-nspawn`" + `, Stellar's real .deb installed in each, a
3-instance web service and a busybox shell on every node, then faults. One row per fault test,
its latest run; each run also appends a JSON line to ` + "`lab/results/e2e.jsonl`" + ` (see lab/README.md,
"End-to-end tests", for what each test does and measures). The figures are times on a shared,
often loaded 2-core machine: read them as orders of magnitude, not as targets.

- detect: until a surviving node sees the fault; re-place: until the instances run again (kill -9:
  the slowest daemon back; reboot: power-on to the node's own containers running); converge: after
  the heal, until every node sees every node alive and exactly the wanted instances run.
- records lost: cluster records (apps/, dns/records/, and for a power-off the survivors' own keys)
  missing afterwards; requests failed: of the requests sent through the proxies during the fault.

| test | detect (s) | re-place (s) | converge (s) | records lost | requests failed | when | package | commit | load (1 min) | note |
|---|---|---|---|---|---|---|---|---|---|---|
`)
	for _, name := range order {
		r := latest[name]
		load := "–"
		if r.Load1 > 0 {
			load = fmt.Sprintf("%.1f", r.Load1)
		}
		commit := r.Commit
		if commit == "" {
			commit = "–"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %d | %d of %d | %s | %s | %s | %s | %s |\n",
			cell(r.Test), secs(r.DetectS), secs(r.ReplaceS), secs(r.ConvergeS), r.RecordsLost, r.RequestsFailed, r.Requests,
			cell(r.Time), cell(r.Version), cell(commit), load, cell(r.Note))
	}
	fmt.Fprintf(&b, "\n_From %s._\n", source)
	return b.Bytes()
}

// writeBenchPage rewrites the bench page from the results file at results.
func writeBenchPage(results, page string) error {
	data, err := os.ReadFile(results)
	if err != nil {
		return fmt.Errorf("read results for %s: %w", page, err)
	}
	rs, err := readResults(data)
	if err != nil {
		return fmt.Errorf("%s: %w", results, err)
	}
	src := filepath.ToSlash(results)
	absRes, err1 := filepath.Abs(results)
	absRoot, err2 := filepath.Abs("..")
	if err1 == nil && err2 == nil {
		if rel, err := filepath.Rel(absRoot, absRes); err == nil && !strings.HasPrefix(rel, "..") {
			src = "`" + filepath.ToSlash(rel) + "`"
		}
	}
	tmp := page + ".tmp"
	if err := os.WriteFile(tmp, benchPage(rs, src), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", page, err)
	}
	if err := os.Rename(tmp, page); err != nil {
		return fmt.Errorf("write %s: %w", page, err)
	}
	return nil
}
