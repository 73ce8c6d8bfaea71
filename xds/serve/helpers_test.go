package serve

import (
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"

	"github.com/holdfast/holdfast/cache"
	"github.com/holdfast/holdfast/resolver"
	"github.com/holdfast/holdfast/xds/internal/xdstest"
	"github.com/holdfast/holdfast/xds/resource"
	"github.com/holdfast/holdfast/xds/translate"
)

var testTranslator = translate.Translator{Naming: translate.Naming{Domain: xdstest.Domain}, EnvoyListenAddress: "127.0.0.1"}

func testView(services ...*resolver.Service) cache.View {
	return cache.View{Services: xdstest.Services(services...), Synced: true, Generation: 1}
}

// build translates services into every kind's resources.
func build(t *testing.T, services ...*resolver.Service) resource.Set {
	t.Helper()
	res, err := translate.NewBuilder(testTranslator).Build(xdstest.Services(services...), nil)
	if err != nil {
		t.Fatal(err)
	}
	return res.Set
}

// testResource is a resource named name at version, with hash as its content hash (a cluster
// of that name underneath: only what streams keep of it matters).
func testResource(name, version string, hash uint64) *resource.Resource {
	r := resource.NewHashed(&clusterv3.Cluster{Name: name}, nil, hash)
	r.Version = version
	return r
}
