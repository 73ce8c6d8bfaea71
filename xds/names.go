package xds

import (
	"fmt"
	"strconv"

	"github.com/holdfast/holdfast/resolver"
)

// Naming holds the cluster domain that every resource name is built from.
type Naming struct {
	// Domain is the cluster domain, e.g. "cluster.local".
	Domain string
}

// FQDN is "<svc>.<ns>.svc.<domain>".
func (n Naming) FQDN(k resolver.Key) string {
	return k.Name + "." + k.Namespace + ".svc." + n.Domain
}

// Resource is the one name every resource of a service port shares (Listener and
// RouteConfiguration for gRPC clients, Cluster and ClusterLoadAssignment for everyone):
// "<svc>.<ns>.svc.<domain>:<port>". gRPC clients dial "xds:///" + this name.
func (n Naming) Resource(k resolver.Key, port int32) string {
	return n.FQDN(k) + ":" + strconv.Itoa(int(port))
}

// Outbound names the Envoy socket listener and its route configuration for a port number.
func Outbound(port int32) string { return fmt.Sprintf("outbound_%d", port) }

// Domains are the Host values an Envoy virtual host answers for a service port.
func (n Naming) Domains(k resolver.Key, port int32) []string {
	p := ":" + strconv.Itoa(int(port))
	bases := []string{n.FQDN(k), k.Name + "." + k.Namespace + ".svc", k.Name + "." + k.Namespace}
	out := make([]string, 0, 2*len(bases))
	for _, b := range bases {
		out = append(out, b, b+p)
	}
	return out
}
