package resolver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"reflect"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/tools/cache"

	"github.com/holdfast/holdfast/internal/promreg"
)

// Observer receives every Resolution the resolver publishes. OnResolution is called from the
// resolver's run loop, one call at a time; it must not block for long.
type Observer interface {
	OnResolution(Resolution)
}

// ObserverFunc adapts a function to an Observer.
type ObserverFunc func(Resolution)

// OnResolution calls f.
func (f ObserverFunc) OnResolution(r Resolution) { f(r) }

// Options configure a Resolver. Zero durations take the defaults in brackets.
type Options struct {
	Client kubernetes.Interface
	// Metadata, when set, is used to watch Nodes' metadata: an endpoint's region, and its zone
	// when its EndpointSlice has none, come from its Node's topology labels.
	Metadata metadata.Interface
	// Exports, when set, is used to watch ServiceExports' metadata (the MCS API): a service
	// with one is exported to the cluster set (Service.ExportedAt). The ServiceExport CRD must
	// be installed; until it is, the source does not sync.
	Exports metadata.Interface
	// Namespaces to watch; empty watches all namespaces.
	Namespaces []string
	Logger     *slog.Logger
	Registry   prometheus.Registerer
	// HoldOff coalesces bursts of events: a rebuild waits this long after the latest event,
	// but never longer than MaxDelay after the first. [10ms, 100ms]
	HoldOff  time.Duration
	MaxDelay time.Duration
	// ProbeInterval is how often each source checks the API server with a quorum read that
	// must answer within ProbeTimeout; a failure marks the source stale. [5s, 3s]
	ProbeInterval time.Duration
	ProbeTimeout  time.Duration
	// WatchIdleTimeout: a synced source whose watches deliver no event and no bookmark for this
	// long is stale and starts over with a fresh list. [3m]
	WatchIdleTimeout time.Duration
	// ListTimeout bounds every LIST the informers make. [30s]
	ListTimeout time.Duration
	// WatchTimeout is the longest a watch stays open before the server ends it (jittered
	// between half and all of it). [2m]
	WatchTimeout time.Duration
	// RestartBackoff is the first wait before a new generation of watches, doubling up to
	// MaxRestartBackoff. [1s, 30s]
	RestartBackoff    time.Duration
	MaxRestartBackoff time.Duration
	// MaxEndpointsPerService bounds one service (all ports); a bigger one is rejected whole and
	// keeps its last good state. [20000]
	MaxEndpointsPerService int
	// OrphanGrace is how long EndpointSlices of a service the resolver has not seen wait before
	// they are reported as belonging to no service: Services and EndpointSlices come on
	// separate watches, and a slice's event often arrives before its new Service's. [5s]
	OrphanGrace time.Duration
}

func (o *Options) defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.HoldOff, 10*time.Millisecond)
	def(&o.MaxDelay, 100*time.Millisecond)
	o.MaxDelay = max(o.MaxDelay, o.HoldOff)
	def(&o.ProbeInterval, 5*time.Second)
	def(&o.ProbeTimeout, 3*time.Second)
	def(&o.WatchIdleTimeout, 3*time.Minute)
	def(&o.ListTimeout, 30*time.Second)
	def(&o.WatchTimeout, 2*time.Minute)
	def(&o.RestartBackoff, time.Second)
	def(&o.MaxRestartBackoff, 30*time.Second)
	def(&o.OrphanGrace, 5*time.Second)
	if o.MaxEndpointsPerService <= 0 {
		o.MaxEndpointsPerService = 20000
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
}

// Resolver watches Services and EndpointSlices and publishes Resolutions to its Observer.
type Resolver struct {
	// set at construction, read-only
	opts    Options
	log     *slog.Logger
	obs     Observer
	sources []*source
	metrics resolverMetrics

	// guarded by mu: what the run loop must do next
	mu      sync.Mutex
	dirty   map[Key]time.Time // services to rebuild, and when the first event for each arrived
	resyncs map[*source]struct{}
	health  bool          // a source changed state: publish even if no service changed
	kick    chan struct{} // capacity 1: "there is work"

	rejections *rejectionLog

	// owned by the run loop
	services  map[Key]*Service
	degraded  map[Key]string    // services kept at their last good state, and why
	orphans   map[Key]time.Time // keys with slices and no Service yet, since when (see OrphanGrace)
	published bool
}

const byServiceIndex = "holdfast.io/service"

type resolverMetrics struct {
	services       prometheus.Gauge
	endpoints      prometheus.Gauge
	publishes      prometheus.Counter
	stale          *prometheus.GaugeVec
	restarts       *prometheus.CounterVec
	probeFailures  *prometheus.CounterVec
	degraded       prometheus.Gauge
	unmatched      prometheus.Gauge
	exportsMissing *prometheus.GaugeVec
}

// New creates a Resolver. Call Run to start it.
func New(opts Options, obs Observer) (*Resolver, error) {
	if opts.Client == nil {
		return nil, errors.New("resolver: no Kubernetes client")
	}
	if obs == nil {
		return nil, errors.New("resolver: no observer")
	}
	opts.defaults()
	log := opts.Logger.With("component", "resolver")
	rejections, err := newRejectionLog(log)
	if err != nil {
		return nil, err
	}
	r := &Resolver{
		rejections: rejections,
		degraded:   map[Key]string{},
		orphans:    map[Key]time.Time{},
		opts:       opts,
		log:        log,
		obs:        obs,
		dirty:      map[Key]time.Time{},
		resyncs:    map[*source]struct{}{},
		kick:       make(chan struct{}, 1),
		services:   map[Key]*Service{},
		metrics: resolverMetrics{
			services: prometheus.NewGauge(prometheus.GaugeOpts{
				Name: "holdfast_resolver_services", Help: "Services with at least one routable port in the resolver's view."}),
			endpoints: prometheus.NewGauge(prometheus.GaugeOpts{
				Name: "holdfast_resolver_endpoints", Help: "Endpoints (address:port per service port, any condition) in the resolver's view."}),
			publishes: prometheus.NewCounter(prometheus.CounterOpts{
				Name: "holdfast_resolver_publishes_total", Help: "Resolutions published by the resolver."}),
			stale: prometheus.NewGaugeVec(prometheus.GaugeOpts{
				Name: "holdfast_source_stale", Help: "1 while a source's view cannot be trusted (probe failing or watch silent); its last routes are still served."}, []string{"source"}),
			restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "holdfast_source_watch_restarts_total", Help: "Times a source threw its watches away and listed everything again."}, []string{"source"}),
			probeFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "holdfast_source_probe_failures_total", Help: "Quorum-read probes of the API server that failed or timed out."}, []string{"source"}),
			degraded: prometheus.NewGauge(prometheus.GaugeOpts{
				Name: "holdfast_services_degraded", Help: "Services kept at their last good state because their new input had nothing usable."}),
			exportsMissing: prometheus.NewGaugeVec(prometheus.GaugeOpts{
				Name: "holdfast_source_serviceexports_missing", Help: "1 while a source's cluster has no ServiceExport CRD: nothing is exported from it (cluster sets only)."}, []string{"source"}),
			unmatched: prometheus.NewGauge(prometheus.GaugeOpts{
				Name: "holdfast_service_ports_unmatched", Help: "Service ports served empty because none of the service's EndpointSlices has a port of their name (holdfastctl services shows which)."}),
		},
	}
	namespaces := opts.Namespaces
	if len(namespaces) == 0 {
		namespaces = []string{corev1.NamespaceAll}
	}
	for _, ns := range namespaces {
		s := newSource(r, ns)
		r.sources = append(r.sources, s)
		r.metrics.stale.WithLabelValues(s.name).Set(0)
	}
	m := r.metrics
	if err := promreg.Register(opts.Registry, "resolver", m.services, m.endpoints, m.publishes, m.stale, m.restarts, m.probeFailures, m.degraded, m.unmatched, m.exportsMissing, rejections.counter, syncAgeCollector{r}); err != nil {
		return nil, err
	}
	return r, nil
}

// Sources reports the health of every source.
func (r *Resolver) Sources() []SourceStatus {
	out := make([]SourceStatus, 0, len(r.sources))
	for _, s := range r.sources {
		out = append(out, s.Status())
	}
	return out
}

// syncAgeCollector computes holdfast_source_last_sync_age_seconds at scrape time.
type syncAgeCollector struct{ r *Resolver }

var syncAgeDesc = prometheus.NewDesc("holdfast_source_last_sync_age_seconds",
	"Seconds since the source's view was last confirmed current (a successful probe or a watch event).", []string{"source"}, nil)

func (c syncAgeCollector) Describe(ch chan<- *prometheus.Desc) { ch <- syncAgeDesc }

func (c syncAgeCollector) Collect(ch chan<- prometheus.Metric) {
	for _, st := range c.r.Sources() {
		last := st.LastSync()
		if last.IsZero() {
			continue
		}
		ch <- prometheus.MustNewConstMetric(syncAgeDesc, prometheus.GaugeValue, time.Since(last).Seconds(), st.Name)
	}
}

// sliceServiceIndex indexes EndpointSlices by "<namespace>/<service>" from their service-name label.
func sliceServiceIndex(o any) ([]string, error) {
	s, ok := o.(*discoveryv1.EndpointSlice)
	if !ok {
		return nil, nil
	}
	name := s.Labels[discoveryv1.LabelServiceName]
	if name == "" {
		return nil, nil
	}
	return []string{s.Namespace + "/" + name}, nil
}

// Handlers never block: they only record which service changed and wake the run loop.
func (r *Resolver) markService(o any) {
	if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o = t.Obj
	}
	switch s := o.(type) {
	case *corev1.Service:
		r.mark(Key{Namespace: s.Namespace, Name: s.Name})
	case *metav1.PartialObjectMetadata: // a ServiceExport: same namespace and name
		r.mark(Key{Namespace: s.Namespace, Name: s.Name})
	}
}

func (r *Resolver) markSlice(o any) {
	if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o = t.Obj
	}
	s, ok := o.(*discoveryv1.EndpointSlice)
	if !ok {
		return
	}
	name := s.Labels[discoveryv1.LabelServiceName]
	if name == "" {
		r.rejections.report([]Rejection{sliceRejection(s, ReasonNoServiceLabel, "no "+discoveryv1.LabelServiceName+" label: belongs to no service")})
		return
	}
	r.mark(Key{Namespace: s.Namespace, Name: name})
}

func (r *Resolver) mark(k Key) {
	now := time.Now()
	r.mu.Lock()
	if _, ok := r.dirty[k]; !ok {
		r.dirty[k] = now
	}
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

func (r *Resolver) resync(s *source) {
	r.mu.Lock()
	r.resyncs[s] = struct{}{}
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// healthChanged asks the run loop to publish, so that what is downstream (the guard) knows
// at once when a source goes stale, re-lists or comes back.
func (r *Resolver) healthChanged() {
	r.mu.Lock()
	r.health = true
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

func (r *Resolver) healthPending() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.health
}

func (r *Resolver) takeWork() (map[Key]time.Time, map[*source]struct{}, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	d, s, h := r.dirty, r.resyncs, r.health
	r.dirty, r.resyncs, r.health = map[Key]time.Time{}, map[*source]struct{}{}, false
	return d, s, h
}

// Run starts the sources and their watchdog, publishes a Resolution once every source has
// listed everything, and then a new one after every burst of changes. It returns when ctx is done.
func (r *Resolver) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for _, s := range r.sources {
		wg.Go(func() { s.run(ctx) })
	}
	wg.Go(func() { r.watchdog(ctx) })

	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.kick:
		}
		// Bursts of events are coalesced; a source's health change is published at once, so
		// that the guard and the service states downstream know without the debounce delay.
		if !r.healthPending() && !r.coalesce(ctx) {
			return nil
		}
		dirty, resyncs, health := r.takeWork()
		if !r.allSyncedOnce() {
			continue // the first full sync of every source rebuilds everything anyway
		}
		changed := !r.published || health
		if !r.published {
			resyncs = map[*source]struct{}{}
			for _, s := range r.sources {
				resyncs[s] = struct{}{}
			}
		}
		for s := range resyncs {
			if r.rebuildSource(s) {
				changed = true
			}
		}
		for k, at := range dirty {
			// Keys of a source that is listing again are covered by its resync.
			if gen := r.sourceFor(k.Namespace).current(); gen != nil && r.rebuild(k, gen, at) {
				changed = true
			}
		}
		if changed {
			if !r.published {
				r.log.Info("initial sync complete", "services", len(r.services))
			}
			r.publish()
		}
	}
}

func (r *Resolver) allSyncedOnce() bool {
	for _, s := range r.sources {
		if !s.Status().SyncedOnce {
			return false
		}
	}
	return true
}

// watchdog probes every source on a fixed interval.
func (r *Resolver) watchdog(ctx context.Context) {
	t := time.NewTicker(r.opts.ProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var wg sync.WaitGroup
		for _, s := range r.sources {
			wg.Go(func() { s.probe(ctx) })
		}
		wg.Wait()
	}
}

// coalesce waits for a burst of events to settle: HoldOff after the latest one, at most
// MaxDelay, and no longer once a source's health changed.
func (r *Resolver) coalesce(ctx context.Context) bool {
	deadline := time.Now().Add(r.opts.MaxDelay)
	t := time.NewTimer(r.opts.HoldOff)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		case <-r.kick:
			wait := min(r.opts.HoldOff, time.Until(deadline))
			if wait <= 0 || r.healthPending() {
				return true
			}
			t.Reset(wait)
		}
	}
}

// rebuildSource reconciles every service of a source with its freshly synced generation:
// services it lists are rebuilt, services it no longer has are removed.
func (r *Resolver) rebuildSource(s *source) bool {
	gen := s.current()
	if gen == nil {
		return false
	}
	svcs, err := gen.services.List(labels.Everything())
	if err != nil {
		r.log.Error("listing services from cache", "source", s.name, "err", err)
		return false
	}
	changed := false
	seen := make(map[Key]struct{}, len(svcs))
	for _, svc := range svcs {
		k := Key{Namespace: svc.Namespace, Name: svc.Name}
		seen[k] = struct{}{}
		if r.rebuild(k, gen, time.Now()) {
			changed = true
		}
	}
	for k := range r.services {
		if _, ok := seen[k]; !ok && r.sourceFor(k.Namespace) == s {
			delete(r.services, k)
			r.setDegraded(k, "")
			changed = true
		}
	}
	return changed
}

// rebuild recomputes one service from a synced generation's caches; at is when the event that
// asked for it arrived, recorded as the new state's ObservedAt. It keeps the old *Service
// when nothing routable changed (a re-list re-delivers every object), keeps the last good state
// when the new input has nothing usable because of bad elements, and reports whether the service
// changed.
func (r *Resolver) rebuild(k Key, gen *generation, at time.Time) bool {
	var next *Service
	var rejections []Rejection
	slices := r.slicesOf(gen, k)
	svc, err := gen.services.Services(k.Namespace).Get(k.Name)
	switch {
	case err == nil:
		next, rejections = buildService(svc, slices, gen.topology())
		if next != nil {
			next.ExportedAt = gen.exportedAt(k)
		}
	case apierrors.IsNotFound(err):
		if r.orphaned(k, len(slices) > 0, at) {
			for _, s := range slices {
				rejections = append(rejections, sliceRejection(s, ReasonServiceNotFound, "service "+k.String()+" does not exist"))
			}
		}
	default:
		r.log.Error("reading service from cache", "service", k, "err", err)
		return false
	}
	if err == nil {
		delete(r.orphans, k)
	}
	r.rejections.report(rejections)
	prev, had := r.services[k]
	if reason := r.unusable(prev, next, rejections); had && reason != "" {
		r.setDegraded(k, reason)
		return false
	}
	r.setDegraded(k, "")
	switch {
	case next == nil && !had:
		return false
	case next == nil:
		delete(r.services, k)
		return true
	}
	if had {
		next.Origin.ObservedAt = prev.Origin.ObservedAt
		if reflect.DeepEqual(prev, next) {
			return false
		}
	}
	next.Origin.ObservedAt = at
	r.services[k] = next
	return true
}

// orphaned says whether slices of k, which has no Service, have waited OrphanGrace for one:
// only then are they reported. A Service created with its slices is usually seen after them
// (separate watches), and reporting its slices then would be noise. Until the grace is over,
// k is looked at again when it ends.
func (r *Resolver) orphaned(k Key, hasSlices bool, now time.Time) bool {
	if !hasSlices {
		delete(r.orphans, k)
		return false
	}
	since, ok := r.orphans[k]
	if !ok {
		since = now
		r.orphans[k] = now
	}
	if wait := r.opts.OrphanGrace - now.Sub(since); wait > 0 {
		time.AfterFunc(wait, func() { r.mark(k) })
		return false
	}
	return true
}

// unusable says why next must not replace prev: it is too big, or bad elements left it with no
// usable endpoint where prev had some. A service scaled to zero by valid input is not unusable.
func (r *Resolver) unusable(prev, next *Service, rejections []Rejection) string {
	if next == nil {
		return ""
	}
	if n := next.EndpointCount(); n > r.opts.MaxEndpointsPerService {
		return fmt.Sprintf("%s: %d endpoints, more than %d", ReasonTooManyEndpoints, n, r.opts.MaxEndpointsPerService)
	}
	// Only bad endpoint input can leave a service without endpoints by mistake.
	var bad []Rejection
	for _, rj := range rejections {
		if rj.Kind == "EndpointSlice" {
			bad = append(bad, rj)
		}
	}
	if len(bad) > 0 && prev != nil && next.usableCount() == 0 && prev.usableCount() > 0 {
		return fmt.Sprintf("%s: %d elements rejected, first: %s (%s)", ReasonNothingUsableInput, len(bad), bad[0].Reason, bad[0].Detail)
	}
	return ""
}

func (r *Resolver) setDegraded(k Key, reason string) {
	prev, was := r.degraded[k]
	switch {
	case reason == "" && was:
		delete(r.degraded, k)
		r.log.Info("service no longer degraded", "decision", "service_restored", "subject", k.String())
	case reason != "" && reason != prev:
		r.degraded[k] = reason
		r.log.Warn("service degraded: keeping its last good state", "decision", "service_degraded", "subject", k.String(), "reason", reason)
	}
	r.metrics.degraded.Set(float64(len(r.degraded)))
}

func (r *Resolver) slicesOf(gen *generation, k Key) []*discoveryv1.EndpointSlice {
	objs, err := gen.slices.GetIndexer().ByIndex(byServiceIndex, k.String())
	if err != nil {
		r.log.Error("reading endpointslices from cache", "service", k, "err", err)
		return nil
	}
	out := make([]*discoveryv1.EndpointSlice, 0, len(objs))
	for _, o := range objs {
		if s, ok := o.(*discoveryv1.EndpointSlice); ok {
			out = append(out, s)
		}
	}
	return out
}

// sourceFor returns the source watching namespace ns. Events only come from watched
// namespaces, so there always is one.
func (r *Resolver) sourceFor(ns string) *source {
	for _, s := range r.sources {
		if s.namespace == corev1.NamespaceAll || s.namespace == ns {
			return s
		}
	}
	return r.sources[0]
}

func (r *Resolver) publish() {
	r.published = true
	endpoints, unmatched := 0, 0
	for _, s := range r.services {
		endpoints += s.EndpointCount()
		for _, p := range s.Ports {
			if p.Unmatched != "" {
				unmatched++
			}
		}
	}
	r.metrics.unmatched.Set(float64(unmatched))
	r.metrics.services.Set(float64(len(r.services)))
	r.metrics.endpoints.Set(float64(endpoints))
	r.metrics.publishes.Inc()
	unhealthy := make(map[string]time.Time, len(r.sources))
	states := make(map[string]SourceState, len(r.sources))
	for _, s := range r.sources {
		st := s.Status()
		unhealthy[s.namespace] = st.LastUnhealthy
		states[s.namespace] = st.State
	}
	r.obs.OnResolution(Resolution{Services: maps.Clone(r.services), Synced: true, UnhealthyAt: unhealthy,
		Sources: states, Degraded: maps.Clone(r.degraded)})
}
