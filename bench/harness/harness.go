// Package harness runs Stellar's side-by-side benchmarks and writes their
// report: every benchmark measures Stellar and the peer an operator would
// pick instead in the same run, on the same machine, with the same CPU
// pinning, and reports medians with min and max and the ratio.
package harness

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"stellar.dev/bench/plot"
)

// Options are given to every benchmark.
type Options struct {
	// Short asks for a run of a few seconds that only proves the benchmark
	// still works (make test); its figures mean nothing.
	Short bool
	// Runs is how many times each measurement is repeated (at least 5 for a
	// report; 1 in short mode).
	Runs int
	// BinDir holds Stellar's binaries (./bin).
	BinDir string
	// WorkDir is a scratch directory for the benchmark.
	WorkDir string
	// PlotDir is where PNG plots go ("" = no plots).
	PlotDir string
	// Log reports progress.
	Log *slog.Logger
}

// Benchmark is one side-by-side comparison.
type Benchmark struct {
	// Name is short and unique ("dns", "proxy", "footprint").
	Name string
	// Title is the report's heading.
	Title string
	// Run measures and returns the result.
	Run func(ctx context.Context, o Options) (Result, error)
}

// Result is what a benchmark measured.
type Result struct {
	// Metrics name what was measured, in order of importance.
	Metrics []Metric
	// Subjects are Stellar, its peers and the physical limit.
	Subjects []Subject
	// Goal states the target ("at least 2x CoreDNS"), if any.
	Goal string
	// Notes are anything a reader must know (setup, pinning, caveats).
	Notes []string
	// Plots are PNG files (relative to the report) to show; WritePlots adds
	// the rendered Charts here.
	Plots []string
	// Charts are drawn as PNG beside the report by WritePlots: curves
	// (a figure against cluster size) and distributions (latencies).
	Charts []Chart
	// Ratios names the metrics that get a Stellar/subject column each, in
	// this order; empty means the first metric alone.
	Ratios []string
}

// Chart is one picture a benchmark attaches to its result.
type Chart struct {
	// Name makes the file name, "<benchmark>-<name>.png" (letters, digits, '-').
	Name string
	// Chart is what to draw.
	Chart plot.Chart
}

// Metric is one measured quantity.
type Metric struct {
	Name string // "qps", "p99"
	Unit string // "req/s", "ms", "MiB"
	// HigherIsBetter orients the ratio's meaning in the report.
	HigherIsBetter bool
}

// Subject kinds.
const (
	KindStellar = "stellar"
	KindPeer    = "peer"
	KindLimit   = "limit"
)

// Subject is one thing measured.
type Subject struct {
	Name    string // "stellar-dnsd", "CoreDNS 1.12.1 (file plugin)"
	Kind    string
	Version string
	// Group names the rows compared with each other ("N=10"): a subject's
	// ratio divides the first Stellar subject of its own group by it.
	// Subjects with no group are one group.
	Group string
	// Samples holds each metric's samples, by Metric.Name.
	Samples map[string][]float64
}

// Add records one sample.
func (s *Subject) Add(metric string, v float64) {
	if s.Samples == nil {
		s.Samples = map[string][]float64{}
	}
	s.Samples[metric] = append(s.Samples[metric], v)
}

// Stats summarise samples.
type Stats struct {
	Median, Min, Max float64
	N                int
}

// Summarise returns the median, min and max of xs.
func Summarise(xs []float64) Stats {
	if len(xs) == 0 {
		return Stats{}
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Stats{Median: med, Min: s[0], Max: s[len(s)-1], N: len(s)}
}

// Machine describes where the benchmarks ran.
type Machine struct {
	Cores  int
	CPU    string
	Kernel string
	Go     string
	// OS is PRETTY_NAME from /etc/os-release.
	OS string
	// Stellar is the measured binaries' version and the tree's commit.
	Stellar string
	// Command is how the report was made, to re-run it.
	Command string
}

// LoadAverage returns the 1-minute load average (0 when unknown).
func LoadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// ReadMachine reads the machine's description.
func ReadMachine() Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "PRETTY_NAME="); ok {
				m.OS = strings.Trim(v, `"`)
			}
		}
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

// Pinned returns cmd wrapped in taskset so it runs on the given CPUs
// ("0", "1", "0-1"), when taskset exists and the machine has them.
func Pinned(cpus string, name string, args ...string) *exec.Cmd {
	if _, err := exec.LookPath("taskset"); err == nil && runtime.NumCPU() > 1 {
		return exec.Command("taskset", append([]string{"-c", cpus, name}, args...)...)
	}
	return exec.Command(name, args...)
}

// PackageVersion returns the installed version of a Debian package, or
// "not installed".
func PackageVersion(pkg string) string {
	out, err := exec.Command("dpkg-query", "-W", "-f=${Version}", pkg).Output()
	if err != nil || len(out) == 0 {
		return "not installed"
	}
	return string(out)
}

// RunAll runs the benchmarks named in only (all when empty) and returns
// their results in order. A benchmark that fails is reported, not fatal.
func RunAll(ctx context.Context, benches []Benchmark, only []string, o Options) []Outcome {
	var out []Outcome
	for _, b := range benches {
		if len(only) > 0 && !contains(only, b.Name) {
			continue
		}
		o := o
		o.WorkDir = filepath.Join(o.WorkDir, b.Name)
		if err := os.MkdirAll(o.WorkDir, 0o755); err != nil {
			out = append(out, Outcome{Bench: b, Err: err})
			continue
		}
		o.Log.Info("benchmark", "name", b.Name, "short", o.Short, "runs", o.Runs)
		start, load := time.Now(), LoadAverage()
		r, err := b.Run(ctx, o)
		out = append(out, Outcome{Bench: b, Result: r, Err: err, Took: time.Since(start), When: time.Now().UTC(), LoadStart: load, LoadEnd: LoadAverage()})
		if err != nil {
			o.Log.Error("benchmark failed", "name", b.Name, "err", err)
		}
	}
	return out
}

// Outcome is a benchmark's result or error.
type Outcome struct {
	Bench  Benchmark
	Result Result
	Err    error
	Took   time.Duration
	// When the benchmark finished.
	When time.Time
	// LoadStart and LoadEnd are the 1-minute load averages before and after
	// this benchmark: above half the cores, other work shared the machine.
	LoadStart, LoadEnd float64
}

func contains(xs []string, s string) bool {
	for _, x := range xs {
		if x == s {
			return true
		}
	}
	return false
}

// Report renders the outcomes as Markdown: a header describing the machine,
// then one section per outcome. Each section starts with a marker line
// naming its benchmark, so Update can replace it alone later.
func Report(m Machine, outs []Outcome) string {
	var b strings.Builder
	b.WriteString(header(m))
	for _, o := range outs {
		b.WriteString(Section(m, o))
	}
	return b.String()
}

// Update renders the outcomes into an existing report: the sections of the
// benchmarks that ran are replaced (or added), every other section of old is
// kept as it was, and sections follow the order of benches. A report made
// before sections carried markers keeps none of its old sections.
func Update(old string, m Machine, benches []Benchmark, outs []Outcome) string {
	kept := sections(old)
	for _, o := range outs {
		kept[o.Bench.Name] = Section(m, o)
	}
	var b strings.Builder
	b.WriteString(header(m))
	for _, bn := range benches {
		if s, ok := kept[bn.Name]; ok {
			b.WriteString(s)
		}
	}
	return b.String()
}

const sectionMarker = "<!-- bench:"

// sections splits a report into its marked sections, by benchmark name.
func sections(report string) map[string]string {
	out := map[string]string{}
	parts := strings.Split(report, sectionMarker)
	for _, p := range parts[1:] {
		name, _, ok := strings.Cut(p, " -->")
		if !ok || strings.ContainsAny(name, " \n") {
			continue
		}
		out[name] = sectionMarker + p
	}
	return out
}

func header(m Machine) string {
	var b strings.Builder
	b.WriteString("# Stellar benchmark results\n\n")
	b.WriteString("Written by `make bench`. Each benchmark runs Stellar and the peer an operator would pick instead\n")
	b.WriteString("in the same run on the same machine with the same CPU pinning. Figures are medians with\n")
	b.WriteString("[min–max] over the runs; the ratio is Stellar's median over the subject's. Each section\n")
	b.WriteString("ends with when it ran, from which commit, and how loaded the machine was: a section can be\n")
	b.WriteString("re-run alone (`-only NAME`), which replaces it and keeps the others.\n\n")
	fmt.Fprintf(&b, "Machine: %d cores, %s, %s, kernel %s, %s.\n\n", m.Cores, m.CPU, m.OS, m.Kernel, m.Go)
	b.WriteString("Re-run: `make bench` (as root; `make bench-deps` installs the peers), or one benchmark:\n")
	b.WriteString("`go run ./bench/cmd/stellar-bench -only NAME` (names: `go run ./bench/cmd/stellar-bench -h`).\n\n")
	return b.String()
}

// Section renders one outcome, with its marker line and its run's
// circumstances (when, what, how loaded).
func Section(m Machine, o Outcome) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s%s -->\n## %s\n\n", sectionMarker, o.Bench.Name, o.Bench.Title)
	if o.Err != nil {
		fmt.Fprintf(&b, "**Did not complete:** %v\n\n", o.Err)
		if len(o.Result.Subjects) > 0 {
			// What was measured before it stopped is still worth keeping.
			b.WriteString("Measured before it stopped:\n\n")
		}
	}
	if o.Err == nil || len(o.Result.Subjects) > 0 {
		r := o.Result
		if r.Goal != "" {
			fmt.Fprintf(&b, "Goal: %s\n\n", r.Goal)
		}
		b.WriteString(Table(r))
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
		if len(r.Notes) > 0 {
			b.WriteString("\n")
		}
		for _, p := range r.Plots {
			fmt.Fprintf(&b, "![%s](%s)\n\n", filepath.Base(p), p)
		}
	}
	fmt.Fprintf(&b, "_Ran %s for %s", o.When.Format(time.RFC3339), o.Took.Round(time.Second))
	if m.Stellar != "" {
		fmt.Fprintf(&b, "; Stellar %s", m.Stellar)
	}
	if m.Command != "" {
		fmt.Fprintf(&b, "; `%s`", m.Command)
	}
	b.WriteString("._\n")
	// The load average lags and counts the benchmark's own processes (and
	// the one before it): only above the core count did other work share
	// the machine for sure.
	if m.Cores > 0 && max(o.LoadStart, o.LoadEnd) > float64(m.Cores) {
		fmt.Fprintf(&b, "**Taken on a loaded machine:** the 1-minute load average was %.1f before and %.1f after on %d cores (more runnable work than cores: other work, or the benchmark's own processes). Absolute figures are lower and noisier than on an idle machine; Stellar and its peers ran in the same run, alternating, so the ratios stay comparable.\n", o.LoadStart, o.LoadEnd, m.Cores)
	} else if m.Cores > 0 {
		fmt.Fprintf(&b, "_1-minute load average %.1f before, %.1f after, on %d cores (the benchmark's own processes count in it): no other work to speak of._\n", o.LoadStart, o.LoadEnd, m.Cores)
	}
	b.WriteString("\n")
	return b.String()
}

// Table renders one result as a Markdown table: a row per subject, a column
// per metric, and the ratio of Stellar to each subject on the first metric
// (or on each of Result.Ratios), where Stellar is the first Stellar subject
// of the subject's group.
func Table(r Result) string {
	var b strings.Builder
	ref := map[string]*Subject{} // group -> its first Stellar subject
	for i := range r.Subjects {
		s := &r.Subjects[i]
		if _, ok := ref[s.Group]; !ok && s.Kind == KindStellar {
			ref[s.Group] = s
		}
	}
	ratios := r.Ratios
	if len(ratios) == 0 && len(r.Metrics) > 0 {
		ratios = []string{r.Metrics[0].Name}
	}
	b.WriteString("| subject | kind | version |")
	for _, m := range r.Metrics {
		fmt.Fprintf(&b, " %s (%s) |", m.Name, m.Unit)
	}
	for _, m := range ratios {
		fmt.Fprintf(&b, " Stellar/subject (%s) |", m)
	}
	b.WriteString("\n|---|---|---|")
	for range r.Metrics {
		b.WriteString("---|")
	}
	for range ratios {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	for _, s := range r.Subjects {
		fmt.Fprintf(&b, "| %s | %s | %s |", s.Name, s.Kind, s.Version)
		for _, m := range r.Metrics {
			st := Summarise(s.Samples[m.Name])
			if st.N == 0 {
				b.WriteString(" – |")
				continue
			}
			fmt.Fprintf(&b, " %s [%s–%s] |", num(st.Median), num(st.Min), num(st.Max))
		}
		for _, m := range ratios {
			ratio := "–"
			if st := ref[s.Group]; st != nil && s.Kind != KindStellar {
				a := Summarise(st.Samples[m])
				c := Summarise(s.Samples[m])
				if a.N > 0 && c.N > 0 && c.Median != 0 {
					ratio = fmt.Sprintf("%.2f", a.Median/c.Median)
				}
			}
			fmt.Fprintf(&b, " %s |", ratio)
		}
		b.WriteString("\n")
	}
	b.WriteString("\n")
	return b.String()
}

func num(f float64) string {
	switch {
	case f >= 100:
		return fmt.Sprintf("%.0f", f)
	case f >= 10:
		return fmt.Sprintf("%.1f", f)
	}
	return fmt.Sprintf("%.2f", f)
}

var (
	chartName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)
	nonWord   = regexp.MustCompile(`[^A-Za-z0-9]+`)
)

// SpreadChart is the chart every benchmark gets: each subject's samples of
// metric m, one dot per run with the median marked, so the spread behind
// the medians is visible.
func SpreadChart(r Result, m Metric) (Chart, bool) {
	c := plot.Chart{Title: fmt.Sprintf("%s: every run (bar = median)", m.Name), XLabel: m.Unit, Kind: plot.Strip}
	for _, s := range r.Subjects {
		if v := s.Samples[m.Name]; len(v) > 0 {
			c.Series = append(c.Series, plot.Series{Name: s.Name, Y: v})
		}
	}
	return Chart{Name: "runs-" + strings.Trim(strings.ToLower(nonWord.ReplaceAllString(m.Name, "-")), "-"), Chart: c}, len(c.Series) > 0
}

// WritePlots renders each completed outcome's charts, and the spread of
// its first metric, as PNG files in dir and lists them in the result's
// Plots (relative to dir, where the report goes).
func WritePlots(dir string, outs []Outcome) error {
	var errs []error
	for i := range outs {
		o := &outs[i]
		if o.Err != nil {
			continue
		}
		charts := o.Result.Charts
		if len(o.Result.Metrics) > 0 {
			if c, ok := SpreadChart(o.Result, o.Result.Metrics[0]); ok {
				charts = append(charts, c)
			}
		}
		for _, c := range charts {
			if !chartName.MatchString(c.Name) {
				errs = append(errs, fmt.Errorf("benchmark %s: chart name %q: want lowercase letters, digits and '-'", o.Bench.Name, c.Name))
				continue
			}
			file := o.Bench.Name + "-" + c.Name + ".png"
			if err := writeChart(filepath.Join(dir, file), c.Chart); err != nil {
				errs = append(errs, fmt.Errorf("benchmark %s: %w", o.Bench.Name, err))
				continue
			}
			o.Result.Plots = append(o.Result.Plots, file)
		}
	}
	return errors.Join(errs...)
}

func writeChart(path string, c plot.Chart) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write chart: %w", err)
	}
	if err := plot.Render(f, c); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write chart %s: %w", path, err)
	}
	return nil
}
