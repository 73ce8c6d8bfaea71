package cache

import (
	"slices"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/holdfast/holdfast/resolver"
)

// Limits bound what the store holds. Zero values take the defaults in brackets.
type Limits struct {
	// MaxServices and MaxEndpoints bound live state. Over a limit new entries are refused; what
	// is already served is never evicted. [20000, 500000]
	MaxServices  int
	MaxEndpoints int
	// TombstoneGrace is how long a deleted service keeps being served as it last was, endpoints
	// included, so that a delete and re-create does not flap clients. [30s]
	TombstoneGrace time.Duration
	// MaxTombstones bounds the tombstones kept; the oldest goes first. [10000]
	MaxTombstones int
}

func (l *Limits) defaults() {
	if l.MaxServices <= 0 {
		l.MaxServices = 20000
	}
	if l.MaxEndpoints <= 0 {
		l.MaxEndpoints = 500000
	}
	if l.TombstoneGrace <= 0 {
		l.TombstoneGrace = 30 * time.Second
	}
	if l.MaxTombstones <= 0 {
		l.MaxTombstones = 10000
	}
}

// capacity enforces Limits. Owned by the store, guarded by its mutex.
type capacity struct {
	limits     Limits
	tombstones *lru.Cache[resolver.Key, tombstone]
	refused    map[resolver.Key]struct{} // refused in the last admission, to log each once
	warned     map[string]bool           // kinds above the warning ratio

	ratio        *prometheus.GaugeVec
	refusedTotal *prometheus.CounterVec
	tombGauge    prometheus.Gauge
}

// tombstone is a deleted service, served as it last was until it expires. When the service is
// created again (a new UID) before that, the tombstone stays until it expires all the same: the
// deleted incarnation is served beside the new one (View.Retired), and lends it endpoints
// (see bridge); from and bridged cache the last service it lent to and what that gave.
type tombstone struct {
	svc     *resolver.Service
	expires time.Time
	from    *resolver.Service
	bridged *resolver.Service
}

// lent says whether the tombstone lends its endpoints to the service created again.
func (t tombstone) lent() bool { return t.bridged != nil && t.bridged != t.from }

// warnRatio is the fill ratio that logs a warning, well before a limit is hit.
const warnRatio = 0.8

func newCapacity(l Limits) (*capacity, error) {
	l.defaults()
	t, err := lru.New[resolver.Key, tombstone](l.MaxTombstones)
	if err != nil {
		return nil, err
	}
	return &capacity{
		limits: l, tombstones: t, refused: map[resolver.Key]struct{}{}, warned: map[string]bool{},
		ratio: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "holdfast_capacity_used_ratio", Help: "Fill of each bounded table: services, endpoints, clients (1 = full; new entries are refused)."}, []string{"kind"}),
		refusedTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "holdfast_capacity_refused_total", Help: "New services refused because a limit was reached, by limit."}, []string{"kind"}),
		tombGauge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "holdfast_tombstones", Help: "Deleted services still served as they last were, for their grace period."}),
	}, nil
}

func (c *capacity) collectors() []prometheus.Collector {
	return []prometheus.Collector{c.ratio, c.refusedTotal, c.tombGauge}
}

// admit returns the services of next that fit the limits. Services served now keep their place
// (a grown one that no longer fits keeps its served version); new ones are admitted in a stable
// order until a limit is reached, and the rest are returned as refused.
func (c *capacity) admit(served, next map[resolver.Key]*resolver.Service) (map[resolver.Key]*resolver.Service, []string) {
	keys := make([]resolver.Key, 0, len(next))
	for k := range next {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b resolver.Key) int {
		_, sa := served[a]
		_, sb := served[b]
		if sa != sb { // served first
			if sa {
				return -1
			}
			return 1
		}
		return a.Compare(b)
	})
	out := make(map[resolver.Key]*resolver.Service, len(next))
	// What is served keeps its room: growth and new services get only what is left.
	endpoints := 0
	for _, k := range keys {
		if prev, ok := served[k]; ok {
			endpoints += prev.EndpointCount()
		}
	}
	refused := map[resolver.Key]struct{}{}
	var newlyRefused []string
	for _, k := range keys {
		s := next[k]
		n := s.EndpointCount()
		if prev, wasServed := served[k]; wasServed {
			if grown := endpoints - prev.EndpointCount() + n; grown <= c.limits.MaxEndpoints {
				endpoints = grown
			} else {
				s = prev // grown past the endpoint limit: keep what is served
			}
			out[k] = s
			continue
		}
		switch {
		case len(out) < c.limits.MaxServices && endpoints+n <= c.limits.MaxEndpoints:
		default:
			refused[k] = struct{}{}
			if _, before := c.refused[k]; !before {
				kind := "services"
				if len(out) < c.limits.MaxServices {
					kind = "endpoints"
				}
				c.refusedTotal.WithLabelValues(kind).Inc()
				newlyRefused = append(newlyRefused, k.String()+" (over --max-"+kind+")")
			}
			continue
		}
		out[k] = s
		endpoints += n
	}
	c.refused = refused
	c.ratio.WithLabelValues("services").Set(float64(len(out)) / float64(c.limits.MaxServices))
	c.ratio.WithLabelValues("endpoints").Set(float64(endpoints) / float64(c.limits.MaxEndpoints))
	return out, newlyRefused
}

// crossed reports the kinds whose fill ratio rose above warnRatio since the last call.
func (c *capacity) crossed(services, endpoints int) []string {
	var out []string
	for kind, r := range map[string]float64{
		"services":  float64(services) / float64(c.limits.MaxServices),
		"endpoints": float64(endpoints) / float64(c.limits.MaxEndpoints),
	} {
		switch {
		case r >= warnRatio && !c.warned[kind]:
			c.warned[kind] = true
			out = append(out, kind)
		case r < warnRatio*0.9:
			c.warned[kind] = false
		}
	}
	slices.Sort(out)
	return out
}

// withTombstones returns what to serve: admitted, plus a tombstone for every service served
// before and gone now — the service exactly as it was last served, endpoints included, for the
// grace period. A service created again within its grace (another UID) is served as itself,
// and its deleted incarnation stays served beside it, in retired, until the grace ends, so
// that a client moving from the old incarnation's names to the new one's never finds either
// missing; ports of the new one without usable endpoints keep the old one's (bridge) until
// they have their own, so that a delete and re-create has no moment with no endpoints. The
// same service back (the same UID) ends its tombstone.
func (c *capacity) withTombstones(served, admitted map[resolver.Key]*resolver.Service, now time.Time) (out, retired map[resolver.Key]*resolver.Service) {
	for k, s := range served {
		if _, ok := admitted[k]; ok {
			continue
		}
		if _, ok := c.tombstones.Peek(k); ok {
			continue
		}
		c.tombstones.Add(k, tombstone{svc: s, expires: now.Add(c.limits.TombstoneGrace)})
	}
	out = admitted
	if c.tombstones.Len() > 0 {
		out = make(map[resolver.Key]*resolver.Service, len(admitted)+c.tombstones.Len())
		for k, s := range admitted {
			out[k] = s
		}
		for _, k := range c.tombstones.Keys() {
			t, ok := c.tombstones.Peek(k)
			if !ok {
				continue
			}
			back, isBack := admitted[k]
			switch {
			case !isBack:
				out[k] = t.svc
				continue
			case back.UID == t.svc.UID:
				c.tombstones.Remove(k) // the same service back
				continue
			case back != t.from:
				t.from, t.bridged = back, bridge(back, t.svc)
				c.tombstones.Add(k, t)
			}
			out[k] = t.bridged
			if retired == nil {
				retired = map[resolver.Key]*resolver.Service{}
			}
			retired[k] = t.svc
		}
	}
	c.tombGauge.Set(float64(c.tombstones.Len()))
	return out, retired
}

// bridge returns s with the endpoints of prev for every port (by number) that has no usable
// endpoint in s and had some in prev (s itself when there is none).
func bridge(s, prev *resolver.Service) *resolver.Service {
	var ports []resolver.Port
	for i, p := range s.Ports {
		if hasUsable(p.Endpoints) {
			continue
		}
		j := slices.IndexFunc(prev.Ports, func(q resolver.Port) bool { return q.Port == p.Port })
		if j < 0 || !hasUsable(prev.Ports[j].Endpoints) {
			continue
		}
		if ports == nil {
			ports = slices.Clone(s.Ports)
		}
		ports[i].Endpoints = prev.Ports[j].Endpoints
	}
	if ports == nil {
		return s
	}
	b := *s
	b.Ports = ports
	return &b
}

func hasUsable(eps []resolver.Endpoint) bool {
	return slices.ContainsFunc(eps, func(e resolver.Endpoint) bool { return e.Health() != resolver.Excluded })
}

// sweep collects expired tombstones and reports whether any went.
func (c *capacity) sweep(now time.Time) bool {
	gone := false
	for _, k := range c.tombstones.Keys() {
		if t, ok := c.tombstones.Peek(k); ok && now.After(t.expires) {
			c.tombstones.Remove(k)
			gone = true
		}
	}
	c.tombGauge.Set(float64(c.tombstones.Len()))
	return gone
}

// CapacityStatus is what the store holds against its limits, for the admin API.
type CapacityStatus struct {
	Services, MaxServices     int
	Endpoints, MaxEndpoints   int
	Tombstones, MaxTombstones int
	// Refused lists the services the last change could not admit, sorted.
	Refused []resolver.Key
}

// Capacity reports how full the store's bounded tables are.
func (s *Store) Capacity() CapacityStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.capacity
	out := CapacityStatus{Services: len(s.live), MaxServices: c.limits.MaxServices, MaxEndpoints: c.limits.MaxEndpoints,
		Tombstones: c.tombstones.Len(), MaxTombstones: c.limits.MaxTombstones}
	for _, svc := range s.live {
		out.Endpoints += svc.EndpointCount()
	}
	for k := range c.refused {
		out.Refused = append(out.Refused, k)
	}
	slices.SortFunc(out.Refused, resolver.Key.Compare)
	return out
}
