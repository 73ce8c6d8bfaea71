package resource

import (
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// Kind says which resource shapes a client gets.
type Kind string

const (
	// KindGRPC clients are proxyless gRPC: api_listener Listeners named after the service port.
	KindGRPC Kind = "grpc"
	// KindEnvoy clients are Envoy sidecars: socket listeners outbound_<port>.
	KindEnvoy Kind = "envoy"
)

// ClientMetadataKey is the node metadata key that overrides the detected client kind.
const ClientMetadataKey = "holdfast.io/client"

// KindOf classifies an xDS node. Node metadata holdfast.io/client (grpc|envoy) wins; otherwise
// the user agent: gRPC libraries send "gRPC <language>", Envoy sends "envoy". Anything else is
// served as Envoy, and reported as unknown so that it can be counted and logged.
func KindOf(node *corev3.Node) (kind Kind, known bool) {
	switch Kind(node.GetMetadata().GetFields()[ClientMetadataKey].GetStringValue()) {
	case KindGRPC:
		return KindGRPC, true
	case KindEnvoy:
		return KindEnvoy, true
	}
	ua := node.GetUserAgentName()
	switch {
	case strings.HasPrefix(ua, "gRPC "):
		return KindGRPC, true
	case ua == "envoy":
		return KindEnvoy, true
	}
	return KindEnvoy, false
}
