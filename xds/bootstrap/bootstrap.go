// Package bootstrap writes the bootstrap files that point clients at Holdfast: gRPC's (for
// grpc-go, gRPC for Node and gRPC C-core, each with what it supports) and Envoy's, with the
// node metadata that says a client's kind and locality.
package bootstrap

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/holdfast/holdfast/xds/resource"
	"github.com/holdfast/holdfast/xds/translate"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
)

// Client implementations a bootstrap can be written for. They differ in what their bootstrap
// parsers accept (docs/clients.md has the whole matrix).
const (
	// ClientGRPCGo is grpc-go: "tls" channel credentials (gRFC A65) speak TLS to Holdfast.
	ClientGRPCGo = "grpc-go"
	// ClientGRPCNode is gRPC for Node (@grpc/grpc-js-xds): "insecure" and "google_default"
	// channel credentials only, and a node with a locality.
	ClientGRPCNode = "grpc-node"
	// ClientGRPCCore is gRPC C-core (C++, Python, Ruby, PHP) as tested (1.51): no "tls"
	// channel credentials.
	ClientGRPCCore = "grpc-core"
	// ClientGRPCJava is grpc-java (1.85): it takes "tls" channel credentials but ignores their
	// files (its TlsXdsCredentialsProvider returns TlsChannelCredentials.create(): the system's
	// trust roots, no client certificate), so it cannot check a private CA or present a
	// certificate to Holdfast.
	ClientGRPCJava = "grpc-java"
	// ClientEnvoy is Envoy.
	ClientEnvoy = "envoy"
)

// Clients lists the client implementations, for help texts.
var Clients = []string{ClientGRPCGo, ClientGRPCJava, ClientGRPCNode, ClientGRPCCore, ClientEnvoy}

// speaksTLS says whether a gRPC implementation's bootstrap can speak TLS to its xDS server.
func speaksTLS(client string) bool { return client == "" || client == ClientGRPCGo }

// Options describe the client a bootstrap is for.
type Options struct {
	// Client is the gRPC implementation a gRPC bootstrap is for (ClientGRPCGo when empty).
	Client string
	NodeID string
	// Server is the xDS server's address: host:port (Holdfast), or unix:///path (a local
	// holdfast-agent on a Unix socket).
	Server string
	// Fallbacks are further xDS servers (another Holdfast deployment, say), tried in order
	// when the ones before them fail (gRFC A71): listed after Server in a gRPC bootstrap's
	// xds_servers, with the same channel credentials. Clients that predate A71 use Server only
	// (docs/clients.md); Envoy has no such list, and a bootstrap for it refuses them.
	Fallbacks []string
	Zone      string
	Region    string
	// ClusterID is the Kubernetes cluster the client runs in (node metadata
	// holdfast.io/cluster): cluster-set services send it its own cluster's endpoints first.
	ClusterID string
	// Delta makes an Envoy bootstrap use incremental (Delta) ADS.
	Delta bool
	// CAFile, set, makes the client speak TLS to Holdfast and check its certificate against
	// this bundle; CertFile and KeyFile add a client certificate (mTLS). Paths on the client's
	// machine; grpc-go and Envoy reload the files when they change.
	CAFile, CertFile, KeyFile string
}

func (o Options) tls() bool { return o.CAFile != "" || o.CertFile != "" }

func (o Options) validate() (host string, port uint32, err error) {
	if o.NodeID == "" {
		return "", 0, fmt.Errorf("bootstrap: a node id is required")
	}
	if (o.CertFile == "") != (o.KeyFile == "") {
		return "", 0, fmt.Errorf("bootstrap: a client certificate and its key go together")
	}
	if o.CertFile != "" && o.CAFile == "" {
		return "", 0, fmt.Errorf("bootstrap: a client certificate needs the CA of Holdfast's certificate")
	}
	if o.Client != "" && !slices.Contains(Clients, o.Client) {
		return "", 0, fmt.Errorf("bootstrap: client %q: want one of %s", o.Client, strings.Join(Clients, ", "))
	}
	for i, f := range o.Fallbacks {
		if _, _, err := o.address(f); err != nil {
			return "", 0, fmt.Errorf("bootstrap: fallback %w", err)
		}
		if f == o.Server || slices.Contains(o.Fallbacks[:i], f) {
			return "", 0, fmt.Errorf("bootstrap: server %q listed twice", f)
		}
	}
	host, port, err = o.address(o.Server)
	if err != nil {
		return "", 0, fmt.Errorf("bootstrap: %w", err)
	}
	return host, port, nil
}

// address checks one server address: host:port, or unix:///path without TLS. A Unix socket
// has no host or port.
func (o Options) address(server string) (host string, port uint32, err error) {
	if path, ok := pipe(server); ok {
		if o.tls() {
			return "", 0, fmt.Errorf("server %q: a Unix socket (a local agent) is not TLS", server)
		}
		if !strings.HasPrefix(path, "/") {
			return "", 0, fmt.Errorf("server %q: want unix:///absolute/path", server)
		}
		return "", 0, nil
	}
	h, p, err := net.SplitHostPort(server)
	if err != nil {
		return "", 0, fmt.Errorf("server %q: %w", server, err)
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil || n == 0 {
		return "", 0, fmt.Errorf("server %q: port must be 1-65535", server)
	}
	if h == "" {
		return "", 0, fmt.Errorf("server %q: a host is required", server)
	}
	return h, uint32(n), nil
}

// pipe returns the Unix socket path of a unix:// server.
func pipe(server string) (string, bool) { return strings.CutPrefix(server, "unix://") }

// pipe returns the Unix socket path of the server, if it is a unix:// one.
func (o Options) pipe() (string, bool) { return pipe(o.Server) }

func (o Options) metadata(kind resource.Kind) map[string]any {
	md := map[string]any{resource.ClientMetadataKey: string(kind)}
	if o.ClusterID != "" {
		md[resource.ClusterMetadataKey] = o.ClusterID
	}
	return md
}

// GRPC returns the JSON bootstrap a proxyless gRPC client reads from
// GRPC_XDS_BOOTSTRAP. Its node always has a locality (grpc-js-xds refuses a node without one,
// and says so misleadingly). TLS to Holdfast is written only for an implementation that has
// "tls" channel credentials (gRFC A65); for the others the error says what to do instead. A
// bootstrap never lists "insecure" after "tls": clients take the first type they support, so
// that would silently drop them to plaintext.
func GRPC(o Options) ([]byte, error) {
	if _, _, err := o.validate(); err != nil {
		return nil, err
	}
	if o.Client == ClientEnvoy {
		return nil, fmt.Errorf("bootstrap: envoy reads an Envoy bootstrap, not a gRPC one")
	}
	if o.tls() && !speaksTLS(o.Client) {
		why := "has no TLS channel credentials for its xDS server (gRFC A65; it accepts only insecure)"
		if o.Client == ClientGRPCJava {
			why = "takes \"tls\" channel credentials but ignores their files (grpc-java 1.85: the system's trust roots, no client certificate)"
		}
		return nil, fmt.Errorf("bootstrap: %s %s: "+
			"run holdfast-agent on the node, with mTLS to Holdfast (--upstream-ca, --upstream-cert, --upstream-key), and point the client at it "+
			"over a Unix socket (--server unix:///var/run/holdfast/agent.sock): see docs/clients.md", o.Client, why)
	}
	type locality struct {
		Zone   string `json:"zone,omitempty"`
		Region string `json:"region,omitempty"`
	}
	node := map[string]any{"id": o.NodeID, "metadata": o.metadata(resource.KindGRPC), "locality": locality{Zone: o.Zone, Region: o.Region}}
	creds := map[string]any{"type": "insecure"}
	if o.tls() {
		// gRFC A65: TLS channel credentials whose files grpc-go watches and reloads.
		cfg := map[string]string{"ca_certificate_file": o.CAFile}
		if o.CertFile != "" {
			cfg["certificate_file"], cfg["private_key_file"] = o.CertFile, o.KeyFile
		}
		creds = map[string]any{"type": "tls", "config": cfg}
	}
	// A71: the servers in order of preference; a client falls back to the next only while the
	// ones before it fail and it lacks a resource it watches, and returns when they answer.
	var servers []any
	for _, uri := range append([]string{o.Server}, o.Fallbacks...) {
		servers = append(servers, map[string]any{
			"server_uri":      uri,
			"channel_creds":   []any{creds},
			"server_features": []string{"xds_v3"},
		})
	}
	b := map[string]any{"xds_servers": servers, "node": node}
	out, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	return append(out, '\n'), nil
}

// Envoy returns an Envoy bootstrap (JSON, which Envoy reads as YAML) that takes every
// listener and cluster from Holdfast over ADS. It passes Envoy's proto validation.
func Envoy(o Options) ([]byte, error) {
	b, err := EnvoyProto(o)
	if err != nil {
		return nil, err
	}
	raw, err := protojson.Marshal(b)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	// protojson varies its whitespace on purpose; re-indent for output that is stable byte for byte.
	var out bytes.Buffer
	if err := json.Indent(&out, raw, "", "  "); err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}

// EnvoyProto is Envoy's bootstrap as a proto.
func EnvoyProto(o Options) (*bootstrapv3.Bootstrap, error) {
	host, port, err := o.validate()
	if err != nil {
		return nil, err
	}
	if len(o.Fallbacks) > 0 {
		return nil, fmt.Errorf("bootstrap: Envoy has no fallback xDS servers (gRFC A71 is gRPC's): " +
			"run holdfast-agent beside it, which keeps serving from its cache while Holdfast is away (docs/clients.md)")
	}
	md, err := structpb.NewStruct(o.metadata(resource.KindEnvoy))
	if err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	h2, err := anypb.New(&upstreamhttpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{
			ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
					Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
				},
			},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	discovery := clusterv3.Cluster_STRICT_DNS
	address := translate.SocketAddress(host, port)
	if _, err := netip.ParseAddr(host); err == nil {
		discovery = clusterv3.Cluster_STATIC
	}
	if path, ok := o.pipe(); ok {
		discovery = clusterv3.Cluster_STATIC
		address = &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: path}}}
	}
	apiType := corev3.ApiConfigSource_GRPC
	if o.Delta {
		apiType = corev3.ApiConfigSource_DELTA_GRPC
	}
	const xdsCluster = "holdfast"
	node := &corev3.Node{Id: o.NodeID, Cluster: "holdfast-sidecar", Metadata: md}
	if o.Zone != "" || o.Region != "" {
		node.Locality = &corev3.Locality{Zone: o.Zone, Region: o.Region}
	}
	b := &bootstrapv3.Bootstrap{
		Node: node,
		DynamicResources: &bootstrapv3.Bootstrap_DynamicResources{
			AdsConfig: &corev3.ApiConfigSource{
				ApiType:             apiType,
				TransportApiVersion: corev3.ApiVersion_V3,
				GrpcServices: []*corev3.GrpcService{{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
					EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: xdsCluster},
				}}},
				SetNodeOnFirstMessageOnly: true,
			},
			CdsConfig: translate.ADSSource(),
			LdsConfig: translate.ADSSource(),
		},
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{Clusters: []*clusterv3.Cluster{{
			Name:                 xdsCluster,
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: discovery},
			ConnectTimeout:       durationpb.New(time.Second),
			TypedExtensionProtocolOptions: map[string]*anypb.Any{
				translate.HTTPProtocolOptionsName: h2,
			},
			LoadAssignment: &endpointv3.ClusterLoadAssignment{
				ClusterName: xdsCluster,
				Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
					HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
						Address: address,
					}},
				}}}},
			},
		}}},
		Admin: &bootstrapv3.Admin{Address: translate.SocketAddress("127.0.0.1", 9901)},
	}
	if o.tls() {
		ts, err := upstreamTLS(o, host)
		if err != nil {
			return nil, err
		}
		b.StaticResources.Clusters[0].TransportSocket = ts
	}
	if err := b.ValidateAll(); err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	return b, nil
}

// upstreamTLS is the xDS cluster's TLS: Holdfast's certificate checked against the CA file and
// its name (host, as SNI and subject alt name), and the client certificate for mTLS. Envoy
// watches the files and reloads them.
func upstreamTLS(o Options, host string) (*corev3.TransportSocket, error) {
	ctx := &tlsv3.CommonTlsContext{
		AlpnProtocols: []string{"h2"},
		ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: o.CAFile}},
			MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
				SanType: sanType(host),
				Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: host}},
			}},
		}},
	}
	if o.CertFile != "" {
		ctx.TlsCertificates = []*tlsv3.TlsCertificate{{
			CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: o.CertFile}},
			PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: o.KeyFile}},
		}}
	}
	utc := &tlsv3.UpstreamTlsContext{CommonTlsContext: ctx}
	if sanType(host) == tlsv3.SubjectAltNameMatcher_DNS {
		utc.Sni = host
	}
	a, err := anypb.New(utc)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: a}}, nil
}

func sanType(host string) tlsv3.SubjectAltNameMatcher_SanType {
	if _, err := netip.ParseAddr(host); err == nil {
		return tlsv3.SubjectAltNameMatcher_IP_ADDRESS
	}
	return tlsv3.SubjectAltNameMatcher_DNS
}
