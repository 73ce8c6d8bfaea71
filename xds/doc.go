// Package xds is the only place that builds Envoy protos. It translates the cache's view into
// xDS resources (a Listener, RouteConfiguration, Cluster and ClusterLoadAssignment per service
// port for proxyless gRPC; outbound_<port> socket listeners and route configurations for Envoy),
// validates them, checks their references, and serves them over ADS, state-of-the-world and
// Delta. It also writes the bootstraps that point clients at Holdfast.
package xds
