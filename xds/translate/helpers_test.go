package translate

import (
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"github.com/holdfast/holdfast/resolver"
	"github.com/holdfast/holdfast/xds/internal/xdstest"
	"github.com/holdfast/holdfast/xds/resource"
)

var testTranslator = Translator{Naming: Naming{Domain: xdstest.Domain}, EnvoyListenAddress: "127.0.0.1"}

// view is a state to translate: services, and earlier incarnations served beside them.
type view struct {
	services, retired map[resolver.Key]*resolver.Service
}

func testView(services ...*resolver.Service) view {
	return view{services: xdstest.Services(services...)}
}

// assembleSets translates v with a new Builder and assembles it, without the reference check.
func assembleSets(t *testing.T, v view) resource.Set {
	t.Helper()
	b := NewBuilder(testTranslator)
	var res Result
	b.update(v.services, &res)
	b.updateRetired(v.retired, &res)
	set, errs := b.assemble()
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	return set
}

// assembleView is assembleSets as plain messages.
func assembleView(t *testing.T, v view) map[resource.Kind]map[resource.Type][]types.Resource {
	t.Helper()
	out := map[resource.Kind]map[resource.Type][]types.Resource{}
	for kind, set := range assembleSets(t, v) {
		out[kind] = plain(set)
	}
	return out
}

// plain is one kind's resources as plain messages, by type.
func plain(set map[resource.Type][]*resource.Resource) map[resource.Type][]types.Resource {
	out := make(map[resource.Type][]types.Resource, len(set))
	for typ, l := range set {
		out[typ] = resource.Messages(l)
	}
	return out
}

func resourceNames(rs []types.Resource) []string {
	var out []string
	for _, r := range rs {
		out = append(out, resource.NameOf(r))
	}
	return out
}
