// Command soakplot draws the table a soak writes (docs/reliability-soak.md) as a PNG: heap,
// goroutines, propagation p99 and failed RPCs over time, with the fault windows shaded.
//
//	go run ./e2e/cmd/soakplot -in docs/reliability-soak.md -out docs/reliability-soak.png
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

func main() {
	in := flag.String("in", "docs/reliability-soak.md", "the soak's report (a markdown table)")
	out := flag.String("out", "docs/reliability-soak.png", "the PNG to write")
	flag.Parse()
	if err := run(*in, *out); err != nil {
		fmt.Fprintln(os.Stderr, "soakplot:", err)
		os.Exit(1)
	}
}

func run(in, out string) error {
	f, err := os.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
	rows, err := parse(f)
	if err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	w, err := os.Create(out)
	if err != nil {
		return err
	}
	if err := png.Encode(w, plot(rows)); err != nil {
		_ = w.Close()
		return err
	}
	return w.Close()
}

// row is one line of the soak's table.
type row struct {
	at         time.Duration
	sent       float64
	failed     float64
	p99        float64 // seconds; NaN when the row has none
	heapMiB    float64
	goroutines float64
	fault      string
}

// parse reads the rows of the report's table: | time | RPCs sent | RPCs failed | error rate |
// propagation p99 (n) | heap | goroutines | fault on |.
func parse(r io.Reader) ([]row, error) {
	var rows []row
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(text, "|") || strings.HasPrefix(text, "| time") || strings.HasPrefix(text, "|---") {
			continue
		}
		cells := strings.Split(strings.Trim(text, "|"), "|")
		if len(cells) != 8 {
			return nil, fmt.Errorf("line %d: %d cells, want 8", line, len(cells))
		}
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		var rw row
		var err error
		if rw.at, err = time.ParseDuration(cells[0]); err != nil {
			return nil, fmt.Errorf("line %d: time: %w", line, err)
		}
		if rw.sent, err = strconv.ParseFloat(cells[1], 64); err != nil {
			return nil, fmt.Errorf("line %d: RPCs sent: %w", line, err)
		}
		if rw.failed, err = strconv.ParseFloat(cells[2], 64); err != nil {
			return nil, fmt.Errorf("line %d: RPCs failed: %w", line, err)
		}
		rw.p99 = math.NaN()
		if p, _, ok := strings.Cut(cells[4], " "); ok && p != "-" {
			d, err := time.ParseDuration(p)
			if err != nil {
				return nil, fmt.Errorf("line %d: propagation: %w", line, err)
			}
			if d >= 0 {
				rw.p99 = d.Seconds()
			}
		}
		if rw.heapMiB, err = strconv.ParseFloat(strings.TrimSuffix(cells[5], " MiB"), 64); err != nil {
			return nil, fmt.Errorf("line %d: heap: %w", line, err)
		}
		if rw.goroutines, err = strconv.ParseFloat(cells[6], 64); err != nil {
			return nil, fmt.Errorf("line %d: goroutines: %w", line, err)
		}
		rw.fault = cells[7]
		rows = append(rows, rw)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(rows) < 2 {
		return nil, errors.New("fewer than two rows: nothing to plot")
	}
	return rows, nil
}

const (
	width      = 960
	panelH     = 170
	marginL    = 70
	marginR    = 20
	marginTop  = 28
	panelGap   = 34
	plotBottom = 30
)

var (
	white = color.RGBA{255, 255, 255, 255}
	ink   = color.RGBA{40, 40, 40, 255}
	grid  = color.RGBA{225, 225, 225, 255}
	shade = color.RGBA{253, 226, 200, 255}
	blue  = color.RGBA{31, 119, 180, 255}
	red   = color.RGBA{214, 39, 40, 255}
)

// series is one panel: a value per row.
type series struct {
	title string
	unit  string
	value func(row) float64
	color color.RGBA
}

func plot(rows []row) *image.RGBA {
	panels := []series{
		{"Holdfast live heap (go_gc_heap_live_bytes)", "MiB", func(r row) float64 { return r.heapMiB }, blue},
		{"Holdfast goroutines", "", func(r row) float64 { return r.goroutines }, blue},
		{"propagation p99, over every sample so far", "s", func(r row) float64 { return r.p99 }, blue},
		{"RPCs failed (cumulative) of RPCs sent", "", func(r row) float64 { return r.failed }, red},
	}
	height := marginTop + len(panels)*(panelH+panelGap) + plotBottom
	img := image.NewRGBA(image.Rect(0, 0, width, height))
	draw.Draw(img, img.Bounds(), &image.Uniform{white}, image.Point{}, draw.Src)
	last := rows[len(rows)-1]
	text(img, marginL, 16, ink, fmt.Sprintf("Holdfast soak: %v, %.0f RPCs, %.0f failed; shaded: a fault was on at that sample", last.at.Round(time.Second), last.sent, last.failed))
	span := last.at.Seconds()
	x := func(d time.Duration) int { return marginL + int(d.Seconds()/span*float64(width-marginL-marginR)) }
	for i, p := range panels {
		top := marginTop + i*(panelH+panelGap) + 14
		bottom := top + panelH
		lo, hi := math.Inf(1), math.Inf(-1)
		for _, r := range rows {
			if v := p.value(r); !math.IsNaN(v) {
				lo, hi = math.Min(lo, v), math.Max(hi, v)
			}
		}
		if math.IsInf(lo, 0) {
			lo, hi = 0, 1
		}
		// Axes from zero make "flat" honest: a creep shows as a slope against the whole.
		lo, hi = 0, niceCeil(hi*1.05)
		y := func(v float64) int { return bottom - int((v-lo)/(hi-lo)*float64(panelH)) }
		for j, r := range rows {
			if r.fault == "" {
				continue
			}
			from := x(r.at)
			to := from + 4
			if j > 0 {
				from = x(rows[j-1].at)
			}
			fill(img, image.Rect(from, top, to, bottom), shade)
		}
		for k := 0; k <= 4; k++ {
			v := lo + (hi-lo)*float64(k)/4
			yy := y(v)
			fill(img, image.Rect(marginL, yy, width-marginR, yy+1), grid)
			text(img, 4, yy+4, ink, strings.TrimSpace(fmt.Sprintf("%.4g %s", v, p.unit)))
		}
		fill(img, image.Rect(marginL, top, marginL+1, bottom), ink)
		fill(img, image.Rect(marginL, bottom, width-marginR, bottom+1), ink)
		text(img, marginL+6, top-4, ink, p.title)
		prev := image.Point{-1, -1}
		for _, r := range rows {
			v := p.value(r)
			if math.IsNaN(v) {
				prev = image.Point{-1, -1}
				continue
			}
			pt := image.Point{x(r.at), y(v)}
			if prev.X >= 0 {
				line(img, prev, pt, p.color)
			}
			fill(img, image.Rect(pt.X-1, pt.Y-1, pt.X+2, pt.Y+2), p.color)
			prev = pt
		}
		if i == len(panels)-1 {
			for k := 0; k <= 6; k++ {
				d := time.Duration(float64(last.at) * float64(k) / 6).Round(time.Second)
				text(img, x(d)-12, bottom+16, ink, d.String())
			}
		}
	}
	return img
}

// niceCeil rounds v up to 4 × a step of 1, 2 or 5 × 10^k, so the axis ticks are round.
func niceCeil(v float64) float64 {
	if v <= 0 || math.IsNaN(v) {
		return 4
	}
	step := v / 4
	mag := math.Pow(10, math.Floor(math.Log10(step)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*mag >= step {
			return 4 * m * mag
		}
	}
	return 40 * mag
}

func fill(img *image.RGBA, r image.Rectangle, c color.RGBA) {
	draw.Draw(img, r.Intersect(img.Bounds()), &image.Uniform{c}, image.Point{}, draw.Src)
}

// line draws a 2-pixel line from a to b (Bresenham).
func line(img *image.RGBA, a, b image.Point, c color.RGBA) {
	dx, dy := abs(b.X-a.X), -abs(b.Y-a.Y)
	sx, sy := sign(b.X-a.X), sign(b.Y-a.Y)
	e := dx + dy
	for {
		img.SetRGBA(a.X, a.Y, c)
		img.SetRGBA(a.X, a.Y+1, c)
		if a == b {
			return
		}
		e2 := 2 * e
		if e2 >= dy {
			e += dy
			a.X += sx
		}
		if e2 <= dx {
			e += dx
			a.Y += sy
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

func text(img *image.RGBA, x, y int, c color.RGBA, s string) {
	d := font.Drawer{Dst: img, Src: &image.Uniform{c}, Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
	d.DrawString(s)
}
