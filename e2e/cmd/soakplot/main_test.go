package main

import (
	"bytes"
	"image/png"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const report = `30m0s, 1000 services, ...

| time | RPCs sent | RPCs failed | error rate | propagation p99 (n) | heap | goroutines | fault on |
|---|---|---|---|---|---|---|---|
| 30s | 58116 | 0 | 0.000 % | 670ms (47) | 25.6 MiB | 1254 |  |
| 1m1s | 117525 | 2 | 0.002 % | -1ns (0) | 26.8 MiB | 1251 | API responses stall |
| 1m30s | 175179 | 2 | 0.001 % | 1.2s (127) | 26.6 MiB | 1256 |  |
`

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr string
		check   func(t *testing.T, rows []row)
	}{
		{name: "the soak's table", in: report, check: func(t *testing.T, rows []row) {
			if len(rows) != 3 {
				t.Fatalf("%d rows, want 3", len(rows))
			}
			r := rows[1]
			if r.at != 61*time.Second || r.sent != 117525 || r.failed != 2 || !math.IsNaN(r.p99) || r.heapMiB != 26.8 || r.goroutines != 1251 || r.fault != "API responses stall" {
				t.Errorf("row 1 = %+v", r)
			}
			if rows[2].p99 != 1.2 || rows[0].p99 != 0.67 {
				t.Errorf("p99s %v, %v", rows[0].p99, rows[2].p99)
			}
		}},
		{name: "one row", in: "| 30s | 1 | 0 | 0 % | 1s (1) | 1 MiB | 2 |  |\n", wantErr: "fewer than two rows"},
		{name: "a cell missing", in: "| 30s | 1 | 0 | 0 % | 1s (1) | 1 MiB |  |\n", wantErr: "7 cells"},
		{name: "bad heap", in: "| 30s | 1 | 0 | 0 % | 1s (1) | lots | 2 |  |\n| 60s | 1 | 0 | 0 % | 1s (1) | 1 MiB | 2 |  |\n", wantErr: "line 1: heap"},
		{name: "bad time", in: "| soon | 1 | 0 | 0 % | 1s (1) | 1 MiB | 2 |  |\n", wantErr: "line 1: time"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rows, err := parse(strings.NewReader(tc.in))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, rows)
		})
	}
}

// The plot is a PNG of the stated size with the series drawn in it.
func TestPlot(t *testing.T) {
	rows, err := parse(strings.NewReader(report))
	if err != nil {
		t.Fatal(err)
	}
	img := plot(rows)
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	got, err := png.Decode(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if got.Bounds().Dx() != width {
		t.Errorf("width %d, want %d", got.Bounds().Dx(), width)
	}
	series, shaded := 0, 0
	for y := range img.Bounds().Dy() {
		for x := range img.Bounds().Dx() {
			switch img.RGBAAt(x, y) {
			case blue, red:
				series++
			case shade:
				shaded++
			}
		}
	}
	if series < 100 || shaded == 0 {
		t.Errorf("%d series pixels, %d shaded: the data is not drawn", series, shaded)
	}
	if err := run(filepath.Join(t.TempDir(), "missing.md"), filepath.Join(t.TempDir(), "x.png")); err == nil {
		t.Error("a missing report gave no error")
	}
}

func TestNiceCeil(t *testing.T) {
	tests := []struct{ in, want float64 }{
		{38.2, 40}, {1382, 2000}, {1.07, 2}, {0.73, 0.8}, {1.1, 2}, {0, 4}, {101, 200}, {9.5, 10},
	}
	for _, tc := range tests {
		if got := niceCeil(tc.in); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("niceCeil(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
