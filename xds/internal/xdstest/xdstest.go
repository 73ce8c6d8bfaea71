// Package xdstest holds what the tests of the xds packages share: small services to translate
// and serve, and readers of what was built. Tests only.
package xdstest

import (
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"

	"github.com/holdfast/holdfast/resolver"
)

// Domain is the cluster domain the tests' names are built with.
const Domain = "cluster.local"

// Services returns services by key.
func Services(services ...*resolver.Service) map[resolver.Key]*resolver.Service {
	out := make(map[resolver.Key]*resolver.Service, len(services))
	for _, s := range services {
		out[s.Key] = s
	}
	return out
}

// TwoServices returns ns/a (port 80 and 9000, one ready endpoint each) and other/b (port 80,
// no endpoints).
func TwoServices() (*resolver.Service, *resolver.Service) {
	a := &resolver.Service{Key: resolver.Key{Namespace: "ns", Name: "a"}, Ports: []resolver.Port{
		{Name: "http", Port: 80, Endpoints: []resolver.Endpoint{{Address: "10.0.0.1", Port: 8080, Ready: true, Serving: true}}},
		{Name: "grpc", Port: 9000, Endpoints: []resolver.Endpoint{{Address: "10.0.0.1", Port: 9090, Ready: true, Serving: true}}},
	}}
	b := &resolver.Service{Key: resolver.Key{Namespace: "other", Name: "b"}, Ports: []resolver.Port{{Name: "http", Port: 80}}}
	return a, b
}

// WithEndpoints returns a copy of s whose first port has ready endpoints at addrs (port 8080).
func WithEndpoints(s *resolver.Service, addrs ...string) *resolver.Service {
	out := *s
	out.Ports = append([]resolver.Port(nil), s.Ports...)
	out.Ports[0].Endpoints = nil
	for _, a := range addrs {
		out.Ports[0].Endpoints = append(out.Ports[0].Endpoints, resolver.Endpoint{Address: a, Port: 8080, Ready: true, Serving: true})
	}
	return &out
}

// ZonedService has, on port 80, two endpoints in zone a and one in b (region r1), one in c
// (region r2); edit changes it before it is returned.
func ZonedService(name string, edit func(*resolver.Service)) *resolver.Service {
	s := &resolver.Service{Key: resolver.Key{Namespace: "ns", Name: name}, Ports: []resolver.Port{{Name: "http", Port: 80, Endpoints: []resolver.Endpoint{
		{Address: "10.0.0.1", Port: 8080, Ready: true, Zone: "a", Region: "r1"},
		{Address: "10.0.0.2", Port: 8080, Ready: true, Zone: "a", Region: "r1"},
		{Address: "10.0.0.3", Port: 8080, Ready: true, Zone: "b", Region: "r1"},
		{Address: "10.0.0.4", Port: 8080, Ready: true, Zone: "c", Region: "r2"},
	}}}}
	if edit != nil {
		edit(s)
	}
	return s
}

// Priorities maps each endpoint address of an assignment to its priority.
func Priorities(cla *endpointv3.ClusterLoadAssignment) map[string]uint32 {
	out := map[string]uint32{}
	for _, le := range cla.GetEndpoints() {
		for _, e := range le.GetLbEndpoints() {
			out[e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress()] = le.GetPriority()
		}
	}
	return out
}
