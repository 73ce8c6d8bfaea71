package resource

import (
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
)

// An upstream's resource is checked before it is served again: a bad one is an error.
func TestFromWire(t *testing.T) {
	good, err := proto.Marshal(&clusterv3.Cluster{Name: "c1", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, typ, resName, version string
		value                       []byte
		wantErr                     string
	}{
		{name: "valid", typ: resourcev3.ClusterType, resName: "c1", version: "v1", value: good},
		{name: "type not served", typ: resourcev3.SecretType, resName: "c1", version: "v1", value: good, wantErr: "is not served"},
		{name: "bytes not a message", typ: resourcev3.ClusterType, resName: "c1", version: "v1", value: []byte{0xff}, wantErr: `resource "c1"`},
		{name: "name differs", typ: resourcev3.ClusterType, resName: "c2", version: "v1", value: good, wantErr: `names "c1"`},
		{name: "no version", typ: resourcev3.ClusterType, resName: "c1", version: "", value: good, wantErr: "no version"},
		// A stream's state uses "\x00" to mark a resource it does not hold.
		{name: "version is the not-held mark", typ: resourcev3.ClusterType, resName: "c1", version: NoVersion, value: good, wantErr: "no version"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := FromWire(tc.typ, tc.resName, tc.version, tc.value)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.Name != tc.resName || r.Version != tc.version || string(r.Any.Value) != string(tc.value) || r.deltaBuf == nil || r.sotwBuf == nil {
				t.Fatalf("resource %+v", r)
			}
		})
	}
}
