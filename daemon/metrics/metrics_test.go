package metrics

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestRegistry_textFormat(t *testing.T) {
	r := &Registry{}
	c := r.Counter("stellar_requests_total", "Requests served.", "route", "code")
	c.With("/v1/apps", "200").Inc()
	c.With("/v1/apps", "200").Add(2)
	c.With("/v1/health", "200").Inc()
	g := r.Gauge("stellar_instances", "Instances running.")
	g.With().Set(7)
	h := r.Histogram("stellar_request_seconds", "Request latency.", []float64{0.1, 1}, "route")
	h.With("/v1/apps").Observe(0.05)
	h.With("/v1/apps").Observe(0.5)
	h.With("/v1/apps").Observe(5)
	var b bytes.Buffer
	r.Write(&b)
	golden := filepath.Join("testdata", "registry.golden")
	if os.Getenv("UPDATE_GOLDEN") != "" {
		os.WriteFile(golden, b.Bytes(), 0o644)
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b.Bytes(), want) {
		t.Fatalf("got:\n%s\nwant:\n%s", b.String(), want)
	}
}
