package bootstrap

import (
	"encoding/json"
	"strings"
	"testing"

	xdsgrpc "google.golang.org/grpc/xds"
)

// TestFallbackServers: fallbacks follow the primary in xds_servers, in order and with the same
// channel credentials (gRFC A71); grpc-go's own parser takes the result; bad lists are refused.
func TestFallbackServers(t *testing.T) {
	type server struct {
		URI   string `json:"server_uri"`
		Creds []struct {
			Type string `json:"type"`
		} `json:"channel_creds"`
		Features []string `json:"server_features"`
	}
	for _, tt := range []struct {
		name      string
		o         Options
		wantURIs  []string
		wantCreds string
		wantErr   string
	}{
		{name: "none", o: Options{NodeID: "n", Server: "a:1"}, wantURIs: []string{"a:1"}, wantCreds: "insecure"},
		{name: "two", o: Options{NodeID: "n", Server: "a:1", Fallbacks: []string{"b:2", "c:3"}}, wantURIs: []string{"a:1", "b:2", "c:3"}, wantCreds: "insecure"},
		{name: "tls for each", o: Options{NodeID: "n", Server: "a:1", Fallbacks: []string{"b:2"}, CAFile: "/ca.pem"}, wantURIs: []string{"a:1", "b:2"}, wantCreds: "tls"},
		{name: "agent first, Holdfast next", o: Options{NodeID: "n", Client: ClientGRPCNode, Server: "unix:///run/agent.sock", Fallbacks: []string{"holdfast:18000"}},
			wantURIs: []string{"unix:///run/agent.sock", "holdfast:18000"}, wantCreds: "insecure"},
		{name: "no port", o: Options{NodeID: "n", Server: "a:1", Fallbacks: []string{"b"}}, wantErr: `fallback server "b"`},
		{name: "port zero", o: Options{NodeID: "n", Server: "a:1", Fallbacks: []string{"b:0"}}, wantErr: "port must be 1-65535"},
		{name: "twice", o: Options{NodeID: "n", Server: "a:1", Fallbacks: []string{"b:2", "b:2"}}, wantErr: `"b:2" listed twice`},
		{name: "the primary again", o: Options{NodeID: "n", Server: "a:1", Fallbacks: []string{"a:1"}}, wantErr: `"a:1" listed twice`},
		{name: "unix with tls", o: Options{NodeID: "n", Server: "a:1", Fallbacks: []string{"unix:///s"}, CAFile: "/ca.pem"}, wantErr: "not TLS"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out, err := GRPC(tt.o)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one saying %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var b struct {
				Servers []server `json:"xds_servers"`
			}
			if err := json.Unmarshal(out, &b); err != nil {
				t.Fatal(err)
			}
			var uris []string
			for _, s := range b.Servers {
				uris = append(uris, s.URI)
				if len(s.Creds) != 1 || s.Creds[0].Type != tt.wantCreds {
					t.Errorf("%s: channel_creds %+v, want one of type %s", s.URI, s.Creds, tt.wantCreds)
				}
				if len(s.Features) != 1 || s.Features[0] != "xds_v3" {
					t.Errorf("%s: server_features %v", s.URI, s.Features)
				}
			}
			if strings.Join(uris, " ") != strings.Join(tt.wantURIs, " ") {
				t.Errorf("xds_servers = %v, want %v", uris, tt.wantURIs)
			}
			if tt.wantCreds == "insecure" { // grpc-go's own parser (tls needs the files to exist)
				if _, err := xdsgrpc.NewXDSResolverWithConfigForTesting(out); err != nil {
					t.Errorf("grpc-go rejects the bootstrap: %v\n%s", err, out)
				}
			}
		})
	}
}

// TestEnvoyRefusesFallbacks: Envoy's bootstrap has no list of xDS servers to fall back on.
func TestEnvoyRefusesFallbacks(t *testing.T) {
	_, err := Envoy(Options{NodeID: "n", Server: "a:1", Fallbacks: []string{"b:2"}})
	if err == nil || !strings.Contains(err.Error(), "Envoy has no fallback") {
		t.Fatalf("err = %v, want the refusal", err)
	}
	if _, err := Envoy(Options{NodeID: "n", Server: "a:1"}); err != nil {
		t.Fatal(err)
	}
}
