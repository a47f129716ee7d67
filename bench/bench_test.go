package bench

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"stellar.dev/bench/harness"
	"stellar.dev/bench/plot"
)

// TestBenchmarks_short runs every benchmark in its short mode, only to prove
// it still runs: no figure is asserted (the machines are shared and noisy).
func TestBenchmarks_short(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("benchmarks need root (network namespaces): SKIPPED — run make test as root")
	}
	_, file, _, _ := runtime.Caller(0)
	repo := filepath.Dir(filepath.Dir(file))
	binDir := filepath.Join(repo, "bin")
	if _, err := os.Stat(filepath.Join(binDir, "stellar-gossip")); err != nil {
		binDir = t.TempDir()
		cmd := exec.Command("go", "build", "-o", binDir+"/", "stellar.dev/stellar-gossip", "stellar.dev/stellar-netd", "stellar.dev/stellar-dnsd", "stellar.dev/stellar-proxyd", "stellar.dev/stellar-appd")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build daemons: %v\n%s", err, out)
		}
	}
	o := harness.Options{Short: true, Runs: 1, BinDir: binDir, WorkDir: t.TempDir(), Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for _, oc := range harness.RunAll(context.Background(), All(), nil, o) {
		t.Run(oc.Bench.Name, func(t *testing.T) {
			if oc.Err != nil {
				t.Fatal(oc.Err)
			}
			if len(oc.Result.Subjects) == 0 {
				t.Fatal("no subject measured")
			}
			t.Logf("\n%s", harness.Table(oc.Result))
		})
	}
}

func TestReport_table(t *testing.T) {
	s := harness.Subject{Name: "stellar-dnsd", Kind: harness.KindStellar}
	p := harness.Subject{Name: "CoreDNS", Kind: harness.KindPeer}
	for _, v := range []float64{100, 90, 110, 95, 105} {
		s.Add("qps", v)
		p.Add("qps", v/2)
	}
	r := harness.Result{Metrics: []harness.Metric{{Name: "qps", Unit: "req/s", HigherIsBetter: true}}, Subjects: []harness.Subject{s, p}}
	tab := harness.Table(r)
	if !strings.Contains(tab, "| stellar-dnsd | stellar |  | 100 [90.0–110] | – |") || !strings.Contains(tab, "| CoreDNS | peer |  | 50.0 [45.0–55.0] | 2.00 |") {
		t.Fatalf("table:\n%s", tab)
	}
}

func TestWritePlots_chartsAndSpreadBesideReport(t *testing.T) {
	s := harness.Subject{Name: "stellar-gossip", Kind: harness.KindStellar}
	for _, v := range []float64{12, 13, 11, 12, 14} {
		s.Add("rss", v)
	}
	r := harness.Result{
		Metrics:  []harness.Metric{{Name: "rss", Unit: "MiB"}},
		Subjects: []harness.Subject{s},
		Charts: []harness.Chart{
			{Name: "converge", Chart: plot.Chart{Title: "c", Kind: plot.Line, Series: []plot.Series{{Name: "a", X: []float64{10, 30}, Y: []float64{1, 2}}}}},
			{Name: "Bad Name", Chart: plot.Chart{Title: "c", Kind: plot.CDF, Series: []plot.Series{{Name: "a", Y: []float64{1}}}}},
		},
	}
	outs := []harness.Outcome{{Bench: harness.Benchmark{Name: "gossip", Title: "Gossip"}, Result: r}, {Bench: harness.Benchmark{Name: "dns"}, Err: os.ErrNotExist}}
	dir := t.TempDir()
	err := harness.WritePlots(dir, outs)
	if err == nil || !strings.Contains(err.Error(), `chart name "Bad Name"`) {
		t.Fatalf("bad chart name not reported: %v", err)
	}
	want := []string{"gossip-converge.png", "gossip-runs-rss.png"}
	if got := outs[0].Result.Plots; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("plots %v, want %v", got, want)
	}
	for _, f := range want {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	if rep := harness.Report(harness.ReadMachine(), outs); !strings.Contains(rep, "![gossip-converge.png](gossip-converge.png)") {
		t.Fatalf("report does not show the plot:\n%s", rep)
	}
}

func TestUpdate_replacesOnlyTheSectionsRun(t *testing.T) {
	benches := []harness.Benchmark{{Name: "footprint", Title: "Footprint"}, {Name: "dns", Title: "DNS"}, {Name: "proxy", Title: "Proxy"}}
	m := harness.Machine{Cores: 2}
	result := func(v float64) harness.Result {
		s := harness.Subject{Name: "stellar", Kind: harness.KindStellar}
		s.Add("qps", v)
		return harness.Result{Metrics: []harness.Metric{{Name: "qps", Unit: "q/s", HigherIsBetter: true}}, Subjects: []harness.Subject{s}}
	}
	old := harness.Report(m, []harness.Outcome{
		{Bench: benches[2], Result: result(3)},
		{Bench: benches[0], Result: result(1)},
	})
	tests := []struct {
		name string
		outs []harness.Outcome
		want []string // section headings in order, with a figure each
	}{
		{"replace one, keep the other", []harness.Outcome{{Bench: benches[2], Result: result(7)}}, []string{"## Footprint", "| 1.00 ", "## Proxy", "| 7.00 "}},
		{"add a new one in the benchmarks' order", []harness.Outcome{{Bench: benches[1], Result: result(5)}}, []string{"## Footprint", "| 1.00 ", "## DNS", "| 5.00 ", "## Proxy", "| 3.00 "}},
		{"a failure replaces the old figures", []harness.Outcome{{Bench: benches[0], Err: os.ErrNotExist}}, []string{"## Footprint", "Did not complete", "## Proxy", "| 3.00 "}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := harness.Update(old, m, benches, tc.outs)
			rest := got
			for _, w := range tc.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("%q missing or out of order in:\n%s", w, got)
				}
				rest = rest[i+len(w):]
			}
			if strings.Count(got, "# Stellar benchmark results") != 1 {
				t.Fatalf("header repeated:\n%s", got)
			}
		})
	}
	if got := harness.Update("# an old report without markers\n## Footprint\n", m, benches, nil); strings.Contains(got, "## Footprint") {
		t.Fatalf("unmarked old section kept:\n%s", got)
	}
}
