package leakcheck

import (
	"math/rand/v2"
	"testing"
)

// TestLeakChecks: the checks fail on a leak of one goroutine per fault and of 1 KiB per churn
// cycle, with the noise seen in real runs on top, and pass on flat series with the same noise.
// The series are random with a fixed seed; on 20,000 random series of this shape the goroutine
// check misjudged 0.2 % of flat ones and 0.6 % of leaking ones (a simulation, docs/testing.md).
func TestLeakChecks(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7)) //nolint:gosec // test data
	// Goroutines after each of 12 faults, shaped like the soak's (171 or 175, and in one sample
	// of five a dip of 26 while a reconnect is in progress): 0:171 1:176 2:171 3:145 4:175 ...
	goroutines := func(perFault float64) []Sample {
		var s []Sample
		for f := range 12 {
			v := 173 + float64(4*rng.IntN(2)-2) + perFault*float64(f)
			if rng.IntN(5) == 0 {
				v -= 26
			}
			s = append(s, Sample{At: float64(f), Value: v})
		}
		return s
	}
	// Live heap after a forced GC at 2,000, 6,000 and 10,000 cycles, shaped like the capacity
	// churn's (6.9, 7.0, 7.0 MB): ~7 MB ± 0.5 MB.
	heap := func(perCycle float64) []Sample {
		var s []Sample
		for _, c := range []float64{2000, 6000, 10000} {
			s = append(s, Sample{At: c, Value: 7e6 + perCycle*c + float64(rng.IntN(1e6)-5e5)})
		}
		return s
	}
	for trial := range 100 {
		if err := GoroutinesPerFault.Check(goroutines(1)); err == nil {
			t.Fatalf("trial %d: one goroutine per fault passed", trial)
		}
		if err := GoroutinesPerFault.Check(goroutines(0)); err != nil {
			t.Fatalf("trial %d: a flat goroutine series failed: %v", trial, err)
		}
		if err := HeapPerCycle.Check(heap(1024)); err == nil {
			t.Fatalf("trial %d: 1 KiB per cycle passed", trial)
		}
		if err := HeapPerCycle.Check(heap(0)); err != nil {
			t.Fatalf("trial %d: a flat heap failed: %v", trial, err)
		}
	}
	if err := GoroutinesPerFault.Check(goroutines(0)[:11]); err == nil {
		t.Error("eleven samples judged, where twelve are needed")
	}
	// The chaos matrix: its baseline and end, six faults apart.
	for _, c := range []struct {
		end  float64
		leak bool
	}{{121, false}, {120, false}, {123, false}, {124, true}, {127, true}} {
		err := ChaosGoroutinesPerFault.Check([]Sample{{At: 0, Value: 121}, {At: 6, Value: c.end}})
		if (err != nil) != c.leak {
			t.Errorf("chaos 121 → %v over 6 faults: %v, want leak %v", c.end, err, c.leak)
		}
	}
	// The soak's two measured runs pass.
	for _, run := range [][]float64{
		{171, 175, 171, 171, 146, 175, 171, 175, 175, 171, 145, 171, 171, 173},
		{171, 176, 171, 145, 175, 175, 171, 175, 175, 146, 175, 171},
	} {
		var s []Sample
		for i, v := range run {
			s = append(s, Sample{At: float64(i), Value: v})
		}
		if err := GoroutinesPerFault.Check(s); err != nil {
			t.Errorf("a measured soak failed: %v", err)
		}
	}
}

func TestSlope(t *testing.T) {
	tests := []struct {
		name string
		s    []Sample
		want float64
	}{
		{"none", nil, 0},
		{"one", []Sample{{0, 5}}, 0},
		{"same at", []Sample{{1, 5}, {1, 9}}, 0},
		{"line", []Sample{{0, 1}, {1, 3}, {2, 5}}, 2},
		{"spike ignored", []Sample{{0, 10}, {1, 10}, {2, 40}, {3, 10}, {4, 10}}, 0},
		{"falling", []Sample{{0, 9}, {1, 6}, {2, 3}}, -3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Slope(tt.s); got != tt.want {
				t.Errorf("Slope = %v, want %v", got, tt.want)
			}
		})
	}
}
