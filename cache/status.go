package cache

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/holdfast/holdfast/resolver"
)

// ServiceState says how far a served service's state can be trusted. A service can be in more
// than one of these at once; Status reports the one an operator must know about first, in the
// order below.
type ServiceState string

const (
	// StateDeleted means the service is gone from the API server; it is served as it last was
	// until its tombstone expires, so that a delete-and-recreate does not flap clients.
	StateDeleted ServiceState = "deleted"
	// StateHeld means the mass-withdrawal guard holds a newer state; clients keep this one.
	StateHeld ServiceState = "held"
	// StateRefused means the service is over a capacity limit. A new service is not served at all; a served one
	// that grew past the limit keeps its previous state.
	StateRefused ServiceState = "refused"
	// StateDegraded means the newest input had nothing usable; this is the last good state.
	StateDegraded ServiceState = "degraded"
	// StateRestored means loaded from the state file and not yet confirmed by the API server.
	StateRestored ServiceState = "restored"
	// StateStale means the source watching its namespace is not live; this is the last state seen.
	StateStale ServiceState = "stale"
	// StateLive means as the API server has it, from a live watch.
	StateLive ServiceState = "live"
)

// ServiceStatus is one service as the store serves it, with its provenance and state.
type ServiceStatus struct {
	// Service is what clients are served; nil for a service refused before it was ever served.
	Service *resolver.Service
	Key     resolver.Key
	State   ServiceState
	// Reason explains any state but live.
	Reason string
	// HoldID names the hold when State is held.
	HoldID int
}

// Services returns the status of every service the store serves or refuses, sorted by key.
func (s *Store) Services() []ServiceStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := make([]resolver.Key, 0, len(s.view.Services)+len(s.capacity.refused))
	for k := range s.view.Services {
		keys = append(keys, k)
	}
	for k := range s.capacity.refused {
		if _, served := s.view.Services[k]; !served {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, resolver.Key.Compare)
	out := make([]ServiceStatus, len(keys))
	now := time.Now()
	for i, k := range keys {
		out[i] = s.statusLocked(k, now)
	}
	return out
}

// Service returns the status of one service, and false if the store knows nothing of it.
func (s *Store) Service(k resolver.Key) (ServiceStatus, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, served := s.view.Services[k]
	_, refused := s.capacity.refused[k]
	if !served && !refused {
		return ServiceStatus{}, false
	}
	return s.statusLocked(k, time.Now()), true
}

func (s *Store) statusLocked(k resolver.Key, now time.Time) ServiceStatus {
	st := ServiceStatus{Key: k, Service: s.view.Services[k]}
	newest, known := s.latest.Services[k]
	_, isLive := s.live[k]
	_, refused := s.capacity.refused[k]
	// What the store applied for k: the service itself, also when a tombstone lends it endpoints.
	applied := st.Service
	tomb, hasTomb := s.capacity.tombstones.Peek(k)
	if hasTomb && tomb.bridged != nil && tomb.bridged == applied {
		applied = tomb.from
	}
	staleIn := "" // a cluster-set service's cluster that is not live
	if k.ClusterSet {
		staleIn = staleCluster(s.latest, st.Service)
	}
	switch {
	case st.Service == nil && refused:
		st.State, st.Reason = StateRefused, "new service over a capacity limit (--max-services or --max-endpoints): not served"
	case !isLive && !s.view.Restored:
		st.State = StateDeleted
		if hasTomb {
			st.Reason = fmt.Sprintf("deleted; served as it last was, endpoints included, for %v more", tomb.expires.Sub(now).Round(time.Second))
		}
	case s.hold != nil && s.hold.change.Services[k] != applied:
		st.State, st.HoldID = StateHeld, s.hold.ID
		st.Reason = fmt.Sprintf("hold %d: %s", s.hold.ID, s.hold.Verdict.Reason)
	case s.hold == nil && known && newest != applied && !s.view.Restored:
		st.State, st.Reason = StateRefused, "grew past --max-endpoints: serving its previous state"
	case s.latest.Degraded[k] != "":
		st.State, st.Reason = StateDegraded, s.latest.Degraded[k]
	case s.view.Restored:
		st.State = StateRestored
		st.Reason = fmt.Sprintf("restored from the state file written %v ago; the API server is not synced yet", now.Sub(s.view.RestoredFrom).Round(time.Second))
	case staleIn != "":
		c := staleIn
		st.State, st.Reason = StateStale, fmt.Sprintf("cluster %s's source for %s is %s: its endpoints are the last it saw", c, k.Namespace, s.latest.SourceIn(c, k.Namespace))
		if _, merged := s.latest.Remote[c]; !merged && c != s.latest.Home {
			st.Reason = fmt.Sprintf("cluster %s is not merged any more: its endpoints are the last it saw", c)
		}
	case s.latest.SourceOf(k.Namespace) != resolver.Live:
		src := k.Namespace
		if _, own := s.latest.Sources[src]; !own {
			src = "all namespaces"
		}
		st.State, st.Reason = StateStale, fmt.Sprintf("the source for %s is %s: this is the last state it saw", src, s.latest.SourceOf(k.Namespace))
	default:
		st.State = StateLive
		if len(st.Service.Conflicts) > 0 {
			st.Reason = "clusters disagree, the oldest export's definition applies: " + strings.Join(st.Service.Conflicts, "; ")
		}
		for _, p := range st.Service.Ports {
			if p.Unmatched != "" {
				st.Reason = fmt.Sprintf("port %d served empty: %s", p.Port, p.Unmatched)
			}
		}
		if hasTomb && tomb.bridged == st.Service {
			st.Reason = fmt.Sprintf("created again: its deleted incarnation stays served beside it for %v more", tomb.expires.Sub(now).Round(time.Second))
			if tomb.lent() {
				st.Reason += ", lending its endpoints to ports that have none yet"
			}
		}
	}
	return st
}

// staleCluster names the first cluster (by ID) some of a cluster-set service's endpoints are
// from whose source for its namespace is not live; "" when every one is.
func staleCluster(r resolver.Resolution, svc *resolver.Service) string {
	if svc == nil {
		return ""
	}
	var clusters []string
	for _, p := range svc.Ports {
		for _, e := range p.Endpoints {
			if e.Cluster != "" && !slices.Contains(clusters, e.Cluster) {
				clusters = append(clusters, e.Cluster)
			}
		}
	}
	slices.Sort(clusters)
	for _, c := range clusters {
		if r.SourceIn(c, svc.Namespace) != resolver.Live {
			return c
		}
	}
	return ""
}
