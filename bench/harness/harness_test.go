package harness

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func subject(name, kind, group string, samples map[string][]float64) Subject {
	s := Subject{Name: name, Kind: kind, Version: "v", Group: group}
	for m, xs := range samples {
		for _, x := range xs {
			s.Add(m, x)
		}
	}
	return s
}

func TestTable_ratiosWithinGroups(t *testing.T) {
	metrics := []Metric{{Name: "converge", Unit: "ms"}, {Name: "idle", Unit: "kbit/s"}}
	for _, tc := range []struct {
		name   string
		result Result
	}{
		{"ungrouped", Result{Metrics: metrics, Subjects: []Subject{
			subject("stellar", KindStellar, "", map[string][]float64{"converge": {100, 110, 90}, "idle": {2}}),
			subject("peer", KindPeer, "", map[string][]float64{"converge": {50}, "idle": {4}}),
			subject("limit", KindLimit, "", map[string][]float64{"idle": {1}}),
		}}},
		{"groups", Result{Metrics: metrics, Ratios: []string{"converge", "idle"}, Subjects: []Subject{
			subject("stellar-lan N=3", KindStellar, "N=3", map[string][]float64{"converge": {100}, "idle": {2}}),
			subject("serf N=3", KindPeer, "N=3", map[string][]float64{"converge": {200}, "idle": {4}}),
			subject("stellar-edge N=3", KindStellar, "N=3", map[string][]float64{"converge": {900}, "idle": {1}}),
			subject("stellar-lan N=10", KindStellar, "N=10", map[string][]float64{"converge": {300}, "idle": {3}}),
			subject("serf N=10", KindPeer, "N=10", map[string][]float64{"converge": {150}, "idle": {3}}),
			subject("serf N=30", KindPeer, "N=30", map[string][]float64{"converge": {150}}),
		}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkGolden(t, "table-"+tc.name+".md", Table(tc.result))
		})
	}
}

func TestSection_interruptedKeepsMeasuredRows(t *testing.T) {
	m := Machine{Cores: 2, Stellar: "0.1.0", Command: "stellar-bench -only gossip"}
	when := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name    string
		outcome Outcome
	}{
		{"partial", Outcome{
			Bench: Benchmark{Name: "gossip", Title: "Gossip"},
			Result: Result{Metrics: []Metric{{Name: "converge", Unit: "ms"}}, Notes: []string{"a note"}, Subjects: []Subject{
				subject("stellar-lan N=3", KindStellar, "N=3", map[string][]float64{"converge": {100}}),
				subject("serf N=3", KindPeer, "N=3", map[string][]float64{"converge": {200}}),
			}},
			Err: context.Canceled, Took: time.Minute, When: when,
		}},
		{"nothing", Outcome{Bench: Benchmark{Name: "gossip", Title: "Gossip"}, Err: context.Canceled, Took: time.Second, When: when}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkGolden(t, "section-"+tc.name+".md", Section(m, tc.outcome))
		})
	}
}

// checkGolden compares got with testdata/name; go test -update rewrites it.
func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	golden := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("read golden file (go test -update writes it): %v", err)
	}
	if got != string(want) {
		t.Fatalf("output differs from %s:\ngot:\n%s\nwant:\n%s", golden, got, want)
	}
}
