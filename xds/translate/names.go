package translate

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/holdfast/holdfast/resolver"
)

// Naming holds the cluster domain that every resource name is built from.
type Naming struct {
	// Domain is the cluster domain, e.g. "cluster.local".
	Domain string
}

// FQDN is "<svc>.<ns>.svc.<domain>", and "<svc>.<ns>.svc.clusterset.local" for a cluster-set
// service (the MCS API's name for what every cluster exports).
func (n Naming) FQDN(k resolver.Key) string {
	if k.ClusterSet {
		return k.Name + "." + k.Namespace + ".svc." + resolver.ClusterSetDomain
	}
	return k.Name + "." + k.Namespace + ".svc." + n.Domain
}

// Resource is the one name every resource of a service port shares (Listener and
// RouteConfiguration for gRPC clients, Cluster and ClusterLoadAssignment for everyone):
// "<svc>.<ns>.svc.<domain>:<port>". gRPC clients dial "xds:///" + this name.
func (n Naming) Resource(k resolver.Key, port int32) string {
	return n.FQDN(k) + ":" + strconv.Itoa(int(port))
}

// Upstream names what a service port's listener points to: its route configuration (for gRPC
// clients), its cluster and its ClusterLoadAssignment. It is Resource followed by "~" and the
// service's incarnation — the first 8 characters of its UID — so that a service deleted and
// created again is new to a client that was told it no longer exists: gRPC C-core and
// grpc-js-xds keep a deleted resource cached and ignore one that comes back identical. The
// listener keeps the name clients dial; its content changes with the incarnation, so the
// client follows it to the new names. A service without a UID (a test's, or one restored
// from an older state file) has no suffix. Versions stay content-derived: the UID comes from
// the API server, so every replica names a service alike.
func (n Naming) Upstream(k resolver.Key, uid string, port int32) string {
	name := n.Resource(k, port)
	if id := incarnation(uid); id != "" {
		return name + "~" + id
	}
	return name
}

// incarnation is the part of a UID that names an incarnation: its first 8 characters (32
// random bits of a Kubernetes UUID), or "" when it is shorter or not a UID.
func incarnation(uid string) string {
	if len(uid) < 8 || !resolver.ValidUID(uid) {
		return ""
	}
	return uid[:8]
}

// ServiceOf returns the listener name an Upstream name belongs to (the name itself when it
// carries no incarnation).
func ServiceOf(upstream string) string {
	if i := strings.LastIndexByte(upstream, '~'); i >= 0 {
		return upstream[:i]
	}
	return upstream
}

// Outbound names the Envoy socket listener and its route configuration for a port number.
func Outbound(port int32) string { return fmt.Sprintf("outbound_%d", port) }

// Domains are the Host values an Envoy virtual host answers for a service port. The short
// forms ("<svc>.<ns>.svc", "<svc>.<ns>") are the cluster's own service's, as DNS search paths
// make them; a cluster-set service answers only for its full name.
func (n Naming) Domains(k resolver.Key, port int32) []string {
	p := ":" + strconv.Itoa(int(port))
	bases := []string{n.FQDN(k), k.Name + "." + k.Namespace + ".svc", k.Name + "." + k.Namespace}
	if k.ClusterSet {
		bases = bases[:1]
	}
	out := make([]string, 0, 2*len(bases))
	for _, b := range bases {
		out = append(out, b, b+p)
	}
	return out
}
