package translate

import (
	"fmt"
	"maps"
	"slices"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/holdfast/holdfast/resolver"
	"github.com/holdfast/holdfast/xds/resource"
)

// Builder translates whole states of the cluster into every client kind's resources, closed
// under references. It is incremental: a service whose *resolver.Service is the one of the
// previous Build keeps its resources, and so does an Envoy outbound_<port> whose virtual hosts
// did not change. Its output depends on its input only. Not safe for concurrent use: one
// goroutine owns a Builder (the publisher's loop).
type Builder struct {
	// set at construction, read-only
	tr Translator

	// owned by the goroutine calling Build
	built     map[resolver.Key]*serviceResources
	retired   map[resolver.Key]*serviceResources // earlier incarnations served beside built
	ports     map[int32]*portOutbound            // Envoy's outbound_<port> resources, by port
	routeRefs map[*listenerv3.Listener][]string  // cache for checkReferences, pruned each Build
	invalid   map[resolver.Key]invalidState      // services whose newest state failed validation
}

// NewBuilder returns a Builder translating with tr.
func NewBuilder(tr Translator) *Builder {
	return &Builder{tr: tr, built: map[resolver.Key]*serviceResources{}, retired: map[resolver.Key]*serviceResources{},
		ports: map[int32]*portOutbound{}, invalid: map[resolver.Key]invalidState{}}
}

// invalidState is a service state that failed validation, kept so that it is judged once.
type invalidState struct {
	src *resolver.Service
	why string
}

// Result is one Build's output.
type Result struct {
	// Set is every client kind's resources, by type, closed under references.
	Set resource.Set
	// Services counts the services translated (valid now or kept from before).
	Services int
	// Invalid are the services whose newest state fails validation, with why. Each keeps its
	// previous resources (or has none, if it never had valid ones).
	Invalid map[resolver.Key]string
	// Rejected are the translations this Build judged invalid for the first time.
	Rejected []Rejection
	// Dropped are Envoy outbound_<port> resources left out because they failed validation.
	Dropped []error
	// EventAt is when the oldest Kubernetes event behind the services translated anew reached
	// Holdfast (zero: none known).
	EventAt time.Time
}

// Rejection is a service state whose translation failed validation.
type Rejection struct {
	Key resolver.Key
	Err error
	// KeptPrevious says the service keeps resources from an earlier valid state.
	KeptPrevious bool
	// Retired says it is an earlier incarnation (served beside a re-created service): it is
	// left out, not kept.
	Retired bool
}

// Build translates services (and retired incarnations still served beside their new one) and
// assembles each client kind's resources. An error means the set is not closed under
// references and must not be published; the translations made are kept for the next Build.
func (b *Builder) Build(services, retired map[resolver.Key]*resolver.Service) (Result, error) {
	res := Result{}
	b.update(services, &res)
	b.updateRetired(retired, &res)
	set, dropped := b.assemble()
	res.Dropped = dropped
	refs := make(map[*listenerv3.Listener][]string, len(b.routeRefs))
	for kind, byType := range set {
		for _, r := range byType[resourcev3.ListenerType] {
			if l, ok := r.Msg.(*listenerv3.Listener); ok {
				if names, ok := b.routeRefs[l]; ok {
					refs[l] = names
				}
			}
		}
		plain := make(map[resourcev3.Type][]types.Resource, len(byType))
		for t, l := range byType {
			plain[t] = resource.Messages(l)
		}
		if err := checkReferences(plain, refs); err != nil {
			return res, fmt.Errorf("%s snapshot: %w", kind, err)
		}
	}
	b.routeRefs = refs // only listeners still published stay cached
	res.Set, res.Services = set, len(b.built)
	res.Invalid = make(map[resolver.Key]string, len(b.invalid))
	for k, iv := range b.invalid {
		res.Invalid[k] = iv.why
	}
	return res, nil
}

// update brings the per-service translations in line with services, translating only services
// whose *resolver.Service changed. A service whose new translation is invalid keeps its
// previous resources and is reported as invalid until a valid state arrives.
func (b *Builder) update(services map[resolver.Key]*resolver.Service, res *Result) {
	for k := range b.built {
		if _, ok := services[k]; !ok {
			delete(b.built, k)
		}
	}
	for k, iv := range b.invalid {
		if services[k] != iv.src {
			delete(b.invalid, k) // gone, or a new state: judged again below
		}
	}
	for k, s := range services {
		if prev, ok := b.built[k]; ok && prev.src == s {
			continue
		}
		if _, judged := b.invalid[k]; judged {
			continue // the same invalid state: judged already
		}
		sr, err := b.tr.translateService(s)
		if err != nil {
			_, kept := b.built[k]
			res.Rejected = append(res.Rejected, Rejection{Key: k, Err: err, KeptPrevious: kept})
			b.invalid[k] = invalidState{src: s, why: err.Error()}
			continue
		}
		b.built[k] = sr
		if at := s.Origin.ObservedAt; !at.IsZero() && (res.EventAt.IsZero() || at.Before(res.EventAt)) {
			res.EventAt = at
		}
	}
}

// updateRetired brings the translations of retired incarnations in line. One that does not
// translate is left out: it was served before, so it translated then, and the new incarnation
// is what clients move to.
func (b *Builder) updateRetired(retired map[resolver.Key]*resolver.Service, res *Result) {
	for k, sr := range b.retired {
		if retired[k] != sr.src {
			delete(b.retired, k)
		}
	}
	for k, s := range retired {
		if _, ok := b.retired[k]; ok {
			continue
		}
		sr, err := b.tr.translateService(s)
		if err != nil {
			res.Rejected = append(res.Rejected, Rejection{Key: k, Err: err, Retired: true})
			continue
		}
		b.retired[k] = sr
	}
}

// assemble builds the full resource set of each client kind from the per-service translations.
// An outbound_<port> listener or route that fails validation is left out, alone, and reported.
func (b *Builder) assemble() (resource.Set, []error) {
	keys := make([]resolver.Key, 0, len(b.built))
	for k := range b.built {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, resolver.Key.Compare)
	var clusters, assignments, grpcListeners, grpcRoutes []*resource.Resource
	vhostsByPort := map[int32][]vhostEntry{}
	for _, k := range keys {
		for _, pr := range b.built[k].ports {
			clusters = append(clusters, pr.cluster)
			assignments = append(assignments, pr.assignment)
			grpcListeners = append(grpcListeners, pr.grpcListener)
			grpcRoutes = append(grpcRoutes, pr.grpcRoute)
			vhostsByPort[pr.port] = append(vhostsByPort[pr.port], pr.envoyVHost)
		}
	}
	// An earlier incarnation of a service created again keeps its cluster, assignment and gRPC
	// route configuration (not its listener, which now points to the new incarnation, nor its
	// Envoy virtual host) while clients move to the new names.
	for _, k := range slices.SortedFunc(maps.Keys(b.retired), resolver.Key.Compare) {
		live := b.built[k]
		for _, pr := range b.retired[k].ports {
			if live != nil && slices.ContainsFunc(live.ports, func(l portResources) bool { return l.cluster.Name == pr.cluster.Name }) {
				continue // the same names: nothing to keep apart
			}
			clusters = append(clusters, pr.cluster)
			assignments = append(assignments, pr.assignment)
			grpcRoutes = append(grpcRoutes, pr.grpcRoute)
		}
	}
	ports := make([]int32, 0, len(vhostsByPort))
	for port := range vhostsByPort {
		ports = append(ports, port)
	}
	slices.Sort(ports)
	var envoyListeners, envoyRoutes []*resource.Resource
	var errs []error
	for port := range b.ports {
		if _, ok := vhostsByPort[port]; !ok {
			delete(b.ports, port)
		}
	}
	for _, port := range ports {
		po, err := b.tr.envoyPortResources(port, vhostsByPort[port], b.ports[port])
		if err != nil {
			errs = append(errs, err)
			delete(b.ports, port)
			continue
		}
		b.ports[port] = po
		envoyListeners = append(envoyListeners, po.listener)
		envoyRoutes = append(envoyRoutes, po.route)
	}
	return resource.Set{
		resource.KindGRPC: {
			resourcev3.ListenerType: grpcListeners, resourcev3.RouteType: grpcRoutes,
			resourcev3.ClusterType: clusters, resourcev3.EndpointType: assignments,
		},
		resource.KindEnvoy: {
			resourcev3.ListenerType: envoyListeners, resourcev3.RouteType: envoyRoutes,
			resourcev3.ClusterType: clusters, resourcev3.EndpointType: assignments,
		},
	}, errs
}
