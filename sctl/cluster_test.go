package main

import (
	"testing"
	"time"
)

func TestHumanDuration(t *testing.T) {
	for _, tc := range []struct {
		in   time.Duration
		want string
	}{
		{7 * time.Second, "7 seconds"},
		{time.Minute, "1 minute"},
		{2*time.Minute + 5*time.Second, "2 minutes"},
		{5 * time.Hour, "5 hours"},
		{72 * time.Hour, "3 days"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			if got := humanDuration(tc.in); got != tc.want {
				t.Fatalf("humanDuration(%s) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestHumanBytes(t *testing.T) {
	for _, tc := range []struct {
		in   uint64
		want string
	}{
		{952_000_000, "952 MB"},
		{2_100_000_000, "2.1 GB"},
		{512, "512 B"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			if got := humanBytes(tc.in); got != tc.want {
				t.Fatalf("humanBytes(%d) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestLabelString_sorted(t *testing.T) {
	if got := labelString(map[string]string{"zone": "a", "env": "prod"}); got != "env=prod,zone=a" {
		t.Fatalf("got %q", got)
	}
	if got := labelString(nil); got != "-" {
		t.Fatalf("got %q", got)
	}
}
