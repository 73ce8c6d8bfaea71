package resolver

import (
	"net/netip"
	"sort"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// buildService merges a Service and all EndpointSlices labelled with its name into the plain
// model. Slice ports are matched to service ports by name (both empty for a single unnamed port).
// It returns nil for services that carry no routable ports (ExternalName, or no TCP ports).
func buildService(svc *corev1.Service, slices []*discoveryv1.EndpointSlice) *Service {
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return nil
	}
	out := &Service{
		Key:      Key{Namespace: svc.Namespace, Name: svc.Name},
		Headless: svc.Spec.ClusterIP == corev1.ClusterIPNone,
	}
	for _, sp := range svc.Spec.Ports {
		if !isTCP(sp.Protocol) || sp.Port <= 0 || sp.Port > 65535 {
			continue
		}
		p := Port{Name: sp.Name, Port: sp.Port}
		if sp.AppProtocol != nil {
			p.AppProtocol = *sp.AppProtocol
		}
		p.Endpoints = endpointsForPort(sp.Name, slices)
		out.Ports = append(out.Ports, p)
	}
	if len(out.Ports) == 0 {
		return nil
	}
	sort.Slice(out.Ports, func(i, j int) bool { return out.Ports[i].Port < out.Ports[j].Port })
	return out
}

func isTCP(p corev1.Protocol) bool { return p == "" || p == corev1.ProtocolTCP }

// endpointsForPort collects, across all slices, the endpoints serving the service port named
// portName. An address:port listed by several slices appears once, with the most usable
// conditions any slice reported for it (ready beats serving beats neither).
func endpointsForPort(portName string, slices []*discoveryv1.EndpointSlice) []Endpoint {
	byHostPort := map[netip.AddrPort]Endpoint{}
	for _, s := range slices {
		if s.AddressType != discoveryv1.AddressTypeIPv4 && s.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		target, ok := slicePort(s, portName)
		if !ok {
			continue
		}
		for i := range s.Endpoints {
			e := &s.Endpoints[i]
			for _, a := range e.Addresses {
				addr, err := netip.ParseAddr(a)
				if err != nil || addr.Zone() != "" || addr.Is4() != (s.AddressType == discoveryv1.AddressTypeIPv4) {
					continue
				}
				ep := toEndpoint(addr.String(), int32(target), e)
				key := netip.AddrPortFrom(addr, target)
				if prev, dup := byHostPort[key]; dup && rank(prev) >= rank(ep) {
					continue
				}
				byHostPort[key] = ep
			}
		}
	}
	if len(byHostPort) == 0 {
		return nil
	}
	keys := make([]netip.AddrPort, 0, len(byHostPort))
	for k := range byHostPort {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].Compare(keys[j]) < 0 })
	out := make([]Endpoint, len(keys))
	for i, k := range keys {
		out[i] = byHostPort[k]
	}
	return out
}

// slicePort finds the slice's port for the service port name. TCP only; a nil port number means
// "all ports" in the API, which a proxy cannot route, so it does not match.
func slicePort(s *discoveryv1.EndpointSlice, name string) (uint16, bool) {
	for _, p := range s.Ports {
		pn := ""
		if p.Name != nil {
			pn = *p.Name
		}
		if pn != name {
			continue
		}
		if p.Protocol != nil && !isTCP(*p.Protocol) {
			continue
		}
		if p.Port == nil || *p.Port <= 0 || *p.Port > 65535 {
			return 0, false
		}
		return uint16(*p.Port), true
	}
	return 0, false
}

// toEndpoint applies the API's defaulting rules for conditions: a nil ready means ready, a nil
// serving means the same as ready, a nil terminating means not terminating.
func toEndpoint(addr string, port int32, e *discoveryv1.Endpoint) Endpoint {
	ready := e.Conditions.Ready == nil || *e.Conditions.Ready
	serving := ready
	if e.Conditions.Serving != nil {
		serving = *e.Conditions.Serving
	}
	terminating := e.Conditions.Terminating != nil && *e.Conditions.Terminating
	ep := Endpoint{Address: addr, Port: port, Ready: ready, Serving: serving, Terminating: terminating}
	if e.Zone != nil {
		ep.Zone = *e.Zone
	}
	if e.NodeName != nil {
		ep.NodeName = *e.NodeName
	}
	if e.Hostname != nil {
		ep.Hostname = *e.Hostname
	}
	return ep
}

func rank(e Endpoint) int {
	switch e.Health() {
	case Healthy:
		return 2
	case Draining:
		return 1
	default:
		return 0
	}
}
