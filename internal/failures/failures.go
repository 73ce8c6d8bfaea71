// Package failures paces the reports of a failure that repeats (a disk that refuses every
// write, say): the first is reported at once, the next ones less and less often — after 1 s,
// 2 s, 4 s and so on up to a ceiling — each saying how many failures it stands for and over
// how long; a success ends the run. A retry that follows the same pace backs off with it.
package failures

import (
	"sync"
	"time"
)

// Report is what to say about one failure.
type Report struct {
	// Log says this failure is to be reported; the others are counted into the next report.
	Log bool
	// Count is the failures this report stands for, this one included (with Log).
	Count int
	// Over is the time those failures took: since the first of them.
	Over time.Duration
	// Total is every failure of the run, and Since when it began.
	Total int
	Since time.Time
}

// Repeated paces the reports of one kind of failure. Safe for concurrent use.
type Repeated struct {
	// set at construction, read-only
	first, ceiling time.Duration

	// guarded by mu
	mu         sync.Mutex
	total      int       // failures in the current run
	since      time.Time // when the run began
	unreported int       // failures since the last report
	from       time.Time // the first of them
	next       time.Time // the next report is due then
	pause      time.Duration
}

// New paces reports: the first at once, then after first, doubling up to ceiling.
func New(first, ceiling time.Duration) *Repeated {
	return &Repeated{first: first, ceiling: max(ceiling, first)}
}

// Fail records a failure at now and says whether to report it.
func (r *Repeated) Fail(now time.Time) Report {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.total == 0 {
		r.since, r.pause = now, r.first
	}
	r.total++
	if r.unreported == 0 {
		r.from = now
	}
	r.unreported++
	rep := Report{Total: r.total, Since: r.since}
	if r.total == 1 || !now.Before(r.next) {
		rep.Log, rep.Count, rep.Over = true, r.unreported, now.Sub(r.from)
		r.unreported = 0
		r.next = now.Add(r.pause)
		r.pause = min(2*r.pause, r.ceiling)
	}
	return rep
}

// Retry is how long to wait before trying again after the run's latest failure: first,
// doubling with every failure, up to ceiling.
func (r *Repeated) Retry() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := r.first
	for i := 1; i < r.total && d < r.ceiling; i++ {
		d *= 2
	}
	return min(d, r.ceiling)
}

// Succeed ends the run of failures, and returns how many there were since when (0: none).
func (r *Repeated) Succeed() (failures int, since time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	failures, since = r.total, r.since
	r.total, r.unreported = 0, 0
	return failures, since
}
