// Package plot draws the benchmark report's charts as PNG with the standard
// library only: lines (a value against a size), CDFs (a latency
// distribution) and strips (every run's sample per subject, with its median).
package plot

import (
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math"
	"sort"
	"strconv"
)

// Kind is a chart's shape.
type Kind int

const (
	// Line draws each series' (X, Y) points joined in X order.
	Line Kind = iota
	// CDF draws each series' Y samples as a cumulative distribution: the
	// value on the X axis, the fraction of samples at or below it on Y.
	CDF
	// Strip draws one row per series with a dot per Y sample and a bar at
	// the median: how far apart the runs were.
	Strip
)

// Series is one named set of values.
type Series struct {
	// Name is the legend's (or the strip row's) label.
	Name string
	// X holds the positions of a Line's points; unused otherwise.
	X []float64
	// Y holds a Line's values, or the samples of a CDF or Strip.
	Y []float64
}

// Chart is one picture.
type Chart struct {
	// Title is printed on top.
	Title string
	// XLabel and YLabel name the axes with their units.
	XLabel, YLabel string
	// Kind is the chart's shape.
	Kind Kind
	// Series are drawn in order, each in its own colour.
	Series []Series
	// LogX puts the X axis (a Line's or CDF's) on a log scale, for long
	// latency tails; values at or below zero are drawn at the axis' left.
	LogX bool
}

// Validate says what is wrong with c, if anything.
func (c Chart) Validate() error {
	if len(c.Series) == 0 {
		return errors.New("chart has no series")
	}
	for _, s := range c.Series {
		if len(s.Y) == 0 {
			return fmt.Errorf("series %q has no values", s.Name)
		}
		if c.Kind == Line && len(s.X) != len(s.Y) {
			return fmt.Errorf("series %q: %d x values for %d y values", s.Name, len(s.X), len(s.Y))
		}
		for _, v := range append(append([]float64(nil), s.X...), s.Y...) {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return fmt.Errorf("series %q: value %v is not finite", s.Name, v)
			}
		}
	}
	return nil
}

const (
	width  = 960
	height = 540
	scale  = 2 // text is the 5x7 font drawn twice as large
	charW  = 6 * scale
	charH  = 8 * scale
)

var (
	white   = color.RGBA{255, 255, 255, 255}
	black   = color.RGBA{30, 30, 30, 255}
	grey    = color.RGBA{225, 225, 225, 255}
	palette = []color.RGBA{
		{31, 119, 180, 255}, {255, 127, 14, 255}, {44, 160, 44, 255}, {214, 39, 40, 255},
		{148, 103, 189, 255}, {140, 86, 75, 255}, {227, 119, 194, 255}, {127, 127, 127, 255},
		{188, 189, 34, 255}, {23, 190, 207, 255},
	}
)

// Render draws c as a PNG into w.
func Render(w io.Writer, c Chart) error {
	if err := c.Validate(); err != nil {
		return fmt.Errorf("render %q: %w", c.Title, err)
	}
	img := image.NewRGBA(image.Rect(0, 0, width, height))
	fill(img, img.Rect, white)
	text(img, (width-textWidth(c.Title))/2, 8, c.Title, black)
	switch c.Kind {
	case Strip:
		drawStrip(img, c)
	default:
		drawXY(img, c)
	}
	if err := png.Encode(w, img); err != nil {
		return fmt.Errorf("encode %q: %w", c.Title, err)
	}
	return nil
}

// frame is the plotting area and the axes' ranges.
type frame struct {
	area         image.Rectangle
	x0, x1       float64
	y0, y1       float64
	xstep, ystep float64
	logX         bool // x0, x1 and xstep are exponents of ten
}

func (f frame) px(x float64) int {
	if f.logX {
		x = math.Log10(math.Max(x, math.Pow(10, f.x0)))
	}
	return clamp(float64(f.area.Min.X)+math.Round((x-f.x0)/(f.x1-f.x0)*float64(f.area.Dx())), width)
}

func (f frame) py(y float64) int {
	return clamp(float64(f.area.Max.Y)-math.Round((y-f.y0)/(f.y1-f.y0)*float64(f.area.Dy())), height)
}

// clamp keeps a pixel coordinate near the picture (off-range values and
// NaN from degenerate ranges must not make lines endless).
func clamp(v float64, limit int) int {
	if math.IsNaN(v) || v < -10 {
		return -10
	}
	if v > float64(limit+10) {
		return limit + 10
	}
	return int(v)
}

// ticks returns the tick values from lo to hi by step (at most 50).
func ticks(lo, hi, step float64) []float64 {
	n := math.Round((hi - lo) / step)
	if math.IsNaN(n) || n < 0 || n > 50 {
		return []float64{lo, hi}
	}
	var out []float64
	for i := 0; i <= int(n); i++ {
		out = append(out, lo+float64(i)*step)
	}
	return out
}

func drawXY(img *image.RGBA, c Chart) {
	var xs, ys []float64
	series := make([]Series, len(c.Series))
	for i, s := range c.Series {
		if c.Kind == CDF {
			v := append([]float64(nil), s.Y...)
			sort.Float64s(v)
			s = Series{Name: s.Name, X: make([]float64, 0, 2*len(v)), Y: make([]float64, 0, 2*len(v))}
			for k, x := range v {
				s.X = append(s.X, x, x)
				s.Y = append(s.Y, float64(k)/float64(len(v)), float64(k+1)/float64(len(v)))
			}
		} else {
			idx := make([]int, len(s.X))
			for k := range idx {
				idx[k] = k
			}
			sort.SliceStable(idx, func(a, b int) bool { return s.X[idx[a]] < s.X[idx[b]] })
			t := Series{Name: s.Name}
			for _, k := range idx {
				t.X, t.Y = append(t.X, s.X[k]), append(t.Y, s.Y[k])
			}
			s = t
		}
		series[i] = s
		xs, ys = append(xs, s.X...), append(ys, s.Y...)
	}
	legendW := 0
	for _, s := range series {
		legendW = max(legendW, textWidth(s.Name))
	}
	legendW = min(legendW+40, width/2)
	f := frame{area: image.Rect(100, 60, width-30-legendW, height-70)}
	f.x0, f.x1, f.xstep = axisRange(xs, c.Kind == CDF)
	if c.LogX {
		f.logX = true
		f.x0, f.x1, f.xstep = logRange(xs)
	}
	f.y0, f.y1, f.ystep = axisRange(ys, true)
	if c.Kind == CDF {
		f.y0, f.y1, f.ystep = 0, 1, 0.2
	}
	axes(img, f, c.XLabel, c.YLabel)
	for i, s := range series {
		col := palette[i%len(palette)]
		for k := range s.X {
			x, y := f.px(s.X[k]), f.py(s.Y[k])
			if k > 0 {
				line(img, f.px(s.X[k-1]), f.py(s.Y[k-1]), x, y, col)
			}
			if c.Kind == Line {
				fill(img, image.Rect(x-3, y-3, x+4, y+4), col)
			}
		}
		ly := f.area.Min.Y + 10 + i*(charH+8)
		lx := f.area.Max.X + 20
		fill(img, image.Rect(lx, ly+charH/2-2, lx+16, ly+charH/2+2), col)
		text(img, lx+22, ly, s.Name, black)
	}
}

func drawStrip(img *image.RGBA, c Chart) {
	var vs []float64
	labelW := 0
	for _, s := range c.Series {
		vs = append(vs, s.Y...)
		labelW = max(labelW, textWidth(s.Name))
	}
	labelW = min(labelW, width/2)
	f := frame{area: image.Rect(labelW+30, 40, width-40, height-70)}
	f.x0, f.x1, f.xstep = axisRange(vs, true)
	f.y0, f.y1 = 0, float64(len(c.Series))
	xaxis(img, f, c.XLabel)
	rowH := float64(f.area.Dy()) / float64(len(c.Series))
	for i, s := range c.Series {
		col := palette[i%len(palette)]
		cy := f.area.Min.Y + int(rowH*(float64(i)+0.5))
		for x := f.area.Min.X; x < f.area.Max.X; x += 4 {
			img.Set(x, cy, grey)
		}
		name := s.Name
		for textWidth(name) > labelW && len(name) > 1 {
			name = name[:len(name)-1]
		}
		text(img, f.area.Min.X-10-textWidth(name), cy-charH/2+2, name, black)
		for _, v := range s.Y {
			x := f.px(v)
			fill(img, image.Rect(x-3, cy-3, x+4, cy+4), col)
		}
		m := f.px(median(s.Y))
		h := min(int(rowH/2)-2, 14)
		fill(img, image.Rect(m-1, cy-h, m+2, cy+h+1), black)
	}
}

func axes(img *image.RGBA, f frame, xlabel, ylabel string) {
	xaxis(img, f, xlabel)
	for _, v := range ticks(f.y0, f.y1, f.ystep) {
		y := f.py(v)
		for x := f.area.Min.X; x < f.area.Max.X; x += 2 {
			img.Set(x, y, grey)
		}
		l := label(v, f.ystep)
		text(img, f.area.Min.X-8-textWidth(l), y-charH/2+2, l, black)
	}
	line(img, f.area.Min.X, f.area.Min.Y, f.area.Min.X, f.area.Max.Y, black)
	text(img, 8, 32, ylabel, black)
}

func xaxis(img *image.RGBA, f frame, xlabel string) {
	for _, v := range ticks(f.x0, f.x1, f.xstep) {
		x := f.px(v)
		if f.logX {
			x = f.area.Min.X + int(math.Round((v-f.x0)/(f.x1-f.x0)*float64(f.area.Dx())))
		}
		for y := f.area.Min.Y; y < f.area.Max.Y; y += 2 {
			img.Set(x, y, grey)
		}
		line(img, x, f.area.Max.Y, x, f.area.Max.Y+5, black)
		l := label(v, f.xstep)
		if f.logX {
			l = strconv.FormatFloat(math.Pow(10, v), 'g', -1, 64)
			x = f.area.Min.X + int(math.Round((v-f.x0)/(f.x1-f.x0)*float64(f.area.Dx())))
		}
		text(img, x-textWidth(l)/2, f.area.Max.Y+10, l, black)
	}
	line(img, f.area.Min.X, f.area.Max.Y, f.area.Max.X, f.area.Max.Y, black)
	text(img, f.area.Min.X+(f.area.Dx()-textWidth(xlabel))/2, f.area.Max.Y+36, xlabel, black)
}

// axisRange returns a range covering vs with round ticks (about five),
// starting at zero when fromZero and every value is positive.
func axisRange(vs []float64, fromZero bool) (lo, hi, step float64) {
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, v := range vs {
		lo, hi = math.Min(lo, v), math.Max(hi, v)
	}
	if fromZero && lo >= 0 {
		lo = 0
	}
	if hi-lo <= 0 {
		hi = lo + math.Max(1, math.Abs(lo))
	}
	step = niceStep((hi - lo) / 5)
	return math.Floor(lo/step) * step, math.Ceil(hi/step) * step, step
}

// logRange returns whole decades (as exponents) covering the positive
// values of vs.
func logRange(vs []float64) (lo, hi, step float64) {
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, v := range vs {
		if v > 0 {
			lo, hi = math.Min(lo, math.Log10(v)), math.Max(hi, math.Log10(v))
		}
	}
	if math.IsInf(lo, 0) {
		return 0, 1, 1
	}
	lo, hi = math.Floor(lo), math.Ceil(hi)
	if hi <= lo {
		hi = lo + 1
	}
	return lo, hi, 1
}

func niceStep(raw float64) float64 {
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

// label prints v with as many decimals as the step needs.
func label(v, step float64) string {
	d := 0
	if step < 1 {
		d = int(math.Ceil(-math.Log10(step)))
		if step*math.Pow(10, float64(d)) != math.Round(step*math.Pow(10, float64(d))) {
			d++
		}
	}
	return strconv.FormatFloat(v, 'f', d, 64)
}

func median(vs []float64) float64 {
	s := append([]float64(nil), vs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func fill(img *image.RGBA, r image.Rectangle, c color.RGBA) {
	r = r.Intersect(img.Rect)
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			img.SetRGBA(x, y, c)
		}
	}
}

// line draws a two-pixel line from (x0, y0) to (x1, y1).
func line(img *image.RGBA, x0, y0, x1, y1 int, c color.RGBA) {
	dx, dy := abs(x1-x0), -abs(y1-y0)
	sx, sy := sign(x1-x0), sign(y1-y0)
	e := dx + dy
	for {
		img.SetRGBA(x0, y0, c)
		img.SetRGBA(x0+1, y0, c)
		img.SetRGBA(x0, y0+1, c)
		if x0 == x1 && y0 == y1 {
			return
		}
		e2 := 2 * e
		if e2 >= dy {
			e += dy
			x0 += sx
		}
		if e2 <= dx {
			e += dx
			y0 += sy
		}
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

func sign(v int) int {
	switch {
	case v < 0:
		return -1
	case v > 0:
		return 1
	}
	return 0
}

func textWidth(s string) int { return len([]rune(s)) * charW }

// text draws s with its top-left corner at (x, y); characters outside
// printable ASCII are drawn as '?'.
func text(img *image.RGBA, x, y int, s string, c color.RGBA) {
	for _, r := range s {
		switch r {
		case '–', '—':
			r = '-'
		case 'µ':
			r = 'u'
		}
		if r < 0x20 || r > 0x7e {
			r = '?'
		}
		g := glyphs[r-0x20]
		for col := 0; col < 5; col++ {
			for row := 0; row < 7; row++ {
				if g[col]&(1<<row) != 0 {
					fill(img, image.Rect(x+col*scale, y+row*scale, x+(col+1)*scale, y+(row+1)*scale), c)
				}
			}
		}
		x += charW
	}
}
