// Package agent is holdfast-agent's logic: one upstream ADS stream per client kind to Holdfast,
// a disk cache of everything it receives, and Holdfast's own xDS server serving that cache to
// the local Envoys and gRPC applications. An application that restarts while Holdfast is
// unreachable gets its routes from the agent's memory, or from its disk after the agent itself
// restarted.
package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/holdfast/holdfast/cache"
	"github.com/holdfast/holdfast/internal/failures"
	"github.com/holdfast/holdfast/internal/promreg"
	"github.com/holdfast/holdfast/xds/resource"
	"github.com/holdfast/holdfast/xds/serve"
	"github.com/holdfast/holdfast/xds/translate"
)

// Downstream is the local xDS server the agent feeds: Holdfast's own.
type Downstream interface {
	SetSnapshots(serve.Snapshots)
	Delivery(kind resource.Kind, typ resourcev3.Type, versions map[string]string, now time.Time, stuckAfter time.Duration) serve.Delivery
	Settled() <-chan struct{}
}

// Options configure an Agent.
type Options struct {
	// Upstream is Holdfast's xDS address; DialOptions carry its transport credentials.
	Upstream    string
	DialOptions []grpc.DialOption
	// NodeID, Zone and Region are the identity presented upstream: the local application's.
	NodeID, Zone, Region string
	// ClusterID is the local application's Kubernetes cluster, presented upstream.
	ClusterID string
	// Kinds are the client kinds whose resources are mirrored (default both).
	Kinds []resource.Kind
	// CacheDir holds the disk cache ("" = memory only).
	CacheDir string
	// MaxResources and MaxCacheBytes bound the cache; upstream responses beyond them are
	// rejected (NACKed) and the previous state kept. [100000, 256 MiB]
	MaxResources  int
	MaxCacheBytes int64
	// MaxCacheAge: a cache whose content upstream last confirmed longer ago than this is still
	// served, and reported loudly. [24h]
	MaxCacheAge time.Duration
	// SettleTimeout bounds how long an upstream response waits for the local clients' verdict
	// (ACK or NACK, forwarded upstream) before it is ACKed. [5s]
	SettleTimeout time.Duration
	// StuckAfter: a local client that has left a response unanswered this long holds nobody
	// up: the upstream response is answered without its verdict. [1s]
	StuckAfter time.Duration
	// WriteEvery is the least time between two cache writes. [500ms]
	WriteEvery time.Duration
	// ConfirmEvery: while upstream keeps confirming an unchanged state, the cache file is
	// rewritten this often, so that its confirmation time stays current. [10m]
	ConfirmEvery time.Duration
	// Backoff bounds the wait between upstream reconnects, of the connection and of the
	// stream (with jitter). [250ms, 15s]
	MinBackoff, MaxBackoff time.Duration
	Downstream             Downstream
	Logger                 *slog.Logger
	Registry               prometheus.Registerer
}

func (o *Options) defaults() {
	if len(o.Kinds) == 0 {
		o.Kinds = []resource.Kind{resource.KindGRPC, resource.KindEnvoy}
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.MaxCacheAge, 24*time.Hour)
	def(&o.SettleTimeout, 5*time.Second)
	def(&o.StuckAfter, time.Second)
	def(&o.WriteEvery, 500*time.Millisecond)
	def(&o.ConfirmEvery, 10*time.Minute)
	def(&o.MinBackoff, 250*time.Millisecond)
	def(&o.MaxBackoff, 15*time.Second)
	if o.MaxResources <= 0 {
		o.MaxResources = 100000
	}
	if o.MaxCacheBytes <= 0 {
		o.MaxCacheBytes = 256 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
}

// typeSet is one client kind's resources, by type, then name. The maps of a type are never
// changed once made: a change makes a new one, so a typeSet is copied by copying its outer map.
type typeSet = map[resourcev3.Type]map[string]*resource.Resource

type resources = map[resource.Kind]typeSet

// Agent mirrors Holdfast for local clients. It serves a client kind only what it holds complete
// and closed under references — the last such view upstream sent, or a cache file that holds
// one — and nothing at all for a kind it has no such view of: a partial view would tell local
// clients that listeners are gone.
type Agent struct {
	// set at construction, read-only
	o       Options
	log     *slog.Logger
	metrics metrics
	kick    chan struct{}      // capacity 1: the served state changed and must be written
	failing *failures.Repeated // paces the reports of cache writes that fail

	// guarded by mu
	mu       sync.Mutex
	kinds    map[resource.Kind]*kindState
	snaps    serve.Snapshots // what local clients are served: complete kinds only
	restored *restoredState  // served state came from disk and upstream has not confirmed it
	dirty    bool            // the served state changed since the cache was written
	written  int             // resources in the last cache file written
	wroteAt  time.Time       // when
}

// kindState is one client kind: what is served, and what the current upstream stream has sent.
// Guarded by Agent.mu, like everything it points to.
type kindState struct {
	served      typeSet   // complete and closed under references; nil: nothing served yet
	confirmedAt time.Time // when upstream (or the cache file) last confirmed served
	staged      typeSet   // served, plus what the current upstream stream sent since it opened
	answered    map[resourcev3.Type]bool
	waiting     time.Time // since when staged differs from served without being complete and closed
	waitReason  string
	up          upstreamState
}

// restoredState says the served state came from the cache file. Guarded by Agent.mu.
type restoredState struct {
	confirmedAt time.Time // when upstream last confirmed the cache's content
	tooOld      bool
}

// upstreamState is one kind's upstream stream as the operator sees it. Guarded by Agent.mu.
type upstreamState struct {
	connected bool
	since     time.Time // when connected turned what it is
	lastErr   string
}

type metrics struct {
	connected, resources, complete  *prometheus.GaugeVec
	reconnects, attempts, forwarded *prometheus.CounterVec
	rejected, notForwarded          *prometheus.CounterVec
	fromCache, ready                prometheus.Gauge
	loadErrors                      *prometheus.CounterVec
	writes, writeErrors             prometheus.Counter
}

// New returns an Agent; LoadCache and Run start it.
func New(o Options) (*Agent, error) {
	o.defaults()
	if o.Downstream == nil {
		return nil, errors.New("agent: no downstream server")
	}
	if o.NodeID == "" {
		return nil, errors.New("agent: a node ID is required")
	}
	a := &Agent{o: o, log: o.Logger.With("component", "agent"), kick: make(chan struct{}, 1), failing: failures.New(time.Second, time.Minute),
		kinds: map[resource.Kind]*kindState{}, snaps: serve.Snapshots{}}
	now := time.Now()
	for _, k := range o.Kinds {
		a.kinds[k] = &kindState{up: upstreamState{since: now}}
	}
	m := metrics{
		connected: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "holdfast_agent_upstream_connected",
			Help: "1 while the upstream stream to Holdfast for this client kind is open."}, []string{"kind"}),
		resources: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "holdfast_agent_resources",
			Help: "Resources served to local clients, by client kind."}, []string{"kind"}),
		complete: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "holdfast_agent_kind_complete",
			Help: "1 while the agent holds a complete view of this client kind to serve (from upstream or its cache); 0 while it serves nothing of it."}, []string{"kind"}),
		reconnects: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "holdfast_agent_upstream_reconnects_total",
			Help: "Upstream streams that had answered and ended, by client kind (each is followed by reconnect attempts)."}, []string{"kind"}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "holdfast_agent_upstream_failed_attempts_total",
			Help: "Attempts to open an upstream stream that got no answer, by client kind."}, []string{"kind"}),
		forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "holdfast_agent_nacks_forwarded_total",
			Help: "Local clients' rejections forwarded upstream as NACKs, by type."}, []string{"type"}),
		notForwarded: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "holdfast_agent_local_rejections_not_forwarded_total",
			Help: "Local clients' rejections of resources whose upstream response was answered before they were served (they waited for a complete view), by type."}, []string{"type"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "holdfast_agent_upstream_rejected_total",
			Help: "Upstream responses the agent itself rejected (invalid, or over its limits), by type."}, []string{"type"}),
		fromCache: prometheus.NewGauge(prometheus.GaugeOpts{Name: "holdfast_agent_serving_from_cache",
			Help: "1 while the agent serves resources restored from disk that upstream has not confirmed yet."}),
		ready: prometheus.NewGauge(prometheus.GaugeOpts{Name: "holdfast_agent_ready",
			Help: "1 while every configured client kind can be served completely (what /readyz says)."}),
		loadErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "holdfast_agent_cache_load_errors_total",
			Help: "Cache files not used at start, by reason."}, []string{"reason"}),
		writes: prometheus.NewCounter(prometheus.CounterOpts{Name: "holdfast_agent_cache_writes_total",
			Help: "Cache files written."}),
		writeErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "holdfast_agent_cache_write_errors_total",
			Help: "Cache writes that failed; the previous file stays."}),
	}
	age := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "holdfast_agent_restored_cache_age_seconds",
		Help: "While the agent serves its restored cache: how long ago upstream last confirmed its content (0 when serving live data)."},
		func() float64 {
			a.mu.Lock()
			defer a.mu.Unlock()
			if a.restored == nil {
				return 0
			}
			return time.Since(a.restored.confirmedAt).Seconds()
		})
	if err := promreg.Register(o.Registry, "agent", m.connected, m.resources, m.complete, m.reconnects, m.attempts, m.forwarded, m.notForwarded,
		m.rejected, m.fromCache, m.ready, m.loadErrors, m.writes, m.writeErrors, age); err != nil {
		return nil, err
	}
	for _, k := range o.Kinds {
		m.complete.WithLabelValues(string(k)).Set(0)
	}
	a.metrics = m
	return a, nil
}

func (a *Agent) cachePath() string { return filepath.Join(a.o.CacheDir, cacheFileName) }

// LoadCache serves the disk cache at once, if there is a usable one: a file that holds, for
// every configured client kind, every type, closed under references. A missing file is normal;
// any other is reported, counted and ignored whole, and the agent waits for upstream.
func (a *Agent) LoadCache() error {
	if a.o.CacheDir == "" {
		return nil
	}
	res, confirmedAt, err := readCacheFile(a.cachePath(), a.o.MaxCacheBytes)
	if err == nil {
		err = complete(res, a.o.Kinds)
	}
	var le *cache.LoadError
	switch {
	case errors.As(err, &le) && le.Reason == "missing":
		a.log.Info("no cache file: waiting for upstream", "path", a.cachePath())
		return nil
	case err != nil:
		reason := "unreadable"
		if errors.As(err, &le) {
			reason = le.Reason
		}
		a.metrics.loadErrors.WithLabelValues(reason).Inc()
		a.log.Error("cache file ignored: waiting for upstream", "decision", "agent_cache_ignored", "subject", a.cachePath(), "reason", reason, "err", err)
		return err
	}
	age := time.Since(confirmedAt)
	a.mu.Lock()
	for _, k := range a.o.Kinds {
		ks := a.kinds[k]
		ks.served, ks.confirmedAt = res[k], confirmedAt
		a.publishLocked(k, resource.Served)
	}
	a.restored = &restoredState{confirmedAt: confirmedAt, tooOld: age > a.o.MaxCacheAge}
	a.readyLocked()
	n := a.countLocked()
	a.mu.Unlock()
	a.metrics.fromCache.Set(1)
	if age > a.o.MaxCacheAge {
		a.log.Error("serving a cache upstream last confirmed longer ago than --max-cache-age: its routes may be long gone; serving it anyway until upstream answers",
			"decision", "agent_cache_old", "subject", a.cachePath(), "age", age.Round(time.Second), "max_age", a.o.MaxCacheAge, "resources", n)
	} else {
		a.log.Warn("serving the cache from disk until upstream answers", "decision", "agent_cache_restored", "subject", a.cachePath(),
			"age", age.Round(time.Second), "resources", n)
	}
	return nil
}

// complete checks that res holds, for every kind, every type, closed under references.
func complete(res resources, kinds []resource.Kind) error {
	for _, k := range kinds {
		types, ok := res[k]
		if !ok {
			return &cache.LoadError{Reason: "incomplete", Err: fmt.Errorf("no %s resources", k)}
		}
		for _, typ := range resource.Served {
			if _, ok := types[typ]; !ok {
				return &cache.LoadError{Reason: "incomplete", Err: fmt.Errorf("%s: no %s", k, typ)}
			}
		}
		if err := translate.Closed(types); err != nil {
			return &cache.LoadError{Reason: "incomplete", Err: fmt.Errorf("%s: %w", k, err)}
		}
	}
	return nil
}

func (a *Agent) countLocked() int {
	n := 0
	for _, ks := range a.kinds {
		n += count(ks.served)
	}
	return n
}

func count(ts typeSet) int {
	n := 0
	for _, rs := range ts {
		n += len(rs)
	}
	return n
}

// publishLocked hands the downstream server a new set of snapshots in which the given types
// of kind are its served ones; the other types keep their indexes.
func (a *Agent) publishLocked(kind resource.Kind, types []resourcev3.Type) {
	snaps := maps.Clone(a.snaps)
	ks := a.kinds[kind]
	for _, typ := range types {
		rs := ks.served[typ]
		l := make([]*resource.Resource, 0, len(rs))
		for _, r := range rs {
			l = append(l, r)
		}
		snaps[kind] = snaps[kind].WithType(typ, l)
	}
	a.metrics.resources.WithLabelValues(string(kind)).Set(float64(count(ks.served)))
	a.metrics.complete.WithLabelValues(string(kind)).Set(1)
	a.snaps = snaps
	a.o.Downstream.SetSnapshots(snaps)
}

func bytesOf(rs map[string]*resource.Resource) int64 {
	var n int64
	for _, r := range rs {
		n += int64(len(r.Any.GetValue()))
	}
	return n
}

// Run keeps one upstream stream per kind and writes the cache until ctx is done; the last
// state is written before it returns. The upstream connection reconnects with the agent's own
// backoff (MinBackoff to MaxBackoff, ×1.6, ±20 %), not gRPC's default, which grows to 2
// minutes: after an outage, the agent is back within MaxBackoff of Holdfast's return.
func (a *Agent) Run(ctx context.Context) error {
	opts := append(slices.Clone(a.o.DialOptions), grpc.WithConnectParams(grpc.ConnectParams{
		Backoff:           backoff.Config{BaseDelay: a.o.MinBackoff, Multiplier: 1.6, Jitter: 0.2, MaxDelay: a.o.MaxBackoff},
		MinConnectTimeout: 5 * time.Second,
	}))
	conn, err := grpc.NewClient(a.o.Upstream, opts...)
	if err != nil {
		return fmt.Errorf("agent: upstream %q: %w", a.o.Upstream, err)
	}
	defer conn.Close()
	var wg sync.WaitGroup
	for _, kind := range a.o.Kinds {
		wg.Go(func() { a.upstreamLoop(ctx, discoveryv3.NewAggregatedDiscoveryServiceClient(conn), kind) })
	}
	wg.Go(func() { a.writer(ctx) })
	wg.Wait()
	return nil
}

func (a *Agent) upstreamLoop(ctx context.Context, ads discoveryv3.AggregatedDiscoveryServiceClient, kind resource.Kind) {
	wait := a.o.MinBackoff
	for ctx.Err() == nil {
		started := time.Now()
		err := a.stream(ctx, ads, kind)
		a.mu.Lock()
		u := &a.kinds[kind].up
		wasConnected := u.connected
		if wasConnected {
			u.connected, u.since = false, time.Now()
		}
		if err != nil {
			u.lastErr = err.Error()
		}
		a.kinds[kind].staged, a.kinds[kind].answered = nil, nil
		a.readyLocked()
		a.mu.Unlock()
		a.metrics.connected.WithLabelValues(string(kind)).Set(0)
		if ctx.Err() != nil {
			return
		}
		if wasConnected {
			a.metrics.reconnects.WithLabelValues(string(kind)).Inc()
			a.log.Warn("upstream stream ended: serving what the agent holds, reconnecting", "decision", "agent_upstream_lost", "subject", string(kind), "err", err)
		} else {
			a.metrics.attempts.WithLabelValues(string(kind)).Inc()
		}
		if time.Since(started) > a.o.MaxBackoff {
			wait = a.o.MinBackoff // it ran well for a while: start over
		}
		jittered := wait/2 + rand.N(wait/2+1) //nolint:gosec // jitter, not a secret
		select {
		case <-ctx.Done():
			return
		case <-time.After(jittered):
		}
		// The connection paces reconnects to Holdfast (MinBackoff to MaxBackoff); a stream
		// opened while it is down fails at once, without a packet sent. So this loop waits at
		// most a second between attempts: it notices a reconnect at once, rather than adding its
		// own backoff to the connection's.
		wait = min(2*wait, a.o.MaxBackoff, time.Second)
	}
}

func (a *Agent) node(kind resource.Kind) *corev3.Node {
	id := a.o.NodeID
	if len(a.o.Kinds) > 1 {
		id += "/" + string(kind)
	}
	n := &corev3.Node{Id: id, UserAgentName: "holdfast-agent", Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{
		resource.ClientMetadataKey: structpb.NewStringValue(string(kind)),
		"holdfast.io/agent":        structpb.NewStringValue("true"),
	}}}
	if a.o.Zone != "" || a.o.Region != "" {
		n.Locality = &corev3.Locality{Zone: a.o.Zone, Region: a.o.Region}
	}
	if a.o.ClusterID != "" {
		n.Metadata.Fields[resource.ClusterMetadataKey] = structpb.NewStringValue(a.o.ClusterID)
	}
	return n
}

// stream runs one upstream Delta stream: subscribe to every type by wildcard, saying what the
// agent serves so that nothing it has is sent again and what is gone is removed explicitly;
// then take each response into the kind's staged view, serve the staged view once it is
// complete and closed, and answer each response.
func (a *Agent) stream(ctx context.Context, ads discoveryv3.AggregatedDiscoveryServiceClient, kind resource.Kind) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := ads.DeltaAggregatedResources(ctx)
	if err != nil {
		return err
	}
	a.mu.Lock()
	ks := a.kinds[kind]
	ks.staged, ks.answered = maps.Clone(ks.served), map[resourcev3.Type]bool{}
	if ks.staged == nil {
		ks.staged = typeSet{}
	}
	initial := make(map[resourcev3.Type]map[string]string, len(resource.Served))
	for _, typ := range resource.Served {
		initial[typ] = make(map[string]string, len(ks.staged[typ]))
		for n, r := range ks.staged[typ] {
			initial[typ][n] = r.Version
		}
	}
	a.mu.Unlock()
	for i, typ := range resource.Served {
		req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: typ, ResourceNamesSubscribe: []string{"*"}, InitialResourceVersions: initial[typ]}
		if i == 0 {
			req.Node = a.node(kind)
		}
		if err := st.Send(req); err != nil {
			return err
		}
	}
	for {
		resp, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return errors.New("upstream closed the stream")
		}
		if err != nil {
			return err
		}
		a.mu.Lock()
		if u := &a.kinds[kind].up; !u.connected {
			u.connected, u.since, u.lastErr = true, time.Now(), ""
			a.log.Info("upstream connected", "kind", kind, "upstream", a.o.Upstream)
		}
		a.mu.Unlock()
		a.metrics.connected.WithLabelValues(string(kind)).Set(1)
		ack := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()}
		if detail := a.apply(ctx, kind, resp); detail != "" {
			ack.ErrorDetail = &status.Status{Code: int32(codes.InvalidArgument), Message: detail}
		}
		if err := st.Send(ack); err != nil {
			return err
		}
	}
}

// apply takes one upstream response into the kind's staged view. Once every type has answered
// on this stream and the staged view is closed under references, it becomes what local
// clients are served, whole; until then they keep what they have, so a removal reaches them
// only from a complete view. It returns the NACK detail, "" to ACK: a response that served
// something waits for the local clients' verdict on its resources.
func (a *Agent) apply(ctx context.Context, kind resource.Kind, resp *discoveryv3.DeltaDiscoveryResponse) string {
	typ := resp.GetTypeUrl()
	if !slices.Contains(resource.Served, typ) {
		return "holdfast-agent: type " + typ + " is not served"
	}
	in := make([]*resource.Resource, 0, len(resp.GetResources()))
	for _, r := range resp.GetResources() {
		res, err := resource.FromWire(typ, r.GetName(), r.GetVersion(), r.GetResource().GetValue())
		if err != nil {
			a.metrics.rejected.WithLabelValues(typ).Inc()
			a.log.Warn("upstream response rejected: keeping the previous state", "decision", "agent_rejected", "subject", r.GetName(), "type", typ, "err", err)
			return "holdfast-agent: " + err.Error()
		}
		in = append(in, res)
	}
	now := time.Now()
	a.mu.Lock()
	ks := a.kinds[kind]
	cur := ks.staged[typ]
	next := make(map[string]*resource.Resource, len(cur)+len(in))
	maps.Copy(next, cur)
	for _, n := range resp.GetRemovedResources() {
		delete(next, n)
	}
	for _, r := range in {
		next[r.Name] = r
	}
	if total, size := a.sizeLocked(kind, typ, next); total > a.o.MaxResources || size > a.o.MaxCacheBytes {
		a.mu.Unlock()
		a.metrics.rejected.WithLabelValues(typ).Inc()
		a.log.Error("upstream response over the cache limits: keeping the previous state", "decision", "agent_over_limit", "subject", string(kind),
			"type", typ, "resources", total, "max_resources", a.o.MaxResources, "bytes", size, "max_bytes", a.o.MaxCacheBytes)
		return fmt.Sprintf("holdfast-agent: cache limits exceeded (%d resources of %d, %d bytes of %d)", total, a.o.MaxResources, size, a.o.MaxCacheBytes)
	}
	ks.staged[typ] = next
	ks.answered[typ] = true
	served := a.promoteLocked(kind, now)
	a.mu.Unlock()
	if len(served) == 0 {
		return "" // nothing reached local clients: nothing to wait for
	}
	select {
	case a.kick <- struct{}{}:
	default:
	}
	var own []*resource.Resource // this response's resources among what was served
	for _, r := range in {
		if served[typ][r.Name] == r {
			own = append(own, r)
		}
	}
	return a.verdict(ctx, kind, typ, own, served)
}

// sizeLocked is what the agent would hold, in resources and bytes, with next as kind's staged
// resources of typ: the bound applies to every kind's larger of served and staged.
func (a *Agent) sizeLocked(kind resource.Kind, typ resourcev3.Type, next map[string]*resource.Resource) (total int, size int64) {
	for k, ks := range a.kinds {
		for _, t := range resource.Served {
			staged := ks.staged[t]
			if k == kind && t == typ {
				staged = next
			}
			rs := ks.served[t]
			if len(staged) > len(rs) {
				rs = staged
			}
			total += len(rs)
			size += bytesOf(rs)
		}
	}
	return total, size
}

// promoteLocked serves kind's staged view if it is complete (every type answered on this
// stream) and closed under references, and returns, by type, the resources that reached local
// clients with it (nil: nothing changed for them).
func (a *Agent) promoteLocked(kind resource.Kind, now time.Time) map[resourcev3.Type]map[string]*resource.Resource {
	ks := a.kinds[kind]
	for _, typ := range resource.Served {
		if !ks.answered[typ] {
			ks.wait(now, "upstream has not answered "+typ+" yet on this stream")
			return nil
		}
	}
	var changed []resourcev3.Type
	for _, typ := range resource.Served {
		if ks.served == nil || !sameMap(ks.staged[typ], ks.served[typ]) {
			changed = append(changed, typ)
		}
	}
	ks.confirmedAt = now
	if len(changed) == 0 {
		ks.waiting, ks.waitReason = time.Time{}, ""
		a.confirmLocked(now)
		return nil
	}
	if err := translate.Closed(ks.staged); err != nil {
		ks.wait(now, "what upstream sent is not closed under references yet: "+err.Error())
		return nil
	}
	first := ks.served == nil
	ks.served = maps.Clone(ks.staged)
	ks.waiting, ks.waitReason = time.Time{}, ""
	a.publishLocked(kind, changed)
	a.dirty = true
	a.confirmLocked(now)
	a.readyLocked()
	if first {
		a.log.Info("serving a complete view from upstream", "decision", "agent_kind_complete", "subject", string(kind), "resources", count(ks.served))
	}
	out := make(map[resourcev3.Type]map[string]*resource.Resource, len(changed))
	for _, typ := range changed {
		out[typ] = ks.served[typ]
	}
	return out
}

// wait records that kind's staged view cannot be served yet, and why.
func (ks *kindState) wait(now time.Time, why string) {
	if ks.waiting.IsZero() {
		ks.waiting = now
	}
	ks.waitReason = why
}

func sameMap(x, y map[string]*resource.Resource) bool {
	if len(x) != len(y) {
		return false
	}
	for n, r := range x {
		if y[n] != r {
			return false
		}
	}
	return true
}

// confirmLocked ends serving from the restored cache once upstream has confirmed, or replaced,
// what every kind serves.
func (a *Agent) confirmLocked(now time.Time) {
	if a.restored == nil {
		return
	}
	for _, ks := range a.kinds {
		if ks.staged == nil || len(ks.answered) < len(resource.Served) || !ks.waiting.IsZero() {
			return
		}
	}
	a.log.Info("upstream confirmed the full state: serving live data", "decision", "agent_live", "subject", a.o.Upstream,
		"restored_age", now.Sub(a.restored.confirmedAt).Round(time.Second))
	a.restored = nil
	a.metrics.fromCache.Set(0)
	a.dirty = true // the file's confirmation time moves on
}

// verdict waits, at most SettleTimeout, until every local client of kind that wants one of own
// (this response's resources that were just served) has it or has rejected it, and returns
// the first rejection's detail ("" if none). A client that has left a response unanswered for
// StuckAfter holds nobody up. Local rejections of the other types served with them cannot be
// forwarded (their upstream responses were answered while the view was incomplete): they are
// counted and logged.
func (a *Agent) verdict(ctx context.Context, kind resource.Kind, typ resourcev3.Type, own []*resource.Resource, served map[resourcev3.Type]map[string]*resource.Resource) string {
	versions := func(rs []*resource.Resource) map[string]string {
		out := make(map[string]string, len(rs))
		for _, r := range rs {
			out[r.Name] = r.Version
		}
		return out
	}
	deadline := time.Now().Add(a.o.SettleTimeout)
	detail := ""
	if len(own) > 0 {
		detail = a.await(ctx, kind, typ, versions(own), deadline)
	}
	if detail != "" {
		a.metrics.forwarded.WithLabelValues(typ).Inc()
		a.log.Warn("forwarding a local client's rejection upstream", "decision", "agent_nack_forwarded", "subject", string(kind), "type", typ, "detail", detail)
	}
	for other, rs := range served {
		if other == typ {
			continue
		}
		l := make([]*resource.Resource, 0, len(rs))
		for _, r := range rs {
			l = append(l, r)
		}
		if d := a.o.Downstream.Delivery(kind, other, versions(l), time.Now(), a.o.StuckAfter); d.Rejection != "" {
			a.metrics.notForwarded.WithLabelValues(other).Inc()
			a.log.Warn("a local client rejected a resource whose upstream response was already answered: not forwarded", "decision", "agent_nack_not_forwarded",
				"subject", string(kind), "type", other, "detail", d.Rejection)
		}
	}
	return detail
}

// await waits for the local clients' verdict on versions of typ: told by the local server each
// time a client answers, never polling.
func (a *Agent) await(ctx context.Context, kind resource.Kind, typ resourcev3.Type, versions map[string]string, deadline time.Time) string {
	for {
		settled := a.o.Downstream.Settled()
		now := time.Now()
		d := a.o.Downstream.Delivery(kind, typ, versions, now, a.o.StuckAfter)
		if d.Rejection != "" || d.Pending == 0 || !now.Before(deadline) {
			return d.Rejection
		}
		wake := deadline
		if !d.FreshUntil.IsZero() && d.FreshUntil.Before(wake) {
			wake = d.FreshUntil
		}
		t := time.NewTimer(wake.Sub(now))
		select {
		case <-settled:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ""
		}
		t.Stop()
	}
}

// writer writes the cache at most every WriteEvery while it changes, once every ConfirmEvery
// while upstream confirms an unchanged state (so that the file's confirmation time says how
// fresh it is), and once more at the end.
func (a *Agent) writer(ctx context.Context) {
	if a.o.CacheDir == "" {
		return
	}
	confirm := time.NewTicker(a.o.ConfirmEvery)
	defer confirm.Stop()
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			a.write()
			return
		case <-a.kick:
		case <-confirm.C:
			a.mu.Lock()
			a.dirty = true
			a.mu.Unlock()
		}
		if wait := a.o.WriteEvery - time.Since(last); wait > 0 {
			select {
			case <-ctx.Done():
				a.write()
				return
			case <-time.After(wait):
			}
		}
		a.write()
		last = time.Now()
	}
}

// write writes what the agent serves, if every configured kind has a complete view: a cache
// file is complete or not written.
func (a *Agent) write() {
	a.mu.Lock()
	if !a.dirty {
		a.mu.Unlock()
		return
	}
	snap := make(resources, len(a.kinds))
	var confirmedAt time.Time
	for k, ks := range a.kinds {
		if ks.served == nil {
			a.mu.Unlock()
			return // not every kind complete yet: nothing is written
		}
		snap[k] = ks.served // never changed once served: safe to read unlocked
		if confirmedAt.IsZero() || ks.confirmedAt.Before(confirmedAt) {
			confirmedAt = ks.confirmedAt
		}
	}
	a.dirty = false
	n := a.countLocked()
	a.mu.Unlock()
	data, err := encodeCache(snap, time.Now(), confirmedAt)
	if err == nil {
		err = cache.WriteFileAtomic(a.cachePath(), data)
	}
	if err != nil {
		a.metrics.writeErrors.Inc()
		if rep := a.failing.Fail(time.Now()); rep.Log {
			a.log.Error("cache not written; the previous file stays", "decision", "agent_cache_write_failed", "subject", a.cachePath(), "err", err,
				"failures", rep.Count, "over", rep.Over.Round(time.Second), "failing_since", rep.Since)
		}
		a.mu.Lock()
		a.dirty = true
		a.mu.Unlock()
		return
	}
	a.metrics.writes.Inc()
	if failed, since := a.failing.Succeed(); failed > 0 {
		a.log.Info("cache written again", "decision", "agent_cache_write_recovered", "subject", a.cachePath(), "after_failures", failed, "failed_for", time.Since(since).Round(time.Second))
	}
	a.mu.Lock()
	a.written, a.wroteAt = n, time.Now()
	a.mu.Unlock()
}

// Status is what /readyz reports.
type Status struct {
	// Ready: every configured client kind can be served completely, from upstream or from the
	// cache; NotReady says why not, per kind.
	Ready    bool                      `json:"ready"`
	NotReady []string                  `json:"not_ready,omitempty"`
	Upstream map[string]UpstreamStatus `json:"upstream"`
	Cache    CacheStatus               `json:"cache"`
	Counts   map[resource.Kind]int     `json:"resources"`
}

// UpstreamStatus is one kind's upstream stream.
type UpstreamStatus struct {
	Connected bool      `json:"connected"`
	Since     time.Time `json:"since,omitzero"` // when it connected, or disconnected
	Synced    bool      `json:"synced"`         // every type answered on this stream
	// Complete: the agent serves a complete view of this kind.
	Complete bool `json:"complete"`
	// Waiting says why what upstream sent is not served yet, and since when.
	Waiting      string    `json:"waiting,omitempty"`
	WaitingSince time.Time `json:"waiting_since,omitzero"`
	LastError    string    `json:"last_error,omitempty"`
}

// CacheStatus says whether restored data is served, how long ago upstream confirmed it, and
// what was last written to disk.
type CacheStatus struct {
	ServingRestored  bool      `json:"serving_restored"`
	LastWrite        time.Time `json:"last_write,omitzero"`
	WrittenResources int       `json:"written_resources"`
	ConfirmedAt      time.Time `json:"confirmed_at,omitzero"`
	AgeSeconds       float64   `json:"age_seconds,omitempty"`
	TooOld           bool      `json:"too_old,omitempty"`
}

// notReadyLocked says, per configured kind, why it cannot be served completely ("" for none).
func (a *Agent) notReadyLocked() []string {
	var out []string
	for _, k := range a.o.Kinds {
		ks := a.kinds[k]
		if ks.served != nil {
			continue
		}
		why := fmt.Sprintf("%s: no complete view yet (no usable cache, and upstream ", k)
		switch {
		case !ks.up.connected && ks.up.lastErr != "":
			why += "unreachable: " + ks.up.lastErr + ")"
		case !ks.up.connected:
			why += "not connected yet)"
		default:
			why += "connected: " + ks.waitReason + ")"
		}
		out = append(out, why)
	}
	return out
}

// readyLocked sets the ready gauge to what Status says.
func (a *Agent) readyLocked() {
	if len(a.notReadyLocked()) == 0 {
		a.metrics.ready.Set(1)
	} else {
		a.metrics.ready.Set(0)
	}
}

// Status reports the agent's state.
func (a *Agent) Status() Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := Status{Upstream: map[string]UpstreamStatus{}, Counts: map[resource.Kind]int{}}
	for k, ks := range a.kinds {
		s.Upstream[string(k)] = UpstreamStatus{Connected: ks.up.connected, Since: ks.up.since, Synced: len(ks.answered) == len(resource.Served),
			Complete: ks.served != nil, Waiting: ks.waitReason, WaitingSince: ks.waiting, LastError: ks.up.lastErr}
		s.Counts[k] = count(ks.served)
	}
	s.NotReady = a.notReadyLocked()
	s.Ready = len(s.NotReady) == 0
	s.Cache = CacheStatus{LastWrite: a.wroteAt, WrittenResources: a.written}
	if r := a.restored; r != nil {
		s.Cache.ServingRestored, s.Cache.ConfirmedAt, s.Cache.AgeSeconds, s.Cache.TooOld = true, r.confirmedAt, time.Since(r.confirmedAt).Seconds(), r.tooOld
	}
	return s
}
