// Package cache holds the effective view that Holdfast serves: the services the resolver
// reported, as last accepted, persisted to disk so that a restarted Holdfast serves its last
// known good routes before it reaches the API server. The xds package serves only from here. It
// knows plain Go types and nothing about gRPC or Envoy.
package cache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/holdfast/holdfast/internal/failures"
	"github.com/holdfast/holdfast/internal/promreg"
	"github.com/holdfast/holdfast/resolver"
)

// View is the effective state to serve. It is immutable.
type View struct {
	Services map[resolver.Key]*resolver.Service
	// Synced is true once the view reflects a complete sync with the API server.
	Synced bool
	// Retired holds earlier incarnations of services deleted and created again (another UID)
	// within their tombstone's grace, served beside the new incarnation until it ends: a
	// client moving to the new incarnation's resources never finds the old ones gone first.
	// Never persisted.
	Retired map[resolver.Key]*resolver.Service
	// Restored is true for a view loaded from the state file, before the first sync.
	Restored bool
	// RestoredFrom is when the restored state was written.
	RestoredFrom time.Time
	// Generation increases with every view the store accepts.
	Generation uint64
}

// Servable says whether the view is worth serving: synced, or restored from disk.
func (v View) Servable() bool { return v.Synced || v.Restored }

// Observer is told about every new View. OnView must not block: the store calls it on the
// resolver's goroutine.
type Observer interface {
	OnView(View)
}

// ObserverFunc adapts a function to an Observer.
type ObserverFunc func(View)

// OnView calls f.
func (f ObserverFunc) OnView(v View) { f(v) }

// StoreOptions configure a Store.
type StoreOptions struct {
	// StateDir is where the state file lives; empty disables persistence.
	StateDir string
	// MaxStateBytes bounds the state file a start will read. [512 MiB]
	MaxStateBytes int64
	// WriteDelay coalesces changes: a write happens this long after the first unsaved change. [1s]
	WriteDelay time.Duration
	Guard      GuardOptions
	Limits     Limits
	Logger     *slog.Logger
	Registry   prometheus.Registerer
	// Now is the clock that paces the reports of failed state writes [time.Now]; tests fix it.
	Now func() time.Time
}

// Store keeps the current View, hands every new one to its observer, and persists synced views.
type Store struct {
	// set at construction, read-only
	opts    StoreOptions
	obs     Observer
	log     *slog.Logger
	metrics storeMetrics
	kick    chan struct{}      // capacity 1: "there is an unsaved view"
	failing *failures.Repeated // paces the reports and retries of state file writes

	// guarded by mu
	mu           sync.Mutex
	capacity     *capacity // limits and tombstones (the pointer is set at construction)
	view         View
	live         map[resolver.Key]*resolver.Service // the admitted services, without tombstones
	latest       resolver.Resolution                // the newest resolution, applied or not
	unsaved      bool
	unsavedSince time.Time                          // when the oldest unwritten change arrived
	base         map[resolver.Key]*resolver.Service // what the guard measures withdrawals against
	baseAt       time.Time
	hold         *Hold
	holds        int // holds so far, for IDs
}

// Hold is a change the mass-withdrawal guard keeps from clients.
type Hold struct {
	ID      int
	Since   time.Time // the change has been held (with healthy sources) since
	Verdict Verdict
	// change is the newest resolution, applied whole when the hold ends.
	change resolver.Resolution
}

type storeMetrics struct {
	writes, writeErrors prometheus.Counter
	lastWrite           prometheus.Gauge
	loadErrors          *prometheus.CounterVec
	restored            prometheus.Gauge
	restoredAge         prometheus.Gauge
	held                prometheus.Gauge
	heldWithdrawn       prometheus.Gauge
	holds               prometheus.Counter
	releases            *prometheus.CounterVec
}

// NewStore returns an empty, unsynced store that reports to obs.
func NewStore(opts StoreOptions, obs Observer) (*Store, error) {
	if opts.MaxStateBytes <= 0 {
		opts.MaxStateBytes = 512 << 20
	}
	if opts.WriteDelay <= 0 {
		opts.WriteDelay = time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	opts.Guard.defaults()
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	capacity, err := newCapacity(opts.Limits)
	if err != nil {
		return nil, err
	}
	s := &Store{
		capacity: capacity,
		opts:     opts, obs: obs, log: opts.Logger.With("component", "store"),
		kick:    make(chan struct{}, 1),
		failing: failures.New(time.Second, 30*time.Second),
		view:    View{Services: map[resolver.Key]*resolver.Service{}},
		metrics: storeMetrics{
			writes: prometheus.NewCounter(prometheus.CounterOpts{
				Name: "holdfast_state_writes_total", Help: "State files written."}),
			writeErrors: prometheus.NewCounter(prometheus.CounterOpts{
				Name: "holdfast_state_write_errors_total", Help: "State file writes that failed; the previous file stays in place."}),
			lastWrite: prometheus.NewGauge(prometheus.GaugeOpts{
				Name: "holdfast_state_last_write_timestamp_seconds", Help: "Unix time of the last state file written."}),
			loadErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "holdfast_state_load_errors_total", Help: "State files ignored at start, by reason."}, []string{"reason"}),
			restored: prometheus.NewGauge(prometheus.GaugeOpts{
				Name: "holdfast_state_restored", Help: "1 while Holdfast serves state restored from disk, before its first sync."}),
			restoredAge: prometheus.NewGauge(prometheus.GaugeOpts{
				Name: "holdfast_state_restored_age_seconds", Help: "Age of the restored state when it was loaded."}),
			held: prometheus.NewGauge(prometheus.GaugeOpts{
				Name: "holdfast_guard_held", Help: "1 while the mass-withdrawal guard holds a change; clients keep the last good state."}),
			heldWithdrawn: prometheus.NewGauge(prometheus.GaugeOpts{
				Name: "holdfast_guard_held_withdrawn_endpoints", Help: "Endpoints the held change would withdraw."}),
			holds: prometheus.NewCounter(prometheus.CounterOpts{
				Name: "holdfast_guard_holds_total", Help: "Changes the mass-withdrawal guard has held."}),
			releases: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "holdfast_guard_releases_total", Help: "Holds ended, by how: hold_period, operator, or cleared (the change stopped being a mass withdrawal)."}, []string{"how"}),
		},
	}
	m := s.metrics
	if err := promreg.Register(opts.Registry, "store", append([]prometheus.Collector{m.writes, m.writeErrors, m.lastWrite, m.loadErrors, m.restored, m.restoredAge, m.held, m.heldWithdrawn, m.holds, m.releases}, capacity.collectors()...)...); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Store) path() string { return filepath.Join(s.opts.StateDir, StateFileName) }

// Restore loads the state file, if there is one, and serves it until the first sync. A file
// that cannot be used is reported and ignored whole: it never yields part of its content.
func (s *Store) Restore() error {
	if s.opts.StateDir == "" {
		return nil
	}
	start := time.Now()
	// O_NONBLOCK: were the path a FIFO, opening it would wait for a writer forever.
	f, err := os.OpenFile(s.path(), os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if errors.Is(err, os.ErrNotExist) {
		s.log.Info("no state file: starting empty", "path", s.path())
		return nil
	}
	if err != nil {
		return s.loadFailed(&LoadError{"open", err})
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return s.loadFailed(&LoadError{"open", err})
	} else if !fi.Mode().IsRegular() {
		return s.loadFailed(&LoadError{"open", fmt.Errorf("not a regular file (%v)", fi.Mode().Type())})
	}
	services, writtenAt, err := decodeState(f, s.opts.MaxStateBytes)
	if err != nil {
		var le *LoadError
		if !errors.As(err, &le) {
			le = &LoadError{"decode", err}
		}
		return s.loadFailed(le)
	}
	s.mu.Lock()
	if s.view.Synced { // the API server won the race: its view is fresher
		s.mu.Unlock()
		s.log.Info("state file not used: already synced with the API server", "path", s.path(), "services", len(services))
		return nil
	}
	s.view = View{Services: services, Restored: true, RestoredFrom: writtenAt, Generation: s.view.Generation + 1}
	s.live = services
	v := s.view
	s.mu.Unlock()
	age := time.Since(writtenAt)
	s.metrics.restored.Set(1)
	s.metrics.restoredAge.Set(age.Seconds())
	s.log.Warn("serving state restored from disk until the API server is synced", "decision", "state_restored", "subject", s.path(),
		"services", len(services), "written", writtenAt, "age", age.Round(time.Second), "load_time", time.Since(start))
	s.obs.OnView(v)
	return nil
}

func (s *Store) loadFailed(le *LoadError) error {
	s.metrics.loadErrors.WithLabelValues(le.Reason).Inc()
	s.log.Error("state file ignored: starting empty, serving once synced", "decision", "state_file_ignored", "subject", s.path(), "reason", le.Reason, "err", le.Err)
	return le
}

// OnResolution accepts a resolver's Resolution as the new view. When the mass-withdrawal
// guard holds it, only its withdrawals are held: everything else of it — new services, new
// endpoints, changes that withdraw nothing — is applied at once (see withhold), and the whole
// of it when the hold ends. It implements resolver.Observer.
func (s *Store) OnResolution(r resolver.Resolution) {
	now := time.Now()
	s.mu.Lock()
	s.latest = r
	var a applied
	switch {
	case !s.view.Servable(): // nothing served yet: nothing to protect
		a = s.applyLocked(r.Services, r.Synced, now)
	default:
		a = s.judgeLocked(r, now)
	}
	s.mu.Unlock()
	s.report(a)
}

// judgeLocked has the guard judge r against what was served at the start of its window, and
// applies it — whole, or without its withdrawals while it is held.
func (s *Store) judgeLocked(r resolver.Resolution, now time.Time) applied {
	if s.hold == nil && now.Sub(s.baseAt) > s.opts.Guard.Window {
		// Against the live services: a tombstone's endpoints were withdrawn when it was deleted.
		s.base, s.baseAt = s.live, now
	}
	restoredAt := time.Time{}
	if s.view.Restored {
		restoredAt = now // the first sync after a restart: as suspicious as a stale source
	}
	v := s.opts.Guard.judge(s.base, r.Services, now, func(k resolver.Key) time.Time {
		return latest(restoredAt, r.UnhealthyAt[k.Namespace], r.UnhealthyAt[""])
	})
	if !v.Hold {
		a := s.applyLocked(r.Services, r.Synced, now)
		if s.hold != nil {
			a.released, a.how = s.endHoldLocked(r, now), "cleared"
		}
		return a
	}
	var a applied
	if s.hold == nil {
		s.holds++
		s.hold = &Hold{ID: s.holds, Since: now}
		a.held = s.hold.ID
	}
	s.hold.Verdict, s.hold.change = v, r
	a.verdict = v
	// What withdraws nothing goes through; what would be withdrawn stays as it is served.
	partial := s.applyLocked(withhold(s.live, r.Services), r.Synced, now)
	a.view, a.refused, a.crossed, a.endpoints, a.restoredReplaced = partial.view, partial.refused, partial.crossed, partial.endpoints, partial.restoredReplaced
	return a
}

// applied is what one change to the served view did, for report to say and hand on once the
// store's lock is released.
type applied struct {
	view             View
	refused, crossed []string
	endpoints        int
	restoredReplaced bool // the first sync replaced state restored from disk

	held     int     // a hold began, with this ID
	verdict  Verdict // the guard's verdict, while a change is held
	released *Hold   // a hold ended...
	how      string  // ...how: hold_period, operator, or cleared
}

// applyLocked makes services the served view, within the capacity limits and with tombstones
// for what it deletes. The caller holds s.mu and hands the result to report once it is released.
func (s *Store) applyLocked(services map[resolver.Key]*resolver.Service, synced bool, now time.Time) applied {
	wasRestored := s.view.Restored
	admitted, refused := s.capacity.admit(s.live, services)
	effective, retired := s.capacity.withTombstones(s.live, admitted, now)
	endpoints := 0
	for _, svc := range admitted {
		endpoints += svc.EndpointCount()
	}
	s.live = admitted
	s.view = View{Services: effective, Retired: retired, Synced: synced, Generation: s.view.Generation + 1}
	if s.opts.StateDir != "" && synced && !s.unsaved {
		s.unsaved, s.unsavedSince = true, now
	}
	return applied{view: s.view, refused: refused, crossed: s.capacity.crossed(len(admitted), endpoints), endpoints: endpoints,
		restoredReplaced: wasRestored && synced}
}

// endHoldLocked ends the hold: r, applied by the caller, becomes what withdrawals are measured
// against.
func (s *Store) endHoldLocked(r resolver.Resolution, now time.Time) *Hold {
	h := s.hold
	s.hold = nil
	s.base, s.baseAt = r.Services, now
	return h
}

// report logs and hands on what an apply did. It runs without the store's lock: the observer
// may take its own, and a slow log never holds up the store.
func (s *Store) report(a applied) {
	if len(a.refused) > 0 {
		s.log.Error("services refused: a capacity limit is reached; what is served stays untouched", "decision", "capacity_refused",
			"refused", a.refused, "services", len(a.view.Services), "max_services", s.capacity.limits.MaxServices,
			"endpoints", a.endpoints, "max_endpoints", s.capacity.limits.MaxEndpoints)
	}
	for _, kind := range a.crossed {
		s.log.Warn("capacity above 80%", "decision", "capacity_warning", "subject", kind, "kind", kind, "services", len(a.view.Services), "endpoints", a.endpoints,
			"max_services", s.capacity.limits.MaxServices, "max_endpoints", s.capacity.limits.MaxEndpoints)
	}
	if a.held != 0 {
		s.metrics.holds.Inc()
		s.metrics.held.Set(1)
		s.log.Warn("mass withdrawal held: clients keep the endpoints it would withdraw; the rest of the change is applied", "decision", "guard_hold",
			"subject", fmt.Sprint("hold ", a.held), "hold", a.held, "reason", a.verdict.Reason, "withdrawn", a.verdict.Withdrawn, "fleet", a.verdict.Fleet,
			"services", a.verdict.Services, "hold_period", s.opts.Guard.HoldPeriod)
	}
	if a.verdict.Hold {
		s.metrics.heldWithdrawn.Set(float64(a.verdict.Withdrawn))
	}
	if h := a.released; h != nil {
		s.metrics.held.Set(0)
		s.metrics.heldWithdrawn.Set(0)
		s.metrics.releases.WithLabelValues(a.how).Inc()
		s.log.Warn("held change applied", "decision", "guard_release", "subject", fmt.Sprint("hold ", h.ID), "hold", h.ID, "how", a.how,
			"held_for", time.Since(h.Since).Round(time.Second), "withdrawn", h.Verdict.Withdrawn, "services", h.Verdict.Services)
	}
	if a.restoredReplaced {
		s.metrics.restored.Set(0)
		s.log.Info("synced with the API server: restored state replaced", "decision", "restored_state_replaced", "services", len(a.view.Services))
	}
	s.obs.OnView(a.view)
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// ClientsRatio is the fill gauge for connected clients, for the xDS server to set.
func (s *Store) ClientsRatio() prometheus.Gauge { return s.capacity.ratio.WithLabelValues("clients") }

// Held returns the change the guard holds, if any.
func (s *Store) Held() *Hold {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hold == nil {
		return nil
	}
	h := *s.hold
	return &h
}

// Release applies the held change with the given ID at once: an operator's decision.
func (s *Store) Release(id int) error {
	s.mu.Lock()
	if s.hold == nil || s.hold.ID != id {
		s.mu.Unlock()
		return fmt.Errorf("no hold %d", id)
	}
	a := s.releaseLocked("operator", time.Now())
	s.mu.Unlock()
	s.report(a)
	return nil
}

// releaseLocked applies the held change whole and ends the hold.
func (s *Store) releaseLocked(how string, now time.Time) applied {
	r := s.hold.change
	a := s.applyLocked(r.Services, r.Synced, now)
	a.released, a.how = s.endHoldLocked(r, now), how
	return a
}

// sweepTombstones collects expired tombstones and serves the view without them.
func (s *Store) sweepTombstones(now time.Time) {
	s.mu.Lock()
	if !s.capacity.sweep(now) {
		s.mu.Unlock()
		return
	}
	effective, retired := s.capacity.withTombstones(s.live, s.live, now)
	s.view = View{Services: effective, Retired: retired, Synced: s.view.Synced,
		Restored: s.view.Restored, RestoredFrom: s.view.RestoredFrom, Generation: s.view.Generation + 1}
	if s.opts.StateDir != "" && s.view.Synced && !s.unsaved {
		s.unsaved, s.unsavedSince = true, now
	}
	a := applied{view: s.view}
	s.mu.Unlock()
	s.report(a)
}

// expireHold applies a held change that has stayed true for the hold period with healthy
// sources. A source that turned unhealthy during the hold restarts the clock.
func (s *Store) expireHold(now time.Time) {
	s.mu.Lock()
	h := s.hold
	if h == nil {
		s.mu.Unlock()
		return
	}
	// The hold period counts only time with every source healthy.
	if !h.change.Healthy() {
		h.Since = now
	}
	for _, at := range h.change.UnhealthyAt {
		if at.After(h.Since) {
			h.Since = at
		}
	}
	if now.Sub(h.Since) < s.opts.Guard.HoldPeriod {
		s.mu.Unlock()
		return
	}
	a := s.releaseLocked("hold_period", now)
	s.mu.Unlock()
	s.report(a)
}

// Tick does the store's periodic work as of now: a held change whose hold period is over is
// applied, expired tombstones are collected. Run calls it every second.
func (s *Store) Tick(now time.Time) {
	s.expireHold(now)
	s.sweepTombstones(now)
}

// View returns the current view.
func (s *Store) View() View {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.view
}

// Run writes synced views to the state file, at most one write per WriteDelay, and flushes the
// latest one when ctx is done, before it returns.
func (s *Store) Run(ctx context.Context) error {
	if s.opts.StateDir != "" {
		if err := os.MkdirAll(s.opts.StateDir, 0o750); err != nil {
			return fmt.Errorf("--state-dir: %w", err)
		}
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var write <-chan time.Time // armed after a change, for WriteDelay
	for {
		select {
		case <-ctx.Done():
			s.flush()
			return nil
		case now := <-tick.C:
			s.Tick(now)
		case <-s.kick:
			if write == nil {
				write = time.After(s.opts.WriteDelay)
			}
		case <-write:
			write = nil
			if !s.flush() {
				write = time.After(s.failing.Retry()) // try again, backing off; the previous file stays
			}
		}
	}
}

// flush writes the current view if it has not been written yet, and reports whether the state
// file is now current.
func (s *Store) flush() bool {
	s.mu.Lock()
	v, unsaved := s.view, s.unsaved
	s.mu.Unlock()
	if !unsaved || s.opts.StateDir == "" {
		return true
	}
	data, err := encodeState(v.Services, time.Now())
	if err == nil {
		err = WriteFileAtomic(s.path(), data)
	}
	if err != nil {
		s.metrics.writeErrors.Inc()
		if rep := s.failing.Fail(s.opts.Now()); rep.Log {
			s.log.Error("state file not written; the previous one stays", "decision", "state_write_failed", "subject", s.path(), "err", err,
				"failures", rep.Count, "over", rep.Over.Round(time.Second), "failing_since", rep.Since)
		}
		return false
	}
	if n, since := s.failing.Succeed(); n > 0 {
		s.log.Info("state file written again", "decision", "state_write_recovered", "subject", s.path(), "after_failures", n, "failed_for", time.Since(since).Round(time.Second))
	}
	s.mu.Lock()
	if s.view.Generation == v.Generation { // nothing newer arrived while writing
		s.unsaved, s.unsavedSince = false, time.Time{}
	}
	s.mu.Unlock()
	s.metrics.writes.Inc()
	s.metrics.lastWrite.SetToCurrentTime()
	return true
}

// Stuck says whether the state file has lagged behind the served state for longer than after
// (on top of the write delay): the disk refuses writes, or the writer hangs.
func (s *Store) Stuck(now time.Time, after time.Duration) (bool, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.unsaved || now.Sub(s.unsavedSince) <= s.opts.WriteDelay+after {
		return false, ""
	}
	return true, fmt.Sprintf("state file not written for %v", now.Sub(s.unsavedSince).Round(time.Second))
}
