package cache

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/holdfast/holdfast/resolver"
)

// GuardOptions configure the mass-withdrawal guard. Zero values take the defaults in brackets.
type GuardOptions struct {
	// Disabled turns the guard off: every change is applied at once.
	Disabled bool
	// MaxWithdrawFraction: a change withdrawing more than this fraction of the fleet's usable
	// endpoints (relative to the state at the start of the window) is held. [0.5]
	MaxWithdrawFraction float64
	// MinFleetEndpoints and MinWithdrawnEndpoints: below either, the fraction rule does not
	// apply; small fleets and small changes always go through. [100, 20]
	MinFleetEndpoints     int
	MinWithdrawnEndpoints int
	// Window is how far back the fraction is measured from. [1m]
	Window time.Duration
	// MinServiceEndpoints: a service with at least this many usable endpoints dropping to zero
	// while its source was unhealthy within RecentUnhealthy is held. [10, 5m]
	MinServiceEndpoints int
	RecentUnhealthy     time.Duration
	// HoldPeriod: a held change that stays true this long with healthy sources is applied. [2m]
	HoldPeriod time.Duration
}

func (o *GuardOptions) defaults() {
	if o.MaxWithdrawFraction <= 0 {
		o.MaxWithdrawFraction = 0.5
	}
	if o.MinFleetEndpoints <= 0 {
		o.MinFleetEndpoints = 100
	}
	if o.MinWithdrawnEndpoints <= 0 {
		o.MinWithdrawnEndpoints = 20
	}
	if o.Window <= 0 {
		o.Window = time.Minute
	}
	if o.MinServiceEndpoints <= 0 {
		o.MinServiceEndpoints = 10
	}
	if o.RecentUnhealthy <= 0 {
		o.RecentUnhealthy = 5 * time.Minute
	}
	if o.HoldPeriod <= 0 {
		o.HoldPeriod = 2 * time.Minute
	}
}

// endpointID names one usable endpoint of one service port.
type endpointID struct {
	svc  resolver.Key
	port int32
	addr string
	tgt  int32
}

// usable lists the endpoints that get traffic or drain.
func usable(services map[resolver.Key]*resolver.Service) map[endpointID]struct{} {
	out := map[endpointID]struct{}{}
	for k, s := range services {
		for _, p := range s.Ports {
			for _, e := range p.Endpoints {
				if e.Health() != resolver.Excluded {
					out[endpointID{k, p.Port, e.Address, e.Port}] = struct{}{}
				}
			}
		}
	}
	return out
}

// Verdict is the guard's decision on one change.
type Verdict struct {
	Hold      bool
	Reason    string
	Withdrawn int      // usable endpoints the change would remove
	Fleet     int      // usable endpoints in the baseline
	Services  []string // services losing endpoints, most affected first (at most 10)
}

// judge decides whether next may replace the baseline. unhealthySince says, per service, when
// its source was last stale or restarted (zero: never).
func (o GuardOptions) judge(base, next map[resolver.Key]*resolver.Service, now time.Time, unhealthyAt func(resolver.Key) time.Time) Verdict {
	if o.Disabled {
		return Verdict{}
	}
	before, after := usable(base), usable(next)
	perService := map[resolver.Key]int{} // withdrawn, by service
	had := map[resolver.Key]int{}        // usable before, by service
	kept := map[resolver.Key]int{}       // usable after, by service
	for id := range before {
		had[id.svc]++
		if _, ok := after[id]; !ok {
			perService[id.svc]++
		}
	}
	for id := range after {
		kept[id.svc]++
	}
	v := Verdict{Fleet: len(before)}
	for _, n := range perService {
		v.Withdrawn += n
	}
	keys := make([]resolver.Key, 0, len(perService))
	for k := range perService {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b resolver.Key) int {
		if perService[a] != perService[b] {
			return perService[b] - perService[a]
		}
		return a.Compare(b)
	})
	for i, k := range keys {
		if i == 10 {
			v.Services = append(v.Services, fmt.Sprintf("... and %d more", len(keys)-10))
			break
		}
		v.Services = append(v.Services, fmt.Sprintf("%s (-%d)", k, perService[k]))
	}
	if v.Fleet >= o.MinFleetEndpoints && v.Withdrawn >= o.MinWithdrawnEndpoints &&
		float64(v.Withdrawn) > o.MaxWithdrawFraction*float64(v.Fleet) {
		v.Hold = true
		v.Reason = fmt.Sprintf("would withdraw %d of %d endpoints (%.0f%%, limit %.0f%%)",
			v.Withdrawn, v.Fleet, 100*float64(v.Withdrawn)/float64(v.Fleet), 100*o.MaxWithdrawFraction)
		return v
	}
	var emptied []string
	for _, k := range keys {
		if had[k] < o.MinServiceEndpoints || kept[k] != 0 {
			continue
		}
		if at := unhealthyAt(k); !at.IsZero() && now.Sub(at) < o.RecentUnhealthy {
			emptied = append(emptied, fmt.Sprintf("%s (%d endpoints)", k, had[k]))
		}
	}
	if len(emptied) > 0 {
		v.Hold = true
		v.Reason = "would drop to zero, right after its source was stale or restarted: " + strings.Join(emptied, ", ")
	}
	return v
}

func latest(ts ...time.Time) time.Time {
	var out time.Time
	for _, t := range ts {
		if t.After(out) {
			out = t
		}
	}
	return out
}

// withhold returns next with every withdrawal from served undone: the part of a held change
// that may be applied at once. An endpoint usable in served that next drops, or makes unusable
// (not ready, not serving), stays as served; so does a port next drops, and a service next
// deletes while it has usable endpoints. Everything else of next is taken as it is: new
// services and ports, new endpoints, endpoints that become usable, changes to what is not an
// endpoint (the locality policy, the incarnation). A service next withdraws nothing from keeps
// next's pointer.
func withhold(served, next map[resolver.Key]*resolver.Service) map[resolver.Key]*resolver.Service {
	out := make(map[resolver.Key]*resolver.Service, len(next))
	for k, s := range next {
		prev, ok := served[k]
		if !ok {
			out[k] = s
			continue
		}
		out[k] = withholdService(prev, s)
	}
	for k, prev := range served {
		if _, ok := next[k]; !ok && slices.ContainsFunc(prev.Ports, func(p resolver.Port) bool { return hasUsable(p.Endpoints) }) {
			out[k] = prev
		}
	}
	return out
}

// withholdService is withhold for one service.
func withholdService(prev, next *resolver.Service) *resolver.Service {
	var ports []resolver.Port // next's ports with withdrawals undone; nil while there is none
	for _, pp := range prev.Ports {
		i := slices.IndexFunc(next.Ports, func(p resolver.Port) bool { return p.Port == pp.Port })
		if i < 0 {
			if !hasUsable(pp.Endpoints) {
				continue
			}
			if ports == nil {
				ports = slices.Clone(next.Ports)
			}
			ports = append(ports, pp) // a port next drops, whole
			continue
		}
		var keep []resolver.Endpoint // prev's usable endpoints next drops or makes unusable
		for _, e := range pp.Endpoints {
			if e.Health() == resolver.Excluded {
				continue
			}
			j := slices.IndexFunc(next.Ports[i].Endpoints, func(n resolver.Endpoint) bool { return n.Address == e.Address && n.Port == e.Port })
			if j < 0 || next.Ports[i].Endpoints[j].Health() == resolver.Excluded {
				keep = append(keep, e)
			}
		}
		if len(keep) == 0 {
			continue
		}
		if ports == nil {
			ports = slices.Clone(next.Ports)
		}
		ports[i].Endpoints = mergeEndpoints(next.Ports[i].Endpoints, keep)
	}
	if ports == nil {
		return next
	}
	slices.SortFunc(ports, func(a, b resolver.Port) int { return int(a.Port) - int(b.Port) })
	out := *next
	out.Ports = ports
	return &out
}

// mergeEndpoints returns eps with keep in place of its endpoints of the same address and port,
// and the rest of keep added, sorted by address, then port (the model's order).
func mergeEndpoints(eps, keep []resolver.Endpoint) []resolver.Endpoint {
	out := make([]resolver.Endpoint, 0, len(eps)+len(keep))
	for _, e := range eps {
		if !slices.ContainsFunc(keep, func(k resolver.Endpoint) bool { return k.Address == e.Address && k.Port == e.Port }) {
			out = append(out, e)
		}
	}
	out = append(out, keep...)
	slices.SortFunc(out, func(a, b resolver.Endpoint) int {
		aa, _ := netip.ParseAddr(a.Address)
		ba, _ := netip.ParseAddr(b.Address)
		if c := aa.Compare(ba); c != 0 {
			return c
		}
		return int(a.Port) - int(b.Port)
	})
	return out
}
