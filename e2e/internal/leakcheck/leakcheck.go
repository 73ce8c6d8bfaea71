// Package leakcheck judges whether a series of measurements (a process's goroutines or live heap,
// taken at quiet moments between faults or churn cycles) grows with the faults or cycles, or only
// moves around. The e2e leak checks (soak, chaos matrix, capacity churn) share it, so that what
// each can catch is shown once, on synthetic series, by TestLeakChecks.
//
// The growth is the Theil–Sen slope: the median of the slopes between every pair of samples. A
// spike (a reconnect's goroutines, a GC that ran late) moves it little, where it would move a
// first-versus-last difference or a least-squares fit; a leak of a steady amount per fault moves
// every pair's slope, and so the median.
package leakcheck

import (
	"fmt"
	"slices"
	"strings"
)

// Sample is one measurement: Value after At faults (or cycles).
type Sample struct {
	At, Value float64
}

// Slope is the Theil–Sen estimate of how much Value grows per unit of At. Samples at the same
// At give no slope; fewer than two distinct At give 0.
func Slope(s []Sample) float64 {
	var slopes []float64
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if dx := s[j].At - s[i].At; dx != 0 {
				slopes = append(slopes, (s[j].Value-s[i].Value)/dx)
			}
		}
	}
	if len(slopes) == 0 {
		return 0
	}
	slices.Sort(slopes)
	n := len(slopes)
	if n%2 == 1 {
		return slopes[n/2]
	}
	return (slopes[n/2-1] + slopes[n/2]) / 2
}

// Limit is one leak check: what is measured, per what, and the growth that fails it.
type Limit struct {
	What   string  // "goroutines", "live heap bytes"
	Per    string  // "fault", "cycle"
	Max    float64 // the slope, in What per Per, at or above which the series leaks
	Points int     // the fewest samples the judgement needs
	// Dip, if set: samples more than Dip below the series' median are left out. Goroutines dip
	// while a reconnect is in progress (its old connection's goroutines are gone, the new ones
	// not yet started); a dip is never a leak, and it would pull the slope either way.
	Dip float64
}

// The limits the e2e leak checks use; TestLeakChecks shows what each catches.
var (
	// GoroutinesPerFault: the median of five readings of go_goroutines, once the source is
	// live again after each fault, over twelve faults or more. The soak measured two levels 4
	// apart and dips of ~26 in one sample of five (docs/testing.md).
	GoroutinesPerFault = Limit{What: "goroutines", Per: "fault", Max: 0.5, Points: 12, Dip: 10}
	// ChaosGoroutinesPerFault: the chaos matrix's goroutines (as the soak reads them) before
	// and after the rows that follow its last restart, six faults: a leak of one per fault is
	// +6, and +3 already fails. Every run measured ended where it began, to the goroutine.
	ChaosGoroutinesPerFault = Limit{What: "goroutines", Per: "fault", Max: 0.5, Points: 2}
	// HeapPerCycle: live heap after a forced GC at quiet moments of a create/delete churn.
	HeapPerCycle = Limit{What: "live heap bytes", Per: "cycle", Max: 512, Points: 3}
)

// Check returns an error if the samples grow by Max per unit or more, or are too few to say.
func (l Limit) Check(s []Sample) error {
	if len(s) < l.Points {
		return fmt.Errorf("%s: %d samples, need %d to judge growth per %s", l.What, len(s), l.Points, l.Per)
	}
	kept := s
	if l.Dip > 0 {
		values := make([]float64, len(s))
		for i, x := range s {
			values[i] = x.Value
		}
		slices.Sort(values)
		median := values[len(values)/2]
		kept = slices.DeleteFunc(slices.Clone(s), func(x Sample) bool { return x.Value < median-l.Dip })
	}
	if slope := Slope(kept); slope >= l.Max {
		return fmt.Errorf("%s grow by %.2f per %s (limit %.2f): %s", l.What, slope, l.Per, l.Max, Format(s))
	}
	return nil
}

// Format lists the samples as at:value, for a failure message or a log line.
func Format(s []Sample) string {
	parts := make([]string, len(s))
	for i, x := range s {
		parts[i] = fmt.Sprintf("%g:%g", x.At, x.Value)
	}
	return strings.Join(parts, " ")
}
