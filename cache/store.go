// Package cache holds the effective view that Holdfast serves: the services the resolver
// reported, as last accepted. The xds package serves only from here. It knows plain Go types
// and nothing about gRPC or Envoy.
package cache

import (
	"sync"

	"github.com/holdfast/holdfast/resolver"
)

// View is the effective state to serve. It is immutable.
type View struct {
	Services map[resolver.Key]*resolver.Service
	// Synced is true once the view reflects a complete sync with the API server.
	Synced bool
	// Generation increases with every view the store accepts.
	Generation uint64
}

// Observer is told about every new View. OnView must not block: the store calls it on the
// resolver's goroutine.
type Observer interface {
	OnView(View)
}

// ObserverFunc adapts a function to an Observer.
type ObserverFunc func(View)

// OnView calls f.
func (f ObserverFunc) OnView(v View) { f(v) }

// Store keeps the current View and hands every new one to its observer.
type Store struct {
	// set at construction, read-only
	obs Observer

	// guarded by mu
	mu   sync.Mutex
	view View
}

// NewStore returns an empty, unsynced store that reports to obs.
func NewStore(obs Observer) *Store {
	return &Store{obs: obs, view: View{Services: map[resolver.Key]*resolver.Service{}}}
}

// OnResolution accepts a resolver's Resolution as the new view. It implements resolver.Observer.
func (s *Store) OnResolution(r resolver.Resolution) {
	s.mu.Lock()
	s.view = View{Services: r.Services, Synced: r.Synced, Generation: s.view.Generation + 1}
	v := s.view
	s.mu.Unlock()
	s.obs.OnView(v)
}

// View returns the current view.
func (s *Store) View() View {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.view
}
