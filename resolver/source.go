package resolver

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	listerscorev1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// SourceState says how far a source's view can be trusted.
type SourceState string

const (
	// Syncing means informers are listing; nothing from them is applied yet.
	Syncing SourceState = "syncing"
	// Live means synced, with the API server answering probes.
	Live SourceState = "live"
	// Stale means probes fail or the watch went silent. The last view stays in place.
	Stale SourceState = "stale"
)

// SourceStatus is a source's health, for /readyz, logs and the admin API.
type SourceStatus struct {
	Name        string      `json:"name"`
	State       SourceState `json:"state"`
	Since       time.Time   `json:"since"`
	Reason      string      `json:"reason,omitempty"`
	LastEvent   time.Time   `json:"last_event"`
	LastProbeOK time.Time   `json:"last_probe_ok"`
	// LastBookmark is the last watch bookmark: the API server's sign of life on an idle watch.
	LastBookmark time.Time `json:"last_bookmark,omitzero"`
	// LastProbeError is the last probe's error, "" when it succeeded.
	LastProbeError string `json:"last_probe_error,omitempty"`
	Restarts       int    `json:"restarts"`
	// LastUnhealthy is when the source last went stale or re-listed after a restart.
	LastUnhealthy time.Time `json:"last_unhealthy,omitzero"`
	// SyncedOnce: this source has completed at least one full list.
	SyncedOnce bool `json:"synced_once"`
}

// LastSync is when the source's view was last known to be current: the later of its last
// successful probe and its last watch event.
func (s SourceStatus) LastSync() time.Time {
	if s.LastEvent.After(s.LastProbeOK) {
		return s.LastEvent
	}
	return s.LastProbeOK
}

// source watches one namespace ("" = all) through successive generations of informers: when
// its watch cannot be trusted any more, the generation is thrown away and a new one lists
// everything again. The resolver's published view is never emptied in between.
type source struct {
	// set at construction, read-only
	namespace string
	name      string
	r         *Resolver
	restart   chan string // capacity 1: a reason to start a new generation

	// guarded by mu
	mu     sync.Mutex
	gen    *generation
	status SourceStatus

	noExports atomic.Bool // the ServiceExport CRD is missing from the cluster (see exportsMissing)
}

// generation is one set of informers. Its listers are read only once it has synced.
type generation struct {
	servicesInf cache.SharedIndexInformer
	services    listerscorev1.ServiceLister
	slices      cache.SharedIndexInformer
	// nodes holds Nodes' metadata (their topology labels), nil when Nodes are not watched.
	nodes cache.SharedIndexInformer
	// exports holds ServiceExports' metadata (MCS API), nil when exports are not watched.
	exports cache.SharedIndexInformer
	synced  atomic.Bool
}

// ServiceExportResource is the MCS API's ServiceExport (KEP-1645), watched as metadata: its
// existence and age are all Holdfast reads of it.
var ServiceExportResource = schema.GroupVersionResource{Group: "multicluster.x-k8s.io", Version: "v1alpha1", Resource: "serviceexports"}

// exportedAt says when k's ServiceExport was created; zero when it has none or exports are not
// watched.
func (g *generation) exportedAt(k Key) time.Time {
	if g.exports == nil {
		return time.Time{}
	}
	o, ok, err := g.exports.GetIndexer().GetByKey(k.Namespace + "/" + k.Name)
	if err != nil || !ok {
		return time.Time{}
	}
	m, ok := o.(*metav1.PartialObjectMetadata)
	if !ok || m.CreationTimestamp.IsZero() {
		return time.Time{}
	}
	return m.CreationTimestamp.Time
}

// topology reads a Node's zone and region labels from the generation's cache; nil when Nodes
// are not watched.
func (g *generation) topology() topology {
	if g.nodes == nil {
		return nil
	}
	return func(name string) (string, string, bool) {
		o, ok, err := g.nodes.GetIndexer().GetByKey(name)
		if err != nil || !ok {
			return "", "", false
		}
		m, ok := o.(*metav1.PartialObjectMetadata)
		if !ok {
			return "", "", false
		}
		return m.Labels[corev1.LabelTopologyZone], m.Labels[corev1.LabelTopologyRegion], true
	}
}

// nodeTopologyChanged says whether a Node event can change an endpoint's zone or region.
func nodeTopologyChanged(old, cur any) bool {
	a, okA := old.(*metav1.PartialObjectMetadata)
	b, okB := cur.(*metav1.PartialObjectMetadata)
	if !okA || !okB {
		return true
	}
	return a.Labels[corev1.LabelTopologyZone] != b.Labels[corev1.LabelTopologyZone] ||
		a.Labels[corev1.LabelTopologyRegion] != b.Labels[corev1.LabelTopologyRegion]
}

func newSource(r *Resolver, namespace string) *source {
	name := namespace
	if name == "" {
		name = "all-namespaces"
	}
	return &source{
		namespace: namespace, name: name, r: r,
		restart: make(chan string, 1),
		status:  SourceStatus{Name: name, State: Syncing, Since: time.Now()},
	}
}

// current returns the generation whose listers may be read, or nil while none has synced.
func (s *source) current() *generation {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gen == nil || !s.gen.synced.Load() {
		return nil
	}
	return s.gen
}

func (s *source) Status() SourceStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

// requestRestart asks run for a new generation; a request already pending is kept.
func (s *source) requestRestart(reason string) {
	select {
	case s.restart <- reason:
	default:
	}
}

// setState records a state change once, with its reason, in logs and metrics.
func (s *source) setState(st SourceState, reason string) {
	s.mu.Lock()
	prev := s.status.State
	if prev == st {
		s.mu.Unlock()
		return
	}
	now := time.Now()
	if st == Stale || (st == Live && s.status.SyncedOnce) {
		s.status.LastUnhealthy = now
	}
	s.status.State, s.status.Since, s.status.Reason = st, now, reason
	synced := s.status.SyncedOnce
	if st == Live {
		s.status.SyncedOnce = true
	}
	s.mu.Unlock()
	stale := 0.0
	if st == Stale {
		stale = 1
	}
	s.r.metrics.stale.WithLabelValues(s.name).Set(stale)
	s.r.healthChanged()
	log := s.r.log.With("subject", s.name, "from", prev, "to", st, "reason", reason)
	switch {
	case st == Stale && !synced:
		log.Warn("source cannot be trusted before it ever synced: nothing from it is served yet (state restored from disk is, if any)", "decision", "source_stale")
	case st == Stale:
		log.Warn("source is stale; serving the last known routes", "decision", "source_stale")
	case prev == Stale:
		log.Info("source recovered", "decision", "source_recovered")
	default:
		log.Info("source state changed", "decision", "source_"+string(st))
	}
}

func (s *source) noteEvent(typ watch.EventType) {
	now := time.Now()
	s.mu.Lock()
	s.status.LastEvent = now
	if typ == watch.Bookmark {
		s.status.LastBookmark = now
	}
	s.mu.Unlock()
}

// exportsMissing records whether the ServiceExport CRD is missing from the source's cluster,
// and reports each change.
func (s *source) exportsMissing(missing bool) {
	if s.noExports.Swap(missing) == missing {
		return
	}
	v := 0.0
	if missing {
		v = 1
		s.r.log.Error("the ServiceExport CRD (multicluster.x-k8s.io/v1alpha1) is not installed: nothing is exported from here; install deploy/mcs/serviceexport-crd.yaml (it is looked for again at every watch timeout)",
			"decision", "exports_unavailable", "subject", s.name)
	} else {
		s.r.log.Info("ServiceExports are watched", "decision", "exports_available", "subject", s.name)
	}
	s.r.metrics.exportsMissing.WithLabelValues(s.name).Set(v)
}

// idleWatch is a watch that delivers nothing and ends after timeoutSeconds (or with ctx): what
// a resource the API server does not serve is watched with, so that its informer lists again
// (and finds it once installed) at the pace of a watch timeout rather than in a loop.
func idleWatch(ctx context.Context, timeoutSeconds *int64) watch.Interface {
	d := 2 * time.Minute
	if timeoutSeconds != nil && *timeoutSeconds > 0 {
		d = time.Duration(*timeoutSeconds) * time.Second
	}
	w := &quietWatch{ch: make(chan watch.Event), stop: make(chan struct{})}
	go func() {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
		case <-t.C:
		case <-w.stop:
		}
		close(w.ch)
	}()
	return w
}

type quietWatch struct {
	ch       chan watch.Event
	stop     chan struct{}
	stopOnce sync.Once
}

func (w *quietWatch) Stop()                          { w.stopOnce.Do(func() { close(w.stop) }) }
func (w *quietWatch) ResultChan() <-chan watch.Event { return w.ch }

// restartRecovered is the restart reason of a source whose API server answers again.
const restartRecovered = "recovered from stale"

// run keeps a generation of informers running until ctx is done, starting a new one with
// backoff and jitter whenever a restart is requested.
func (s *source) run(ctx context.Context) {
	backoff := s.r.opts.RestartBackoff
	for {
		gctx, stop := context.WithCancel(ctx)
		gen := s.startGeneration(gctx)
		started := time.Now()
		go func() {
			synced := []cache.InformerSynced{gen.servicesInf.HasSynced, gen.slices.HasSynced}
			for _, inf := range []cache.SharedIndexInformer{gen.nodes, gen.exports} {
				if inf != nil {
					synced = append(synced, inf.HasSynced)
				}
			}
			if cache.WaitForCacheSync(gctx.Done(), synced...) {
				gen.synced.Store(true)
				s.noteEvent(watch.Added) // a completed list is a sign of life
				s.setState(Live, "synced")
				s.r.resync(s)
			}
		}()
		var reason string
		select {
		case <-ctx.Done():
			stop()
			return
		case reason = <-s.restart:
		}
		stop()
		s.mu.Lock()
		s.status.Restarts++
		s.mu.Unlock()
		s.r.metrics.restarts.WithLabelValues(s.name).Inc()
		if time.Since(started) > 2*s.r.opts.WatchIdleTimeout || reason == restartRecovered {
			// The last generation was healthy for a while, or a probe has just found the API
			// server answering again: re-list soon (with jitter) rather than after a wait that
			// grew through earlier faults — a change made during the fault waits for it.
			backoff = s.r.opts.RestartBackoff
		}
		wait := backoff/2 + rand.N(backoff/2+1) //nolint:gosec // jitter spreads restarts of many replicas; not a secret
		s.r.log.Info("restarting watches", "decision", "source_restart", "subject", s.name, "reason", reason, "after", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		backoff = min(2*backoff, s.r.opts.MaxRestartBackoff)
	}
}

// startGeneration builds and starts informers whose list calls have a deadline, whose watches
// time out and ask for bookmarks, and whose every event (bookmarks included) counts as a sign of
// life for the stall detector.
func (s *source) startGeneration(ctx context.Context) *generation {
	c := s.r.opts.Client
	ns := s.namespace
	svcLW := listWatch(s, c.CoreV1().Services(ns).List, c.CoreV1().Services(ns).Watch)
	sliceLW := listWatch(s, c.DiscoveryV1().EndpointSlices(ns).List, c.DiscoveryV1().EndpointSlices(ns).Watch)
	svcInf := cache.NewSharedIndexInformer(svcLW, &corev1.Service{}, 0, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	sliceInf := cache.NewSharedIndexInformer(sliceLW, &discoveryv1.EndpointSlice{}, 0, cache.Indexers{byServiceIndex: sliceServiceIndex})
	r := s.r
	_, _ = svcInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { r.markService(o) },
		UpdateFunc: func(_, o any) { r.markService(o) },
		DeleteFunc: func(o any) { r.markService(o) },
	})
	_, _ = sliceInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { r.markSlice(o) },
		UpdateFunc: func(old, o any) { r.markSlice(old); r.markSlice(o) },
		DeleteFunc: func(o any) { r.markSlice(o) },
	})
	g := &generation{servicesInf: svcInf, services: listerscorev1.NewServiceLister(svcInf.GetIndexer()), slices: sliceInf}
	if md := s.r.opts.Metadata; md != nil {
		// Metadata only: a Node's labels are all Holdfast reads, and full Nodes (status, images)
		// would cost tens of kilobytes each.
		nodes := md.Resource(corev1.SchemeGroupVersion.WithResource("nodes"))
		nodeLW := listWatch(s,
			func(ctx context.Context, o metav1.ListOptions) (*metav1.PartialObjectMetadataList, error) {
				return nodes.List(ctx, o)
			},
			nodes.Watch)
		g.nodes = cache.NewSharedIndexInformer(nodeLW, &metav1.PartialObjectMetadata{}, 0, cache.Indexers{})
		// A Node's zone or region moves every endpoint on it: rebuild the source's services
		// (unchanged ones keep their state). Rare: labels are set when a Node joins.
		_, _ = g.nodes.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: func(any) { r.resync(s) },
			UpdateFunc: func(old, o any) {
				if nodeTopologyChanged(old, o) {
					r.resync(s)
				}
			},
			DeleteFunc: func(any) { r.resync(s) },
		})
	}
	if md := s.r.opts.Exports; md != nil {
		// A cluster without the ServiceExport CRD exports nothing: its source syncs without
		// exports (reported), and its watch is tried again at every watch timeout: once the
		// CRD is installed, the watch starts with every export (TestResolverExportsCRDInstalledLater).
		exports := md.Resource(ServiceExportResource).Namespace(ns)
		exportLW := listWatch(s,
			func(ctx context.Context, o metav1.ListOptions) (*metav1.PartialObjectMetadataList, error) {
				l, err := exports.List(ctx, o)
				if apierrors.IsNotFound(err) {
					s.exportsMissing(true)
					return &metav1.PartialObjectMetadataList{}, nil
				}
				if err == nil {
					s.exportsMissing(false)
				}
				return l, err
			},
			func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
				w, err := exports.Watch(ctx, o)
				if apierrors.IsNotFound(err) {
					return idleWatch(ctx, o.TimeoutSeconds), nil
				}
				if err == nil {
					s.exportsMissing(false) // installed since the list: the watch starts with every export
				}
				return w, err
			})
		g.exports = cache.NewSharedIndexInformer(exportLW, &metav1.PartialObjectMetadata{}, 0, cache.Indexers{})
		// A ServiceExport names its Service: the service is rebuilt, exported or not.
		_, _ = g.exports.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { r.markService(o) },
			UpdateFunc: func(_, o any) { r.markService(o) },
			DeleteFunc: func(o any) { r.markService(o) },
		})
	}
	s.mu.Lock()
	s.gen = g
	s.mu.Unlock()
	for _, inf := range []cache.SharedIndexInformer{svcInf, sliceInf, g.nodes, g.exports} {
		if inf != nil {
			go inf.RunWithContext(ctx)
		}
	}
	return g
}

// listWatch wraps a typed client's List and Watch with the source's rules: every LIST has a
// deadline, every watch is bounded and observed.
func listWatch[L runtime.Object](s *source,
	list func(context.Context, metav1.ListOptions) (L, error),
	watchFn func(context.Context, metav1.ListOptions) (watch.Interface, error),
) *cache.ListWatch {
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			ctx, cancel := context.WithTimeout(ctx, s.r.opts.ListTimeout)
			defer cancel()
			return list(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			s.watchOptions(&o)
			w, err := watchFn(ctx, o)
			return s.observe(w), err
		},
	}
}

// watchOptions bounds every watch: the server ends it after WatchTimeout (with jitter), and
// sends bookmarks, so that a healthy idle watch still shows signs of life.
func (s *source) watchOptions(o *metav1.ListOptions) {
	t := int64(s.r.opts.WatchTimeout.Seconds())
	t = t/2 + rand.Int64N(t/2+1) //nolint:gosec // jitter, not a secret
	o.TimeoutSeconds = &t
	o.AllowWatchBookmarks = true
}

// observe wraps a watch so that every event it delivers records the time. When the informer
// stops the watch, the forwarding goroutine ends even if an event is waiting to be taken (it
// used to wait forever: one goroutine leaked per restarted watch).
func (s *source) observe(w watch.Interface) watch.Interface {
	if w == nil {
		return nil
	}
	ow := &observedWatch{Interface: w, out: make(chan watch.Event), done: make(chan struct{})}
	go func() {
		defer close(ow.out)
		for ev := range w.ResultChan() {
			s.noteEvent(ev.Type)
			select {
			case ow.out <- ev:
			case <-ow.done:
				return
			}
		}
	}()
	return ow
}

type observedWatch struct {
	watch.Interface
	out  chan watch.Event
	done chan struct{}
	once sync.Once
}

func (w *observedWatch) ResultChan() <-chan watch.Event { return w.out }

// Stop stops the watch and the forwarding of its events.
func (w *observedWatch) Stop() {
	w.once.Do(func() { close(w.done) })
	w.Interface.Stop()
}

// probe checks that the API server can answer a quorum read for this source now: a LIST with
// limit=1 and no resourceVersion is served only with etcd reachable, unlike watches and
// resourceVersion=0 lists, which the API server answers from its cache even with etcd gone.
func (s *source) probe(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, s.r.opts.ProbeTimeout)
	defer cancel()
	_, err := s.r.opts.Client.CoreV1().Services(s.namespace).List(ctx, metav1.ListOptions{Limit: 1})
	if ctx.Err() != nil && err == nil {
		err = ctx.Err()
	}
	st := s.Status()
	if err != nil {
		s.r.metrics.probeFailures.WithLabelValues(s.name).Inc()
		s.mu.Lock()
		s.status.LastProbeError = err.Error()
		s.mu.Unlock()
		if st.State != Stale {
			s.setState(Stale, fmt.Sprintf("probe failed: %v", err))
		}
		return
	}
	now := time.Now()
	s.mu.Lock()
	s.status.LastProbeOK, s.status.LastProbeError = now, ""
	s.mu.Unlock()
	switch {
	case st.State == Stale:
		// Back, but the watches may have missed changes: list everything again.
		s.setState(Syncing, "API server answers again; re-listing")
		s.requestRestart(restartRecovered)
	case st.State == Live && now.Sub(st.LastEvent) > s.r.opts.WatchIdleTimeout:
		s.setState(Stale, fmt.Sprintf("no watch event or bookmark for %v", now.Sub(st.LastEvent).Round(time.Second)))
		s.requestRestart("silent watch")
	}
}
