package failures

import (
	"testing"
	"time"
)

// TestPacing: a failure every second for ten minutes is reported at 0 s, 1 s, 3 s, 7 s, 15 s,
// 31 s and then once a minute, each report counting the failures since the last; a success ends
// the run, and the next failure is reported at once.
func TestPacing(t *testing.T) {
	r := New(time.Second, time.Minute)
	t0 := time.Unix(0, 0)
	var at []int
	counted := 0
	for s := range 600 {
		rep := r.Fail(t0.Add(time.Duration(s) * time.Second))
		if rep.Total != s+1 || !rep.Since.Equal(t0) {
			t.Fatalf("second %d: total %d since %v", s, rep.Total, rep.Since)
		}
		if rep.Log {
			at = append(at, s)
			counted += rep.Count
		}
	}
	want := []int{0, 1, 3, 7, 15, 31, 63, 123, 183, 243, 303, 363, 423, 483, 543}
	if len(at) != len(want) {
		t.Fatalf("reports at %v, want %v", at, want)
	}
	for i := range want {
		if at[i] != want[i] {
			t.Fatalf("reports at %v, want %v", at, want)
		}
	}
	if counted != 544 { // every failure up to the last report is counted once
		t.Errorf("reports count %d failures, want 544", counted)
	}
	if d := r.Retry(); d != time.Minute {
		t.Errorf("retry after %v, want the ceiling", d)
	}
	if n, since := r.Succeed(); n != 600 || !since.Equal(t0) {
		t.Errorf("succeed after %d failures since %v", n, since)
	}
	if rep := r.Fail(t0.Add(time.Hour)); !rep.Log || rep.Count != 1 || rep.Total != 1 {
		t.Errorf("the first failure after a success: %+v", rep)
	}
	if d := r.Retry(); d != time.Second {
		t.Errorf("retry after a new run's first failure: %v, want 1s", d)
	}
}
