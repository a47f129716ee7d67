// Package metrics keeps a daemon's counters, gauges and histograms and
// writes them in the Prometheus text format for GET /metrics.
package metrics

import (
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Registry holds every metric of one daemon.
type Registry struct {
	mu      sync.Mutex
	metrics []metric
}

// NewRegistry returns a registry with the process metrics (goroutines,
// resident memory, heap) already in it.
func NewRegistry() *Registry {
	r := &Registry{}
	r.GaugeFunc("go_goroutines", "Number of goroutines.", func() float64 { return float64(runtime.NumGoroutine()) })
	r.GaugeFunc("process_resident_memory_bytes", "Resident memory in bytes.", rss)
	r.GaugeFunc("go_memstats_heap_alloc_bytes", "Bytes of allocated heap objects.", func() float64 {
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return float64(m.HeapAlloc)
	})
	return r
}

type metric interface {
	write(w io.Writer)
}

func (r *Registry) add(m metric) {
	r.mu.Lock()
	r.metrics = append(r.metrics, m)
	r.mu.Unlock()
}

// Write writes every metric in the Prometheus text format.
func (r *Registry) Write(w io.Writer) {
	r.mu.Lock()
	ms := append([]metric(nil), r.metrics...)
	r.mu.Unlock()
	for _, m := range ms {
		m.write(w)
	}
}

// ContentType is the media type of the text format.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

type desc struct {
	name, help, typ string
	labels          []string
}

func (d desc) header(w io.Writer) {
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", d.name, d.help, d.name, d.typ)
}

func labelString(names, values []string, extra ...string) string {
	if len(names) == 0 && len(extra) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteByte('{')
	for i, n := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%q", n, values[i])
	}
	for i := 0; i+1 < len(extra); i += 2 {
		if b.Len() > 1 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%q", extra[i], extra[i+1])
	}
	b.WriteByte('}')
	return b.String()
}

func fmtFloat(f float64) string {
	if math.IsInf(f, 1) {
		return "+Inf"
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

// vec keeps one child per label value combination.
type vec[T any] struct {
	desc
	mu       sync.Mutex
	children map[string]*T
	values   map[string][]string
	mk       func() *T
}

func (v *vec[T]) with(values []string) *T {
	if len(values) != len(v.labels) {
		panic(fmt.Sprintf("metric %s: %d label values for %d labels", v.name, len(values), len(v.labels)))
	}
	k := strings.Join(values, "\xff")
	v.mu.Lock()
	defer v.mu.Unlock()
	c, ok := v.children[k]
	if !ok {
		c = v.mk()
		v.children[k] = c
		v.values[k] = append([]string(nil), values...)
	}
	return c
}

func (v *vec[T]) each(fn func(values []string, c *T)) {
	v.mu.Lock()
	keys := make([]string, 0, len(v.children))
	for k := range v.children {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	type kv struct {
		vals []string
		c    *T
	}
	list := make([]kv, len(keys))
	for i, k := range keys {
		list[i] = kv{v.values[k], v.children[k]}
	}
	v.mu.Unlock()
	for _, e := range list {
		fn(e.vals, e.c)
	}
}

func newVec[T any](d desc, mk func() *T) *vec[T] {
	return &vec[T]{desc: d, children: map[string]*T{}, values: map[string][]string{}, mk: mk}
}

// Counter only goes up.
type Counter struct{ bits atomic.Uint64 }

// Add adds n (n >= 0).
func (c *Counter) Add(n float64) {
	for {
		old := c.bits.Load()
		if c.bits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+n)) {
			return
		}
	}
}

// Inc adds 1.
func (c *Counter) Inc() { c.Add(1) }

// Value returns the current count.
func (c *Counter) Value() float64 { return math.Float64frombits(c.bits.Load()) }

// CounterVec is a counter with labels.
type CounterVec struct{ v *vec[Counter] }

// Counter registers a counter with the given label names.
func (r *Registry) Counter(name, help string, labels ...string) *CounterVec {
	cv := &CounterVec{v: newVec(desc{name, help, "counter", labels}, func() *Counter { return &Counter{} })}
	r.add(cv)
	return cv
}

// With returns the counter for the label values.
func (cv *CounterVec) With(values ...string) *Counter { return cv.v.with(values) }

func (cv *CounterVec) write(w io.Writer) {
	cv.v.header(w)
	cv.v.each(func(vals []string, c *Counter) {
		fmt.Fprintf(w, "%s%s %s\n", cv.v.name, labelString(cv.v.labels, vals), fmtFloat(c.Value()))
	})
}

// Gauge goes up and down.
type Gauge struct{ bits atomic.Uint64 }

// Set sets the value.
func (g *Gauge) Set(f float64) { g.bits.Store(math.Float64bits(f)) }

// Add adds n (may be negative).
func (g *Gauge) Add(n float64) {
	for {
		old := g.bits.Load()
		if g.bits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+n)) {
			return
		}
	}
}

// Value returns the current value.
func (g *Gauge) Value() float64 { return math.Float64frombits(g.bits.Load()) }

// GaugeVec is a gauge with labels.
type GaugeVec struct{ v *vec[Gauge] }

// Gauge registers a gauge with the given label names.
func (r *Registry) Gauge(name, help string, labels ...string) *GaugeVec {
	gv := &GaugeVec{v: newVec(desc{name, help, "gauge", labels}, func() *Gauge { return &Gauge{} })}
	r.add(gv)
	return gv
}

// With returns the gauge for the label values.
func (gv *GaugeVec) With(values ...string) *Gauge { return gv.v.with(values) }

func (gv *GaugeVec) write(w io.Writer) {
	gv.v.header(w)
	gv.v.each(func(vals []string, g *Gauge) {
		fmt.Fprintf(w, "%s%s %s\n", gv.v.name, labelString(gv.v.labels, vals), fmtFloat(g.Value()))
	})
}

type gaugeFunc struct {
	desc
	f func() float64
}

// GaugeFunc registers a gauge whose value is read from f at scrape time.
func (r *Registry) GaugeFunc(name, help string, f func() float64) {
	r.add(&gaugeFunc{desc{name, help, "gauge", nil}, f})
}

func (g *gaugeFunc) write(w io.Writer) {
	g.header(w)
	fmt.Fprintf(w, "%s %s\n", g.name, fmtFloat(g.f()))
}

// DefBuckets are latency buckets in seconds, from 100µs to 10s.
var DefBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// Histogram counts observations in buckets.
type Histogram struct {
	mu      sync.Mutex
	buckets []float64
	counts  []uint64
	sum     float64
	count   uint64
}

// Observe records one value.
func (h *Histogram) Observe(v float64) {
	i := sort.SearchFloat64s(h.buckets, v)
	h.mu.Lock()
	if i < len(h.counts) {
		h.counts[i]++
	}
	h.sum += v
	h.count++
	h.mu.Unlock()
}

// HistogramVec is a histogram with labels.
type HistogramVec struct {
	v       *vec[Histogram]
	buckets []float64
}

// Histogram registers a histogram with the given buckets (nil: DefBuckets)
// and label names.
func (r *Registry) Histogram(name, help string, buckets []float64, labels ...string) *HistogramVec {
	if buckets == nil {
		buckets = DefBuckets
	}
	hv := &HistogramVec{buckets: buckets}
	hv.v = newVec(desc{name, help, "histogram", labels}, func() *Histogram {
		return &Histogram{buckets: buckets, counts: make([]uint64, len(buckets))}
	})
	r.add(hv)
	return hv
}

// With returns the histogram for the label values.
func (hv *HistogramVec) With(values ...string) *Histogram { return hv.v.with(values) }

func (hv *HistogramVec) write(w io.Writer) {
	hv.v.header(w)
	hv.v.each(func(vals []string, h *Histogram) {
		h.mu.Lock()
		defer h.mu.Unlock()
		var cum uint64
		for i, b := range h.buckets {
			cum += h.counts[i]
			fmt.Fprintf(w, "%s_bucket%s %d\n", hv.v.name, labelString(hv.v.labels, vals, "le", fmtFloat(b)), cum)
		}
		fmt.Fprintf(w, "%s_bucket%s %d\n", hv.v.name, labelString(hv.v.labels, vals, "le", "+Inf"), h.count)
		fmt.Fprintf(w, "%s_sum%s %s\n", hv.v.name, labelString(hv.v.labels, vals), fmtFloat(h.sum))
		fmt.Fprintf(w, "%s_count%s %d\n", hv.v.name, labelString(hv.v.labels, vals), h.count)
	})
}

// rss reads the resident set size from /proc/self/statm.
func rss() float64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseFloat(f[1], 64)
	return pages * float64(os.Getpagesize())
}
