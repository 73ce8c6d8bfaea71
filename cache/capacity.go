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
	// TombstoneGrace is how long a deleted service keeps its listener, route and cluster (with
	// no endpoints), so that a delete and re-create does not make clients drop it. [30s]
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

type tombstone struct {
	svc     *resolver.Service
	expires time.Time
}

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
			Name: "holdfast_tombstones", Help: "Deleted services still served without endpoints for their grace period."}),
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

// withTombstones returns admitted plus a tombstone (ports, no endpoints) for every service
// served before and gone now, and drops tombstones of services that are back.
func (c *capacity) withTombstones(served, admitted map[resolver.Key]*resolver.Service, now time.Time) map[resolver.Key]*resolver.Service {
	for k := range admitted {
		c.tombstones.Remove(k)
	}
	for k, s := range served {
		if _, ok := admitted[k]; ok {
			continue
		}
		if _, ok := c.tombstones.Peek(k); ok {
			continue
		}
		empty := &resolver.Service{Key: s.Key, Headless: s.Headless, Ports: make([]resolver.Port, len(s.Ports))}
		for i, p := range s.Ports {
			empty.Ports[i] = resolver.Port{Name: p.Name, Port: p.Port, AppProtocol: p.AppProtocol}
		}
		c.tombstones.Add(k, tombstone{svc: empty, expires: now.Add(c.limits.TombstoneGrace)})
	}
	out := admitted
	if c.tombstones.Len() > 0 {
		out = make(map[resolver.Key]*resolver.Service, len(admitted)+c.tombstones.Len())
		for k, s := range admitted {
			out[k] = s
		}
		for _, k := range c.tombstones.Keys() {
			if t, ok := c.tombstones.Peek(k); ok {
				out[k] = t.svc
			}
		}
	}
	c.tombGauge.Set(float64(c.tombstones.Len()))
	return out
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
