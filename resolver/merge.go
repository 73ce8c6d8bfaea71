package resolver

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// Rejection is one element of an API object that was left out of the model, and why.
type Rejection struct {
	Kind            string // "Service" or "EndpointSlice"
	Namespace, Name string
	ResourceVersion string
	Reason          string // one of the Reason constants: a bounded set, fit for a metric label
	Detail          string
}

// Why an element of an object was left out.
const (
	ReasonAddressInvalid     = "address_invalid"
	ReasonAddressFamily      = "address_family_mismatch"
	ReasonAddressType        = "unsupported_address_type"
	ReasonPortInvalid        = "port_invalid"
	ReasonDuplicateEndpoint  = "duplicate_endpoint"
	ReasonExternalName       = "externalname_service"
	ReasonNoServiceLabel     = "missing_service_label"
	ReasonServiceNotFound    = "service_not_found"
	ReasonTooManyEndpoints   = "too_many_endpoints"
	ReasonNothingUsableInput = "no_usable_endpoints_left"
	ReasonAnnotationInvalid  = "annotation_invalid"
	ReasonPortNameMismatch   = "port_name_mismatch"
)

// topology returns the zone and region labels of a Node; ok is false when the Node is not
// known (or Nodes are not watched: nil).
type topology func(node string) (zone, region string, ok bool)

func sliceRejection(s *discoveryv1.EndpointSlice, reason, detail string) Rejection {
	return Rejection{Kind: "EndpointSlice", Namespace: s.Namespace, Name: s.Name, ResourceVersion: s.ResourceVersion, Reason: reason, Detail: detail}
}

// buildService merges a Service and all EndpointSlices labelled with its name into the plain
// model. Slice ports are matched to service ports by name (both empty for a single unnamed port).
// It returns nil for services that carry no routable ports (ExternalName, or no TCP ports), and
// every element it left out as a Rejection. It never fails: a bad element is dropped alone.
//
// Endpoints without a zone in their slice take their Node's zone label, and every endpoint its
// Node's region label, when nodes is not nil.
func buildService(svc *corev1.Service, slices []*discoveryv1.EndpointSlice, nodes topology) (*Service, []Rejection) {
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return nil, []Rejection{{Kind: "Service", Namespace: svc.Namespace, Name: svc.Name, ResourceVersion: svc.ResourceVersion,
			Reason: ReasonExternalName, Detail: "ExternalName services are resolved by DNS, not served over xDS"}}
	}
	var rejections []Rejection
	out := &Service{
		Key:      Key{Namespace: svc.Namespace, Name: svc.Name},
		UID:      string(svc.UID),
		Created:  svc.CreationTimestamp.Time,
		Headless: svc.Spec.ClusterIP == corev1.ClusterIPNone,
		Origin:   Origin{ServiceVersion: svc.ResourceVersion},
	}
	if td := svc.Spec.TrafficDistribution; td != nil {
		out.TrafficDistribution = *td
	}
	if v, ok := svc.Annotations[LocalityAnnotation]; ok {
		switch v {
		case LocalityOff, LocalityZone, LocalityRegion:
			out.Locality = v
		default:
			rejections = append(rejections, Rejection{Kind: "Service", Namespace: svc.Namespace, Name: svc.Name, ResourceVersion: svc.ResourceVersion,
				Reason: ReasonAnnotationInvalid, Detail: fmt.Sprintf("%s: %q is not off, zone or region; the default applies", LocalityAnnotation, v)})
		}
	}
	for _, s := range slices {
		out.Origin.Slices = append(out.Origin.Slices, ObjectVersion{Name: s.Name, ResourceVersion: s.ResourceVersion})
	}
	sort.Slice(out.Origin.Slices, func(i, j int) bool { return out.Origin.Slices[i].Name < out.Origin.Slices[j].Name })
	for _, sp := range svc.Spec.Ports {
		if !isTCP(sp.Protocol) || sp.Port <= 0 || sp.Port > 65535 {
			continue
		}
		p := Port{Name: sp.Name, Port: sp.Port}
		if sp.AppProtocol != nil {
			p.AppProtocol = *sp.AppProtocol
		}
		p.Endpoints = endpointsForPort(sp.Name, slices, nodes, &rejections)
		out.Ports = append(out.Ports, p)
	}
	// Problems that do not depend on the port: reported once per slice.
	for _, s := range slices {
		if s.AddressType != discoveryv1.AddressTypeIPv4 && s.AddressType != discoveryv1.AddressTypeIPv6 {
			rejections = append(rejections, sliceRejection(s, ReasonAddressType, fmt.Sprintf("address type %q is not routable by IP", s.AddressType)))
		}
	}
	rejections = append(rejections, matchPortNames(out.Ports, slices)...)
	if len(out.Ports) == 0 {
		return nil, rejections
	}
	sort.Slice(out.Ports, func(i, j int) bool { return out.Ports[i].Port < out.Ports[j].Port })
	return out, rejections
}

func isTCP(p corev1.Protocol) bool { return p == "" || p == corev1.ProtocolTCP }

// matchPortNames checks the slices' port names against the service's ports, which are matched
// by name. A slice port that names no service port carries endpoints nobody can reach: a
// rejected element. A service port that no slice names (while the service has slices) is
// served empty, as Kubernetes allows, and says why in its Unmatched.
func matchPortNames(ports []Port, sl []*discoveryv1.EndpointSlice) []Rejection {
	var rejections []Rejection
	names := make([]string, len(ports))
	for i, p := range ports {
		names[i] = p.Name
	}
	carried := map[string]bool{}
	quoted := func(ns []string) string {
		q := make([]string, len(ns))
		for i, n := range ns {
			q[i] = strconv.Quote(n)
		}
		return strings.Join(q, ", ")
	}
	for _, s := range sl {
		if s.AddressType != discoveryv1.AddressTypeIPv4 && s.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		for _, p := range s.Ports {
			if p.Protocol != nil && !isTCP(*p.Protocol) {
				continue
			}
			pn := ""
			if p.Name != nil {
				pn = *p.Name
			}
			carried[pn] = true
			if len(ports) > 0 && !slices.Contains(names, pn) {
				rejections = append(rejections, sliceRejection(s, ReasonPortNameMismatch,
					fmt.Sprintf("port %q matches no port of service %s (its ports: %s)", pn, s.Labels[discoveryv1.LabelServiceName], quoted(names))))
			}
		}
	}
	if len(carried) == 0 {
		return rejections // no slice yet: nothing to say about the ports
	}
	have := make([]string, 0, len(carried))
	for n := range carried {
		have = append(have, n)
	}
	sort.Strings(have)
	for i := range ports {
		if !carried[ports[i].Name] {
			ports[i].Unmatched = fmt.Sprintf("no EndpointSlice has a port named %q (they have: %s)", ports[i].Name, quoted(have))
		}
	}
	return rejections
}

// endpointsForPort collects, across all slices, the endpoints serving the service port named
// portName. An address:port listed by several slices appears once, with the most usable
// conditions any slice reported for it (ready beats serving beats neither).
func endpointsForPort(portName string, slices []*discoveryv1.EndpointSlice, nodes topology, rejections *[]Rejection) []Endpoint {
	byHostPort := map[netip.AddrPort]Endpoint{}
	for _, s := range slices {
		if s.AddressType != discoveryv1.AddressTypeIPv4 && s.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		target, found, ok := slicePort(s, portName)
		if found && !ok {
			*rejections = append(*rejections, sliceRejection(s, ReasonPortInvalid, fmt.Sprintf("port %q has no usable port number", portName)))
		}
		if !ok {
			continue
		}
		for i := range s.Endpoints {
			e := &s.Endpoints[i]
			for _, a := range e.Addresses {
				addr, err := netip.ParseAddr(a)
				switch {
				case err != nil || addr.Zone() != "":
					*rejections = append(*rejections, sliceRejection(s, ReasonAddressInvalid, fmt.Sprintf("%q is not an IP address", a)))
					continue
				case addr.Is4() != (s.AddressType == discoveryv1.AddressTypeIPv4):
					*rejections = append(*rejections, sliceRejection(s, ReasonAddressFamily, fmt.Sprintf("%s in an %s slice", a, s.AddressType)))
					continue
				}
				ep := toEndpoint(addr.String(), int32(target), e, nodes)
				key := netip.AddrPortFrom(addr, target)
				if prev, dup := byHostPort[key]; dup {
					*rejections = append(*rejections, sliceRejection(s, ReasonDuplicateEndpoint, fmt.Sprintf("%s listed more than once", key)))
					if rank(prev) >= rank(ep) {
						continue
					}
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

// slicePort finds the slice's port for the service port name: found says the slice names it,
// ok that it is usable. TCP only; a nil port number means "all ports" in the API, which a proxy
// cannot route.
func slicePort(s *discoveryv1.EndpointSlice, name string) (port uint16, found, ok bool) {
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
			return 0, true, false
		}
		return uint16(*p.Port), true, true
	}
	return 0, false, false
}

// toEndpoint applies the API's defaulting rules for conditions: a nil ready means ready, a nil
// serving means the same as ready, a nil terminating means not terminating.
// Zone and region come from the endpoint's Node where the slice does not say.
func toEndpoint(addr string, port int32, e *discoveryv1.Endpoint, nodes topology) Endpoint {
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
	if e.Hints != nil {
		for _, z := range e.Hints.ForZones {
			if z.Name != "" && !slices.Contains(ep.ForZones, z.Name) {
				ep.ForZones = append(ep.ForZones, z.Name)
			}
		}
		slices.Sort(ep.ForZones)
	}
	if nodes != nil && ep.NodeName != "" {
		if zone, region, ok := nodes(ep.NodeName); ok {
			if ep.Zone == "" {
				ep.Zone = zone
			}
			ep.Region = region
		}
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
