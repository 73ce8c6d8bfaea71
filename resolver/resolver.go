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
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listerscorev1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
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

// Options configure a Resolver.
type Options struct {
	Client kubernetes.Interface
	// Namespaces to watch; empty watches all namespaces.
	Namespaces []string
	Logger     *slog.Logger
	Registry   prometheus.Registerer
	// HoldOff coalesces bursts of events: a rebuild waits this long after the latest event,
	// but never longer than MaxDelay after the first. Defaults: 10ms and 100ms.
	HoldOff  time.Duration
	MaxDelay time.Duration
}

// Resolver watches Services and EndpointSlices and publishes Resolutions to its Observer.
type Resolver struct {
	// set at construction, read-only
	opts    Options
	log     *slog.Logger
	obs     Observer
	sources []*nsSource
	metrics resolverMetrics

	// guarded by mu: keys whose services must be rebuilt
	mu    sync.Mutex
	dirty map[Key]struct{}
	kick  chan struct{} // capacity 1: "dirty is not empty"

	// owned by the run loop
	services map[Key]*Service
}

// nsSource holds the informers for one namespace ("" = all).
type nsSource struct {
	namespace string
	factory   informers.SharedInformerFactory
	services  listerscorev1.ServiceLister
	slices    cache.SharedIndexInformer
}

const byServiceIndex = "holdfast.io/service"

type resolverMetrics struct {
	services  prometheus.Gauge
	endpoints prometheus.Gauge
	publishes prometheus.Counter
}

// New creates a Resolver. Call Run to start it.
func New(opts Options, obs Observer) (*Resolver, error) {
	if opts.Client == nil {
		return nil, errors.New("resolver: no Kubernetes client")
	}
	if obs == nil {
		return nil, errors.New("resolver: no observer")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	if opts.HoldOff <= 0 {
		opts.HoldOff = 10 * time.Millisecond
	}
	if opts.MaxDelay < opts.HoldOff {
		opts.MaxDelay = max(100*time.Millisecond, opts.HoldOff)
	}
	r := &Resolver{
		opts:     opts,
		log:      opts.Logger.With("component", "resolver"),
		obs:      obs,
		dirty:    map[Key]struct{}{},
		kick:     make(chan struct{}, 1),
		services: map[Key]*Service{},
		metrics: resolverMetrics{
			services: prometheus.NewGauge(prometheus.GaugeOpts{
				Name: "holdfast_resolver_services", Help: "Services with at least one routable port in the resolver's view."}),
			endpoints: prometheus.NewGauge(prometheus.GaugeOpts{
				Name: "holdfast_resolver_endpoints", Help: "Endpoints (address:port per service port, any condition) in the resolver's view."}),
			publishes: prometheus.NewCounter(prometheus.CounterOpts{
				Name: "holdfast_resolver_publishes_total", Help: "Resolutions published by the resolver."}),
		},
	}
	for _, c := range []prometheus.Collector{r.metrics.services, r.metrics.endpoints, r.metrics.publishes} {
		if err := opts.Registry.Register(c); err != nil {
			return nil, fmt.Errorf("resolver: register metrics: %w", err)
		}
	}
	namespaces := opts.Namespaces
	if len(namespaces) == 0 {
		namespaces = []string{corev1.NamespaceAll}
	}
	for _, ns := range namespaces {
		src, err := r.newSource(ns)
		if err != nil {
			return nil, err
		}
		r.sources = append(r.sources, src)
	}
	return r, nil
}

func (r *Resolver) newSource(ns string) (*nsSource, error) {
	f := informers.NewSharedInformerFactoryWithOptions(r.opts.Client, 0, informers.WithNamespace(ns))
	svcInf := f.Core().V1().Services()
	sliceInf := f.Discovery().V1().EndpointSlices().Informer()
	if err := sliceInf.AddIndexers(cache.Indexers{byServiceIndex: sliceServiceIndex}); err != nil {
		return nil, fmt.Errorf("resolver: endpointslice index: %w", err)
	}
	if _, err := svcInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { r.markService(o) },
		UpdateFunc: func(_, o any) { r.markService(o) },
		DeleteFunc: func(o any) { r.markService(o) },
	}); err != nil {
		return nil, fmt.Errorf("resolver: service handler: %w", err)
	}
	if _, err := sliceInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { r.markSlice(o) },
		UpdateFunc: func(old, o any) { r.markSlice(old); r.markSlice(o) },
		DeleteFunc: func(o any) { r.markSlice(o) },
	}); err != nil {
		return nil, fmt.Errorf("resolver: endpointslice handler: %w", err)
	}
	return &nsSource{namespace: ns, factory: f, services: svcInf.Lister(), slices: sliceInf}, nil
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
	if s, ok := o.(*corev1.Service); ok {
		r.mark(Key{Namespace: s.Namespace, Name: s.Name})
	}
}

func (r *Resolver) markSlice(o any) {
	if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o = t.Obj
	}
	if s, ok := o.(*discoveryv1.EndpointSlice); ok {
		if name := s.Labels[discoveryv1.LabelServiceName]; name != "" {
			r.mark(Key{Namespace: s.Namespace, Name: name})
		}
	}
}

func (r *Resolver) mark(k Key) {
	r.mu.Lock()
	r.dirty[k] = struct{}{}
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

func (r *Resolver) takeDirty() map[Key]struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := r.dirty
	r.dirty = map[Key]struct{}{}
	return d
}

// Run starts the informers, publishes a synced Resolution once they have listed everything, and
// then a new Resolution after every burst of changes. It returns when ctx is done.
func (r *Resolver) Run(ctx context.Context) error {
	for _, s := range r.sources {
		s.factory.Start(ctx.Done())
	}
	defer func() {
		for _, s := range r.sources {
			s.factory.Shutdown()
		}
	}()
	for _, s := range r.sources {
		for typ, ok := range s.factory.WaitForCacheSync(ctx.Done()) {
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("resolver: %v in namespace %q did not sync", typ, s.namespace)
			}
		}
	}
	r.takeDirty()
	if err := r.rebuildAll(); err != nil {
		return err
	}
	r.log.Info("initial sync complete", "services", len(r.services))
	r.publish()

	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.kick:
		}
		if !r.coalesce(ctx) {
			return nil
		}
		changed := false
		for k := range r.takeDirty() {
			if r.rebuild(k) {
				changed = true
			}
		}
		if changed {
			r.publish()
		}
	}
}

// coalesce waits for a burst of events to settle: HoldOff after the latest one, at most MaxDelay.
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
			if wait <= 0 {
				return true
			}
			t.Reset(wait)
		}
	}
}

func (r *Resolver) rebuildAll() error {
	for _, s := range r.sources {
		svcs, err := s.services.List(labels.Everything())
		if err != nil {
			return fmt.Errorf("resolver: list services: %w", err)
		}
		for _, svc := range svcs {
			r.rebuild(Key{Namespace: svc.Namespace, Name: svc.Name})
		}
	}
	return nil
}

// rebuild recomputes one service from the informer caches. It keeps the old *Service when
// nothing routable changed (a re-list re-delivers every object), and reports whether it changed.
func (r *Resolver) rebuild(k Key) bool {
	src := r.sourceFor(k.Namespace)
	var next *Service
	if src != nil {
		svc, err := src.services.Services(k.Namespace).Get(k.Name)
		switch {
		case err == nil:
			next = buildService(svc, r.slicesOf(src, k))
		case !apierrors.IsNotFound(err):
			r.log.Error("reading service from cache", "service", k, "err", err)
			return false
		}
	}
	prev, had := r.services[k]
	switch {
	case next == nil && !had:
		return false
	case next == nil:
		delete(r.services, k)
		return true
	case had && reflect.DeepEqual(prev, next):
		return false
	}
	r.services[k] = next
	return true
}

func (r *Resolver) slicesOf(src *nsSource, k Key) []*discoveryv1.EndpointSlice {
	objs, err := src.slices.GetIndexer().ByIndex(byServiceIndex, k.String())
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

func (r *Resolver) sourceFor(ns string) *nsSource {
	for _, s := range r.sources {
		if s.namespace == corev1.NamespaceAll || s.namespace == ns {
			return s
		}
	}
	return nil
}

func (r *Resolver) publish() {
	endpoints := 0
	for _, s := range r.services {
		for _, p := range s.Ports {
			endpoints += len(p.Endpoints)
		}
	}
	r.metrics.services.Set(float64(len(r.services)))
	r.metrics.endpoints.Set(float64(endpoints))
	r.metrics.publishes.Inc()
	r.obs.OnResolution(Resolution{Services: maps.Clone(r.services), Synced: true})
}
