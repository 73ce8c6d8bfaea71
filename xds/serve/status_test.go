package serve

import (
	"testing"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/holdfast/holdfast/xds/internal/xdstest"
	"github.com/holdfast/holdfast/xds/resource"
)

func TestTypeStatusResources(t *testing.T) {
	a, b := xdstest.TwoServices()
	sets := build(t, a, b)[resource.KindGRPC]
	snap := &Snapshot{types: map[resourcev3.Type]*typeIndex{resourcev3.EndpointType: newTypeIndex(sets[resourcev3.EndpointType])}}
	na, nb := testTranslator.Naming.Resource(a.Key, 80), testTranslator.Naming.Resource(b.Key, 80)
	ra, _ := snap.Get(resourcev3.EndpointType, na)
	rb, _ := snap.Get(resourcev3.EndpointType, nb)
	tests := []struct {
		name string
		ts   TypeStatus
		want map[string]ResourceState
	}{
		{"acked", TypeStatus{Names: []string{na}, Sent: map[string]string{na: ra.Version}}, map[string]ResourceState{na: Acked}},
		{"subscribed, not sent yet", TypeStatus{Names: []string{na}, Sent: map[string]string{}}, map[string]ResourceState{na: Requested}},
		{"in flight", TypeStatus{Names: []string{na}, Sent: map[string]string{na: ra.Version}, InFlight: true,
			InFlightResources: map[string]string{na: ra.Version}}, map[string]ResourceState{na: Requested}},
		{"nacked", TypeStatus{Names: []string{na, nb}, Sent: map[string]string{na: "bad", nb: rb.Version},
			Nacked: &NackRecord{At: time.Now(), Resources: map[string]string{na: "bad"}}, Rejected: map[string]string{na: "bad"}}, map[string]ResourceState{na: Nacked, nb: Acked}},
		{"told it does not exist", TypeStatus{Names: []string{"gone"}, Sent: map[string]string{"gone": ""}}, map[string]ResourceState{"gone": DoesNotExist}},
		{"subscribed to nothing that exists", TypeStatus{Names: []string{"never"}, Sent: map[string]string{}}, map[string]ResourceState{"never": DoesNotExist}},
		{"wildcard: what it holds", TypeStatus{Wildcard: true, Sent: map[string]string{na: ra.Version, nb: "older"}}, map[string]ResourceState{na: Acked, nb: Acked}},
	}
	for _, tt := range tests {
		got := tt.ts.Resources(snap, resourcev3.EndpointType)
		if len(got) != len(tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
			continue
		}
		for i, r := range got {
			if tt.want[r.Name] != r.State || (i > 0 && got[i-1].Name >= r.Name) {
				t.Errorf("%s: %v, want %v (sorted by name)", tt.name, got, tt.want)
			}
		}
	}
}
