package resource

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

func TestKindOf(t *testing.T) {
	md := func(v string) *structpb.Struct {
		s, _ := structpb.NewStruct(map[string]any{ClientMetadataKey: v})
		return s
	}
	tests := []struct {
		node      *corev3.Node
		want      Kind
		wantKnown bool
	}{
		{&corev3.Node{UserAgentName: "gRPC Go"}, KindGRPC, true},
		{&corev3.Node{UserAgentName: "gRPC Java"}, KindGRPC, true},
		{&corev3.Node{UserAgentName: "envoy"}, KindEnvoy, true},
		{&corev3.Node{UserAgentName: "envoy", Metadata: md("grpc")}, KindGRPC, true},
		{&corev3.Node{UserAgentName: "gRPC Go", Metadata: md("envoy")}, KindEnvoy, true},
		{&corev3.Node{UserAgentName: "curl"}, KindEnvoy, false},
		{nil, KindEnvoy, false},
	}
	for _, tt := range tests {
		got, known := KindOf(tt.node)
		if got != tt.want || known != tt.wantKnown {
			t.Errorf("KindOf(%v) = %v,%v want %v,%v", tt.node, got, known, tt.want, tt.wantKnown)
		}
	}
}
