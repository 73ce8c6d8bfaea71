package wire

import (
	"fmt"
	"slices"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"

	"github.com/holdfast/holdfast/xds/resource"
)

// testIndex is an Index over a sorted list: what the serving side's index is to the codec.
type testIndex struct {
	list   []*resource.Resource
	byName map[string]*resource.Resource
}

func newTestIndex(l []*resource.Resource) *testIndex {
	idx := &testIndex{list: slices.Clone(l), byName: map[string]*resource.Resource{}}
	slices.SortFunc(idx.list, func(a, b *resource.Resource) int { return strings.Compare(a.Name, b.Name) })
	for _, r := range idx.list {
		idx.byName[r.Name] = r
	}
	return idx
}

func (idx *testIndex) Lookup(hint int, name []byte) (*resource.Resource, int) {
	if hint < len(idx.list) && idx.list[hint].Name == string(name) {
		return idx.list[hint], hint + 1
	}
	return idx.byName[string(name)], hint
}

func (idx *testIndex) Position(hint int, name string) (int, bool) {
	if hint >= 0 && hint < len(idx.list) && idx.list[hint].Name == name {
		return hint, true
	}
	return slices.BinarySearchFunc(idx.list, name, func(r *resource.Resource, n string) int { return strings.Compare(r.Name, n) })
}

func (idx *testIndex) At(i int) *resource.Resource { return idx.list[i] }
func (idx *testIndex) Len() int                    { return len(idx.list) }

func (idx *testIndex) Joined(shape resource.Shape) ([]byte, []int) {
	var buf []byte
	offs := make([]int, 0, len(idx.list)+1)
	for _, r := range idx.list {
		offs = append(offs, len(buf))
		buf = append(buf, r.Bytes(shape)...)
	}
	return buf, append(offs, len(buf))
}

// namesIndex is an index of resources with these names (clusters, versions 1, 2, ...).
func namesIndex(names ...string) *testIndex {
	var l []*resource.Resource
	for i, n := range names {
		r := resource.New(&clusterv3.Cluster{Name: strings.Clone(n)})
		r.Version = fmt.Sprint(i + 1)
		l = append(l, r)
	}
	return newTestIndex(l)
}
