package plot

import (
	"bytes"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRender_everyKindDecodesAsPNG(t *testing.T) {
	charts := map[string]Chart{
		"line": {Title: "write convergence against cluster size", XLabel: "members", YLabel: "ms", Kind: Line, Series: []Series{
			{Name: "stellar-gossip lan", X: []float64{10, 30, 100}, Y: []float64{40, 90, 210}},
			{Name: "serf agent", X: []float64{100, 10, 30}, Y: []float64{250, 35, 80}},
		}},
		"cdf": {Title: "latency", XLabel: "µs – p50", YLabel: "fraction", Kind: CDF, Series: []Series{
			{Name: "a", Y: []float64{3, 1, 2, 8, 5}}, {Name: "b", Y: []float64{0.5}},
		}},
		"cdf-log": {Title: "latency tail", XLabel: "ms", YLabel: "fraction", Kind: CDF, LogX: true, Series: []Series{
			{Name: "a", Y: []float64{0.05, 0.1, 0.1, 0.2, 0.3, 40, 0}}, {Name: "b", Y: []float64{0.2, 0.3, 270}},
		}},
		"strip": {Title: "runs", XLabel: "MiB", Kind: Strip, Series: []Series{
			{Name: "stellar-gossip", Y: []float64{12, 12.5, 13}}, {Name: strings.Repeat("long name ", 20), Y: []float64{0, 0, 0}},
		}},
		"flat": {Title: "all equal", Kind: Line, Series: []Series{{Name: "x", X: []float64{1, 1}, Y: []float64{-2, -2}}}},
	}
	dir := os.Getenv("STELLAR_PLOT_DIR") // set to look at the pictures
	for name, c := range charts {
		t.Run(name, func(t *testing.T) {
			var b bytes.Buffer
			if err := Render(&b, c); err != nil {
				t.Fatal(err)
			}
			img, err := png.Decode(bytes.NewReader(b.Bytes()))
			if err != nil {
				t.Fatal(err)
			}
			if img.Bounds().Dx() != width || img.Bounds().Dy() != height {
				t.Fatalf("size %v", img.Bounds())
			}
			if dir != "" {
				os.WriteFile(filepath.Join(dir, name+".png"), b.Bytes(), 0o644)
			}
		})
	}
}

func TestRender_refusesBadCharts(t *testing.T) {
	for name, tc := range map[string]struct {
		c    Chart
		want string
	}{
		"no series":  {Chart{Title: "t"}, "no series"},
		"empty":      {Chart{Series: []Series{{Name: "s"}}}, `series "s" has no values`},
		"x mismatch": {Chart{Kind: Line, Series: []Series{{Name: "s", X: []float64{1}, Y: []float64{1, 2}}}}, "1 x values for 2 y values"},
		"not finite": {Chart{Kind: CDF, Series: []Series{{Name: "s", Y: []float64{1, 1 / zero()}}}}, "not finite"},
	} {
		t.Run(name, func(t *testing.T) {
			err := Render(&bytes.Buffer{}, tc.c)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

func zero() float64 { return 0 }

func FuzzRender(f *testing.F) {
	f.Add(1.0, 2.0, 3.0, uint8(0))
	f.Add(-1e300, 1e300, 0.0, uint8(1))
	f.Add(0.0, 0.0, 0.0, uint8(2))
	f.Fuzz(func(t *testing.T, a, b, c float64, kind uint8) {
		ch := Chart{Title: "f", Kind: Kind(kind % 3), LogX: kind&4 != 0, Series: []Series{{Name: "s", X: []float64{a, b, c}, Y: []float64{c, b, a}}}}
		_ = Render(&bytes.Buffer{}, ch) // must not panic or hang
	})
}
