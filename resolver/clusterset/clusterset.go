// Package clusterset merges what several clusters' resolvers see into one Resolution, the way
// the Kubernetes Multi-Cluster Services API (KEP-1645) defines a cluster set: the home
// cluster's own services as they are, and one cluster-set service per namespace and name that
// any cluster exports (a ServiceExport), holding every exporting cluster's endpoints, each
// tagged with its cluster. What one cluster's resolver last published stays merged while that
// cluster is stale or unreachable (its resolver keeps its last view); only removing the
// cluster takes its endpoints away, and the cache's guard judges that withdrawal like any other.
package clusterset

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/holdfast/holdfast/internal/promreg"
	"github.com/holdfast/holdfast/resolver"
)

// Options configure a Merger. Zero values take the defaults in brackets.
type Options struct {
	// Home is the ID of the cluster Holdfast runs in: its services keep their cluster-local
	// names, and its sources are the Resolution's Sources.
	Home string
	// SyncTimeout is how long the first merged view waits for a cluster that has not synced,
	// and how long a cluster added later may take before readiness stops waiting for it. [30s]
	SyncTimeout time.Duration
	Logger      *slog.Logger
	Registry    prometheus.Registerer
	// Clock is what the merger reads the time from and waits with [the wall clock]; tests
	// give it a clock they advance.
	Clock Clock
}

// Clock tells the time and makes timers: the two things the merger needs of time.
type Clock interface {
	Now() time.Time
	// TimerAt returns a channel that receives the time once it is deadline (at once if it is
	// already), and a function that stops the timer. A deadline, not a duration: the time
	// that passes between reading the clock and setting the timer cannot move it.
	TimerAt(deadline time.Time) (<-chan time.Time, func() bool)
}

// wallClock is the real time.
type wallClock struct{}

func (wallClock) Now() time.Time { return time.Now() }

func (wallClock) TimerAt(deadline time.Time) (<-chan time.Time, func() bool) {
	t := time.NewTimer(time.Until(deadline))
	return t.C, t.Stop
}

// Merger merges the Resolutions of its clusters' resolvers and hands the result to its
// observer from its own run loop, one call at a time.
type Merger struct {
	// set at construction, read-only
	opts    Options
	log     *slog.Logger
	obs     resolver.Observer
	kick    chan struct{} // capacity 1: "there is work"
	metrics mergerMetrics

	// guarded by mu: what the clusters' resolvers handed in
	mu      sync.Mutex
	members map[string]*member
	seeds   map[string]resolver.Resolution // by cluster: its part of a restored state

	// owned by the run loop
	memo      map[resolver.Key]*merged
	published bool
}

type member struct {
	added time.Time
	res   resolver.Resolution
	has   bool // res is set: the cluster's resolver has synced once
}

// merged is one cluster-set service and the inputs it was merged from: unchanged inputs keep
// the same *Service, so that what is downstream caches its work per pointer.
type merged struct {
	from []Contribution
	svc  *resolver.Service
}

// Contribution is one cluster's exported service, an input of Merge.
type Contribution struct {
	Cluster string
	Service *resolver.Service
}

type mergerMetrics struct {
	services  prometheus.Gauge
	conflicts prometheus.Gauge
	clusters  *prometheus.GaugeVec
	merges    prometheus.Counter
}

// New returns a Merger that hands merged Resolutions to obs. Add the home cluster and the
// others, then call Run.
func New(opts Options, obs resolver.Observer) (*Merger, error) {
	if opts.Home == "" {
		return nil, errors.New("clusterset: no home cluster ID")
	}
	if obs == nil {
		return nil, errors.New("clusterset: no observer")
	}
	if opts.SyncTimeout <= 0 {
		opts.SyncTimeout = 30 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	if opts.Clock == nil {
		opts.Clock = wallClock{}
	}
	m := &Merger{
		opts:    opts,
		log:     opts.Logger.With("component", "clusterset"),
		obs:     obs,
		kick:    make(chan struct{}, 1),
		members: map[string]*member{},
		seeds:   map[string]resolver.Resolution{},
		memo:    map[resolver.Key]*merged{},
		metrics: mergerMetrics{
			services: prometheus.NewGauge(prometheus.GaugeOpts{
				Name: "holdfast_clusterset_services", Help: "Cluster-set services (<svc>.<ns>.svc.Clusterset.local): namespaces and names some cluster exports."}),
			conflicts: prometheus.NewGauge(prometheus.GaugeOpts{
				Name: "holdfast_clusterset_conflicts", Help: "Cluster-set services whose clusters' definitions disagree (the oldest export's wins; holdfastctl service shows where)."}),
			clusters: prometheus.NewGaugeVec(prometheus.GaugeOpts{
				Name: "holdfast_clusterset_clusters", Help: "Clusters merged, by state: synced, or waiting for a first sync."}, []string{"state"}),
			merges: prometheus.NewCounter(prometheus.CounterOpts{
				Name: "holdfast_clusterset_merges_total", Help: "Merged views handed on."}),
		},
	}
	mm := m.metrics
	if err := promreg.Register(opts.Registry, "clusterset", mm.services, mm.conflicts, mm.clusters, mm.merges); err != nil {
		return nil, err
	}
	return m, nil
}

// Add makes id one of the merged clusters and returns the observer its resolver publishes to.
// Adding an ID again (new credentials) hands it to a new resolver: the previous resolver's
// publishes are dropped from then on, and its last view stays merged until the new one
// publishes, so that a cluster does not vanish while it is watched again.
func (m *Merger) Add(id string) resolver.Observer {
	m.mu.Lock()
	mem := &member{added: m.opts.Clock.Now()}
	if prev := m.members[id]; prev != nil {
		mem.res, mem.has = prev.res, prev.has
	}
	m.members[id] = mem
	m.mu.Unlock()
	m.wake()
	return resolver.ObserverFunc(func(r resolver.Resolution) {
		m.mu.Lock()
		if m.members[id] == mem { // a removed (or re-added) cluster's late publish is dropped
			mem.res, mem.has = r, true
			delete(m.seeds, id) // its own view from now on
		}
		m.mu.Unlock()
		m.wake()
	})
}

// Remove takes cluster id out of the merge: its endpoints are withdrawn from the cluster-set
// services (through the cache's guard), and services only it exported go.
func (m *Merger) Remove(id string) {
	m.mu.Lock()
	delete(m.members, id)
	delete(m.seeds, id)
	m.mu.Unlock()
	m.wake()
}

func (m *Merger) wake() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// Seed hands the merger a state restored from disk: until a cluster other than the home one
// syncs, what that state holds of it (its endpoints of cluster-set services) is merged as its
// view, marked stale. A Holdfast restarted while a cluster is unreachable keeps serving that
// cluster's last-known-good endpoints instead of withdrawing them.
func (m *Merger) Seed(services map[resolver.Key]*resolver.Service) {
	seeds := map[string]resolver.Resolution{}
	for k, svc := range services {
		if !k.ClusterSet {
			continue
		}
		byCluster := map[string]*resolver.Service{}
		for _, p := range svc.Ports {
			for _, e := range p.Endpoints {
				if e.Cluster == "" || e.Cluster == m.opts.Home {
					continue
				}
				part := byCluster[e.Cluster]
				if part == nil {
					part = &resolver.Service{Key: resolver.Key{Namespace: k.Namespace, Name: k.Name}, UID: svc.UID, Created: svc.Created,
						Headless: svc.Headless, Locality: svc.Locality, TrafficDistribution: svc.TrafficDistribution, ExportedAt: svc.ExportedAt}
					byCluster[e.Cluster] = part
				}
				if n := len(part.Ports); n == 0 || part.Ports[n-1].Port != p.Port {
					part.Ports = append(part.Ports, resolver.Port{Name: p.Name, Port: p.Port, AppProtocol: p.AppProtocol})
				}
				e.Cluster = ""
				last := &part.Ports[len(part.Ports)-1]
				last.Endpoints = append(last.Endpoints, e)
			}
		}
		for id, part := range byCluster {
			seed, ok := seeds[id]
			if !ok {
				seed = resolver.Resolution{Services: map[resolver.Key]*resolver.Service{}, Synced: true,
					Sources: map[string]resolver.SourceState{"": resolver.Stale}}
				seeds[id] = seed
			}
			seed.Services[part.Key] = part
		}
	}
	m.mu.Lock()
	m.seeds = seeds
	m.mu.Unlock()
	for id, seed := range seeds {
		m.log.Warn("serving another cluster's endpoints restored from disk until it syncs", "decision", "cluster_restored", "subject", id, "services", len(seed.Services))
	}
	m.wake()
}

// ClusterStatus is one merged cluster's state, for /readyz and the admin API.
type ClusterStatus struct {
	ID   string `json:"id"`
	Home bool   `json:"home,omitempty"`
	// Synced: its resolver has published a complete view at least once.
	Synced bool `json:"synced"`
	// Restored: not synced, but served from the state restored from disk.
	Restored bool `json:"restored,omitempty"`
	// Since is when the cluster was added.
	Since time.Time `json:"since"`
	// GaveUp: it has not synced within the sync timeout; the others are served without
	// waiting for it (what it last served, restored from disk, stays until the guard says).
	GaveUp bool `json:"gave_up,omitempty"`
}

// Clusters reports every merged cluster, the home cluster first, then by ID.
func (m *Merger) Clusters() []ClusterStatus {
	now := m.opts.Clock.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]ClusterStatus, 0, len(m.members))
	for id, mem := range m.members {
		_, seeded := m.seeds[id]
		out = append(out, ClusterStatus{ID: id, Home: id == m.opts.Home, Synced: mem.has, Since: mem.added, Restored: !mem.has && seeded,
			GaveUp: !mem.has && !seeded && now.Sub(mem.added) >= m.opts.SyncTimeout})
	}
	slices.SortFunc(out, func(a, b ClusterStatus) int {
		if a.Home != b.Home {
			if a.Home {
				return -1
			}
			return 1
		}
		return cmp.Compare(a.ID, b.ID)
	})
	return out
}

// Run merges and hands on until ctx is done.
func (m *Merger) Run(ctx context.Context) error {
	// The timer is set to the next deadline (a cluster's sync timeout) while one is pending.
	var timer <-chan time.Time
	stop := func() bool { return false }
	defer func() { stop() }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-m.kick:
		case <-timer:
		}
		res, next, ok := m.take(m.opts.Clock.Now())
		stop()
		timer, stop = nil, func() bool { return false }
		if !ok {
			if !next.IsZero() {
				timer, stop = m.opts.Clock.TimerAt(next)
			}
			continue
		}
		if !m.published {
			m.log.Info("first merged view", "clusters", len(res.Remote)+1, "services", len(res.Services))
		}
		m.published = true
		m.metrics.merges.Inc()
		m.obs.OnResolution(res)
	}
}

// take merges the members' latest views, when the home cluster has synced and (before the
// first merge) every other cluster has synced or had SyncTimeout to; wait says when to look
// again if not (zero: when something changes).
func (m *Merger) take(now time.Time) (resolver.Resolution, time.Time, bool) {
	m.mu.Lock()
	home := m.members[m.opts.Home]
	homeSynced := home != nil && home.has
	views := make(map[string]resolver.Resolution, len(m.members))
	var next time.Time // the earliest sync deadline still ahead
	synced, waiting := 0, 0
	for id, mem := range m.members {
		if mem.has {
			views[id] = mem.res
			synced++
			continue
		}
		if seed, ok := m.seeds[id]; ok && id != m.opts.Home {
			views[id] = seed // restored: nothing to wait for
			continue
		}
		waiting++
		if at := mem.added.Add(m.opts.SyncTimeout); at.After(now) && (next.IsZero() || at.Before(next)) {
			next = at
		}
	}
	m.mu.Unlock()
	m.metrics.clusters.WithLabelValues("synced").Set(float64(synced))
	m.metrics.clusters.WithLabelValues("waiting").Set(float64(waiting))
	if !homeSynced {
		return resolver.Resolution{}, time.Time{}, false
	}
	if !m.published && !next.IsZero() {
		return resolver.Resolution{}, next, false
	}
	return m.merge(views), time.Time{}, true
}

// merge builds the merged Resolution from the views of the clusters that have synced.
func (m *Merger) merge(views map[string]resolver.Resolution) resolver.Resolution {
	home := views[m.opts.Home]
	out := resolver.Resolution{
		Services:    make(map[resolver.Key]*resolver.Service, len(home.Services)),
		Synced:      true,
		UnhealthyAt: maps.Clone(home.UnhealthyAt),
		Sources:     maps.Clone(home.Sources),
		Degraded:    maps.Clone(home.Degraded),
		Home:        m.opts.Home,
		Remote:      make(map[string]map[string]resolver.SourceState, len(views)-1),
	}
	if out.UnhealthyAt == nil {
		out.UnhealthyAt = map[string]time.Time{}
	}
	if out.Degraded == nil {
		out.Degraded = map[resolver.Key]string{}
	}
	maps.Copy(out.Services, home.Services)
	exports := make(map[resolver.Key][]Contribution, len(m.memo))
	for id, v := range views {
		if id != m.opts.Home {
			out.Remote[id] = maps.Clone(v.Sources)
			// The guard suspects a withdrawal right after a source was unhealthy; a
			// cluster-set service's endpoints come from every cluster, so any cluster's
			// trouble in the namespace counts.
			for ns, at := range v.UnhealthyAt {
				if at.After(out.UnhealthyAt[ns]) {
					out.UnhealthyAt[ns] = at
				}
			}
		}
		for k, svc := range v.Services {
			if !svc.Exported() {
				continue
			}
			ck := resolver.Key{Namespace: k.Namespace, Name: k.Name, ClusterSet: true}
			exports[ck] = append(exports[ck], Contribution{Cluster: id, Service: svc})
			if reason := v.Degraded[k]; reason != "" {
				out.Degraded[ck] = fmt.Sprintf("cluster %s: %s", id, reason)
			}
		}
	}
	memo := make(map[resolver.Key]*merged, len(exports))
	conflicts := 0
	for k, from := range exports {
		// The oldest export first: it wins conflicts (KEP-1645), then by cluster ID.
		slices.SortFunc(from, func(a, b Contribution) int {
			if c := a.Service.ExportedAt.Compare(b.Service.ExportedAt); c != 0 {
				return c
			}
			return cmp.Compare(a.Cluster, b.Cluster)
		})
		mg := m.memo[k]
		if mg == nil || !slices.Equal(mg.from, from) {
			mg = &merged{from: from, svc: Merge(k, from...)}
			if prev := m.memo[k]; !slices.Equal(prev.conflicts(), mg.svc.Conflicts) && len(mg.svc.Conflicts) > 0 {
				m.log.Warn("clusters export conflicting definitions: the oldest export's apply", "decision", "clusterset_conflict",
					"subject", k.String(), "conflicts", mg.svc.Conflicts)
			}
		}
		memo[k] = mg
		out.Services[k] = mg.svc
		if len(mg.svc.Conflicts) > 0 {
			conflicts++
		}
	}
	m.memo = memo
	m.metrics.services.Set(float64(len(memo)))
	m.metrics.conflicts.Set(float64(conflicts))
	return out
}

func (mg *merged) conflicts() []string {
	if mg == nil {
		return nil
	}
	return mg.svc.Conflicts
}

// Merge builds the cluster-set service k from what each cluster exports under its namespace
// and name, oldest export first. As KEP-1645 says: its ports are the union of the clusters'
// ports (one per port number here, as xDS names them); where clusters disagree about a port's
// name or protocol, about being headless, or about locality settings, the oldest export's
// definition applies and the disagreement is recorded in Conflicts. Every endpoint is tagged
// with its cluster; an address:port two clusters both claim is served once, as the oldest
// export's.
func Merge(k resolver.Key, from ...Contribution) *resolver.Service {
	first := from[0].Service
	out := &resolver.Service{
		Key: k, UID: first.UID, Created: first.Created, Headless: first.Headless, Locality: first.Locality,
		TrafficDistribution: first.TrafficDistribution, ExportedAt: first.ExportedAt,
	}
	var conflicts []string
	ports := map[int32]*resolver.Port{}
	for _, c := range from {
		s := c.Service
		if s.Headless != first.Headless {
			conflicts = append(conflicts, fmt.Sprintf("headless: cluster %s's service is %s, cluster %s's (the oldest export) applies", c.Cluster, headless(s.Headless), from[0].Cluster))
		}
		if s.Locality != first.Locality || s.TrafficDistribution != first.TrafficDistribution {
			conflicts = append(conflicts, fmt.Sprintf("locality: cluster %s asks for %q/%q, cluster %s's %q/%q (the oldest export) applies",
				c.Cluster, s.Locality, s.TrafficDistribution, from[0].Cluster, first.Locality, first.TrafficDistribution))
		}
		if s.Origin.ObservedAt.After(out.Origin.ObservedAt) {
			out.Origin.ObservedAt = s.Origin.ObservedAt
		}
		for _, o := range s.Origin.Slices {
			out.Origin.Slices = append(out.Origin.Slices, resolver.ObjectVersion{Name: c.Cluster + "/" + o.Name, ResourceVersion: o.ResourceVersion})
		}
		for _, p := range s.Ports {
			mp, ok := ports[p.Port]
			if !ok {
				mp = &resolver.Port{Name: p.Name, Port: p.Port, AppProtocol: p.AppProtocol, Endpoints: make([]resolver.Endpoint, 0, len(p.Endpoints)*len(from))}
				ports[p.Port] = mp
			} else if mp.Name != p.Name || mp.AppProtocol != p.AppProtocol {
				conflicts = append(conflicts, fmt.Sprintf("port %d: cluster %s calls it %q (%s), the oldest export's %q (%s) applies",
					p.Port, c.Cluster, p.Name, orNone(p.AppProtocol), mp.Name, orNone(mp.AppProtocol)))
			}
			for _, e := range p.Endpoints {
				e.Cluster = c.Cluster
				mp.Endpoints = append(mp.Endpoints, e)
			}
		}
	}
	for _, n := range slices.Sorted(maps.Keys(ports)) {
		p := ports[n]
		// Stable: of an address:port two clusters claim, the oldest export's comes first and
		// is the one kept.
		slices.SortStableFunc(p.Endpoints, func(a, b resolver.Endpoint) int {
			if c := cmp.Compare(a.Address, b.Address); c != 0 {
				return c
			}
			return cmp.Compare(a.Port, b.Port)
		})
		kept := p.Endpoints[:0]
		for _, e := range p.Endpoints {
			if n := len(kept); n > 0 && kept[n-1].Address == e.Address && kept[n-1].Port == e.Port {
				conflicts = append(conflicts, fmt.Sprintf("port %d: endpoint %s is in clusters %s and %s; %s's is served", p.Port, e.HostPort(), kept[n-1].Cluster, e.Cluster, kept[n-1].Cluster))
				continue
			}
			kept = append(kept, e)
		}
		p.Endpoints = kept
		out.Ports = append(out.Ports, *p)
	}
	slices.SortFunc(out.Origin.Slices, func(a, b resolver.ObjectVersion) int { return cmp.Compare(a.Name, b.Name) })
	slices.Sort(conflicts)
	conflicts = slices.Compact(conflicts)
	if len(conflicts) > maxConflicts { // one per duplicated endpoint could be thousands
		conflicts = append(conflicts[:maxConflicts:maxConflicts], fmt.Sprintf("and %d more", len(conflicts)-maxConflicts))
	}
	out.Conflicts = conflicts
	return out
}

// maxConflicts bounds the conflicts kept per cluster-set service.
const maxConflicts = 10

func headless(h bool) string {
	if h {
		return "headless"
	}
	return "not headless"
}

func orNone(s string) string {
	if s == "" {
		return "no appProtocol"
	}
	return s
}
