package serve

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"

	"github.com/holdfast/holdfast/xds/resource"
	"github.com/holdfast/holdfast/xds/serve/internal/wire"
)

// The stream sets must read exactly like plain maps whatever index they are rebased on,
// linked to the previous one or not, and must actually take the compact form when a client
// is in step with its index.
func TestStreamSetsMatchPlainMaps(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { streamSetsMatch(t, seed) })
	}
}

func streamSetsMatch(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 7))
	const universe = 60
	name := func(i int) string { return fmt.Sprintf("r%02d", i) }
	// An index holds a random subset of the universe at random versions; the next one changes
	// a few of them, as a publish does.
	contents := map[string]string{}
	for i := range universe {
		if rng.IntN(4) != 0 {
			contents[name(i)] = fmt.Sprintf("%016x", rng.Uint64())
		}
	}
	index := func(c map[string]string) *typeIndex {
		var l []*resource.Resource
		for n, v := range c {
			l = append(l, testResource(n, v, rng.Uint64()))
		}
		return newTypeIndex(l)
	}
	idx := index(contents)
	var keep []*typeIndex // the indexes a linked rebase needs alive, as the snapshot keeps them

	var sent sentSet
	var names nameSet
	wantSent, wantNames := map[string]string{}, map[string]bool{}
	compact := 0
	// views checks what the sets say about idx, which need not be their base (a push compares
	// them with the new index before rebasing on it).
	views := func(step int, what string) {
		t.Helper()
		var sorted []string
		for n, in := range wantNames {
			if in {
				sorted = append(sorted, n)
			}
		}
		slices.Sort(sorted)
		for _, r := range idx.list {
			v, ok := wantSent[r.Name]
			if want := !ok || v != r.Version; sent.lacks(r) != want {
				t.Fatalf("step %d (%s): sent.lacks(%s@%s) = %v, want %v", step, what, r.Name, r.Version, !want, want)
			}
		}
		outside := map[string]string{}
		sent.eachOutside(idx, func(n, v string) { outside[n] = v })
		wantOutside := map[string]string{}
		for n, v := range wantSent {
			if _, in := idx.byName[n]; !in {
				wantOutside[n] = v
			}
		}
		if !maps.Equal(outside, wantOutside) {
			t.Fatalf("step %d (%s): sent.eachOutside(idx) = %v, want %v", step, what, outside, wantOutside)
		}
		var inIdx []string
		var xor uint64
		for _, n := range sorted {
			if r, ok := idx.byName[n]; ok {
				inIdx = append(inIdx, n)
				xor ^= r.Hash()
			}
		}
		rs, gotXor := names.in(idx)
		got := make([]string, len(rs))
		for i, r := range rs {
			got[i] = r.Name
			if idx.byName[r.Name] != r {
				t.Fatalf("step %d (%s): names.in gave a resource not idx's: %s", step, what, r.Name)
			}
		}
		if !slices.Equal(got, inIdx) || gotXor != xor {
			t.Fatalf("step %d (%s): names.in(idx) = %v (xor %x), want %v (xor %x)", step, what, got, gotXor, inIdx, xor)
		}
		var notInIdx []string
		for _, n := range sorted {
			if _, ok := idx.byName[n]; !ok {
				notInIdx = append(notInIdx, n)
			}
		}
		if got := names.outside(idx); !slices.Equal(got, notInIdx) {
			t.Fatalf("step %d (%s): names.outside(idx) = %v, want %v", step, what, got, notInIdx)
		}
	}
	check := func(step int, what string) {
		t.Helper()
		for i := range universe + 2 {
			n := name(i)
			wv, wok := wantSent[n]
			if v, ok := sent.get(n); v != wv || ok != wok {
				t.Fatalf("step %d (%s): sent %s = %q,%v; want %q,%v", step, what, n, v, ok, wv, wok)
			}
			if names.has(n) != wantNames[n] {
				t.Fatalf("step %d (%s): names has %s = %v, want %v", step, what, n, names.has(n), wantNames[n])
			}
		}
		if got := sent.all(); !maps.Equal(got, wantSent) {
			t.Fatalf("step %d (%s): sent.all() = %v, want %v", step, what, got, wantSent)
		}
		if sent.size() != len(wantSent) {
			t.Fatalf("step %d (%s): sent.size() = %d, want %d", step, what, sent.size(), len(wantSent))
		}
		var sorted []string
		for n, in := range wantNames {
			if in {
				sorted = append(sorted, n)
			}
		}
		slices.Sort(sorted)
		if got := names.sortedNames(); !slices.Equal(got, sorted) {
			t.Fatalf("step %d (%s): names = %v, want %v", step, what, got, sorted)
		}
		if names.len() != len(sorted) {
			t.Fatalf("step %d (%s): names.len() = %d, want %d", step, what, names.len(), len(sorted))
		}
		views(step, what)
	}
	for step := range 400 {
		n := name(rng.IntN(universe + 2))
		var what string
		switch op := rng.IntN(13); op {
		case 0, 1:
			what = "set to the index's version"
			if r, ok := idx.byName[n]; ok {
				sent.set(n, r.Version)
				wantSent[n] = r.Version
			}
		case 2:
			v := fmt.Sprint(rng.IntN(3))
			sent.set(n, v)
			wantSent[n] = v
			what = "set " + n + " to " + v
		case 3:
			what = "set absent"
			sent.set(n, "")
			wantSent[n] = ""
		case 4:
			what = "remove " + n
			sent.remove(n)
			delete(wantSent, n)
		case 5, 6:
			what = "subscribe " + n
			if got := names.add(n); got == wantNames[n] {
				t.Fatalf("step %d: add(%s) = %v with the name already in: %v", step, n, got, wantNames[n])
			}
			wantNames[n] = true
		case 7:
			what = "unsubscribe " + n
			if got := names.remove(n); got != wantNames[n] {
				t.Fatalf("step %d: remove(%s) = %v with the name in: %v", step, n, got, wantNames[n])
			}
			delete(wantNames, n)
		case 8:
			// The client catches up: it is sent and subscribes to everything the index has.
			what = "catch up"
			for _, r := range idx.list {
				sent.set(r.Name, r.Version)
				wantSent[r.Name] = r.Version
				names.add(r.Name)
				wantNames[r.Name] = true
			}
		case 10:
			// A batch of subscriptions (an Envoy's first EDS request: most of the index).
			what = "subscribe many"
			var batch []string
			for i := range universe + 2 {
				if rng.IntN(5) != 0 {
					batch = append(batch, name(i))
				}
			}
			names.addMany(idx, batch, func(n string) string { return n })
			for _, n := range batch {
				wantNames[n] = true
			}
		case 11:
			// A push of many resources (a first push), some at versions the index does not have.
			what = "set many"
			var rs []*resource.Resource
			for _, r := range idx.list {
				switch rng.IntN(8) {
				case 0:
				case 1:
					rs = append(rs, testResource(r.Name, "other", 0))
				default:
					rs = append(rs, r)
				}
			}
			if rng.IntN(4) == 0 {
				rs = append(rs, testResource(name(universe), "x", 0)) // outside the index
			}
			sent.setMany(idx, rs)
			for _, r := range rs {
				wantSent[r.Name] = r.Version
			}
			if sent.base == idx {
				compact++
			}
		case 12:
			// A reconnecting client says what it holds (Delta's initial_resource_versions): the
			// stream starts over from those, in order, a later entry for a name winning.
			what = "initial versions"
			var vs []wire.NameVersion
			for _, r := range idx.list {
				switch rng.IntN(10) {
				case 0:
				case 1:
					vs = append(vs, wire.NameVersion{Name: r.Name, Version: "old"})
				case 2:
					vs = append(vs, wire.NameVersion{Name: r.Name, Version: "old"}, wire.NameVersion{Name: r.Name, Version: r.Version}) // repeated
				default:
					vs = append(vs, wire.NameVersion{Name: r.Name, Version: r.Version})
				}
			}
			if rng.IntN(3) == 0 {
				vs = append(vs, wire.NameVersion{Name: name(universe + 1), Version: "y"}) // outside the index
			}
			if rng.IntN(4) == 0 {
				rng.Shuffle(len(vs), func(i, j int) { vs[i], vs[j] = vs[j], vs[i] })
			}
			sent = sentSet{}
			clear(wantSent)
			sent.setVersions(idx, vs)
			for _, nv := range vs {
				wantSent[nv.Name] = nv.Version
			}
			if sent.base == idx {
				compact++
			}
		case 9:
			// A publish: a few resources change, appear or go; the stream is rebased on the
			// new index, linked to the old one or (a skipped publish) not.
			for range 1 + rng.IntN(4) {
				m := name(rng.IntN(universe))
				if rng.IntN(3) == 0 {
					delete(contents, m)
				} else {
					contents[m] = fmt.Sprintf("%016x", rng.Uint64())
				}
			}
			next := index(contents)
			linked := rng.IntN(4) != 0
			if linked {
				next.since(idx)
			}
			keep = append(keep, idx)
			idx = next
			what = fmt.Sprintf("rebase (linked %v)", linked)
			views(step, "before "+what)
			sent.rebase(idx)
			names.rebase(idx)
			if sent.base != nil && names.base != nil {
				compact++
			}
		}
		check(step, what)
	}
	if compact == 0 {
		t.Errorf("the sets never took the compact form")
	}
	runtime.KeepAlive(keep)
}

// A client that holds and wants (nearly) all of an index costs exceptions only; one that wants
// a few names keeps a plain map.
func TestStreamSetsCompactWhenInStep(t *testing.T) {
	var l []*resource.Resource
	for i := range 1000 {
		l = append(l, testResource(fmt.Sprintf("r%04d", i), "1", uint64(i)))
	}
	idx := newTypeIndex(l)
	tests := []struct {
		name        string
		subscribe   int // the first n names, subscribed and sent
		compact     bool
		maxEntries  int // map entries the sets may hold between them
		changeFirst bool
	}{
		{name: "all of the index", subscribe: 1000, compact: true, maxEntries: 0},
		{name: "all but a tenth", subscribe: 900, compact: true, maxEntries: 200},
		{name: "three names", subscribe: 3, compact: false, maxEntries: 6},
		{name: "a third", subscribe: 333, compact: false, maxEntries: 666},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var sent sentSet
			var names nameSet
			for _, r := range idx.list[:tc.subscribe] {
				names.add(r.Name)
				sent.set(r.Name, r.Version)
			}
			sent.rebase(idx)
			names.rebase(idx)
			if got := sent.base != nil && names.base != nil; got != tc.compact {
				t.Errorf("compact = %v, want %v", got, tc.compact)
			}
			if got := len(sent.over) + len(names.plus) + len(names.minus); got > tc.maxEntries {
				t.Errorf("%d map entries, want at most %d", got, tc.maxEntries)
			}
			// One resource changes and the client gets it: still as small, in O(changed).
			l2 := slices.Clone(l)
			l2[0] = testResource(l[0].Name, "2", 99999)
			next := newTypeIndex(l2)
			next.since(idx)
			sent.set(l2[0].Name, "2")
			sent.rebase(next)
			names.rebase(next)
			if got := len(sent.over) + len(names.plus) + len(names.minus); got > tc.maxEntries {
				t.Errorf("after a change: %d map entries, want at most %d", got, tc.maxEntries)
			}
			if v, _ := sent.get(l2[0].Name); v != "2" {
				t.Errorf("changed resource reads %q, want 2", v)
			}
			if sent.size() != tc.subscribe || names.len() != tc.subscribe {
				t.Errorf("sizes %d, %d; want %d", sent.size(), names.len(), tc.subscribe)
			}
		})
	}
}
