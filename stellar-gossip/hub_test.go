package main

import (
	"testing"

	"stellar.dev/api/gossipapi"
)

func TestMemberHub_since(t *testing.T) {
	h := newMemberHub()
	start := h.seq()
	for _, n := range []string{"a", "b", "c"} {
		h.publish(gossipapi.Member{Name: n})
	}
	for _, tc := range []struct {
		name string
		from uint64
		want int
	}{
		{"from the start", start, 3},
		{"after one", start + 1, 2},
		{"up to date", start + 3, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, seq := h.since(tc.from)
			if len(got) != tc.want || seq != start+3 {
				t.Fatalf("since(%d) = %d events, seq %d; want %d, %d", tc.from, len(got), seq, tc.want, start+3)
			}
		})
	}
	for i := 0; i < 2000; i++ {
		h.publish(gossipapi.Member{Name: "x"})
	}
	if got, _ := h.since(0); len(got) != 1024 {
		t.Fatalf("a watcher far behind gets %d events, want the 1024 kept", len(got))
	}
}
