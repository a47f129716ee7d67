package main

import (
	"testing"
	"time"

	"stellar.dev/api/gossipapi"
)

func TestFactsStale(t *testing.T) {
	const gib = 1 << 30
	base := gossipapi.NodeFacts{OS: "Debian", Kernel: "6.1", CPUs: 2, MemoryTotal: 4 * gib, MemoryUsed: 1 * gib}
	with := func(f func(*gossipapi.NodeFacts)) gossipapi.NodeFacts { c := base; f(&c); return c }
	for _, tc := range []struct {
		name  string
		cur   gossipapi.NodeFacts
		since time.Duration
		want  bool
	}{
		{"same", base, time.Minute, false},
		{"smallSwing", with(func(f *gossipapi.NodeFacts) { f.MemoryUsed += 200 << 20 }), time.Minute, false},
		{"tenPercentOfTotal", with(func(f *gossipapi.NodeFacts) { f.MemoryUsed += 500 << 20 }), time.Minute, true},
		{"dropAlsoCounts", with(func(f *gossipapi.NodeFacts) { f.MemoryUsed -= 600 << 20 }), time.Minute, true},
		{"fifteenMinutes", base, 15 * time.Minute, true},
		{"kernelChanged", with(func(f *gossipapi.NodeFacts) { f.Kernel = "6.2" }), time.Minute, true},
		{"cpusChanged", with(func(f *gossipapi.NodeFacts) { f.CPUs = 4 }), time.Minute, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := factsStale(base, tc.cur, tc.since); got != tc.want {
				t.Fatalf("factsStale = %v, want %v", got, tc.want)
			}
		})
	}
}
