package serve

import (
	"slices"
	"strings"
	"weak"

	"github.com/holdfast/holdfast/xds/resource"
	"github.com/holdfast/holdfast/xds/serve/internal/wire"
)

// A stream keeps, per type, the names its client subscribed to and the version of every
// resource it was sent. At 10,000 services and 1,000 clients, plain maps of these held more
// than a gigabyte, though almost every client holds almost exactly the index it was last
// pushed. So both sets are kept as "an index plus exceptions" while that is much smaller than
// a plain map, and as a plain map otherwise (a gRPC client subscribed to three names). An
// index is immutable and shared by every stream, so a stream in step with it costs a few
// words.
//
// Both are rebased on the index a stream is pushed: in O(changed) when the new index records
// the old one as its base (see typeIndex.since), from scratch otherwise.

// resource.NoVersion marks, among a sentSet's exceptions, a name of its base the client does
// not have; "" means "told it does not exist". No resource has either as its version.

// sentSet is what a client was sent of one type and may hold: name → version, "" meaning it
// was told the resource does not exist. The zero value is empty.
type sentSet struct {
	// base, when set, says the client holds base's version of each of base's resources,
	// except where over says otherwise.
	base *typeIndex
	over map[string]string
}

func (s *sentSet) get(n string) (string, bool) {
	if v, ok := s.over[n]; ok {
		if v == resource.NoVersion {
			return "", false
		}
		return v, true
	}
	if s.base != nil {
		if r, ok := s.base.byName[n]; ok {
			return r.Version, true
		}
	}
	return "", false
}

func (s *sentSet) set(n, v string) {
	if s.base != nil {
		if r, ok := s.base.byName[n]; ok && r.Version == v {
			delete(s.over, n)
			return
		}
	}
	if s.over == nil {
		s.over = map[string]string{}
	}
	s.over[n] = v
}

func (s *sentSet) remove(n string) {
	if s.base != nil {
		if _, ok := s.base.byName[n]; ok {
			s.set(n, resource.NoVersion)
			return
		}
	}
	delete(s.over, n)
}

func (s *sentSet) empty() bool { return s.base == nil && len(s.over) == 0 }

// setMany sets each resource's version, as set does one by one. An empty set that ends up
// holding most of idx is built on idx directly, without a map entry per resource: this is every
// client's first push.
func (s *sentSet) setMany(idx *typeIndex, rs []*resource.Resource) {
	if s.mayBaseOn(idx, len(rs)) {
		marks := make([]bool, len(idx.list))
		over := map[string]string{}
		next := 0 // rs usually follows idx.list's order
		for _, r := range rs {
			if i, ok := idx.positionFrom(next, r.Name); ok && idx.list[i].Version == r.Version {
				marks[i] = true
				next = i + 1
			} else {
				over[r.Name] = r.Version
			}
		}
		if s.baseOn(idx, over, len(rs), func(i int, _ *resource.Resource) bool { return marks[i] }) {
			return
		}
	}
	if s.empty() {
		s.base, s.over = nil, make(map[string]string, len(rs))
	}
	for _, r := range rs {
		s.set(r.Name, r.Version)
	}
}

// setVersions sets each name's version in order (a later one for a name wins), as set does one
// by one. An empty set that ends up holding most of idx at idx's versions is built on idx
// directly: this is a reconnecting Envoy's initial_resource_versions.
func (s *sentSet) setVersions(idx *typeIndex, vs []wire.NameVersion) {
	if s.mayBaseOn(idx, len(vs)) {
		// Entries come in any order (a map on the client): looked up by name, and the index's
		// resources held at its version kept by identity.
		held := make(map[*resource.Resource]struct{}, len(vs))
		over := map[string]string{}
		for _, nv := range vs {
			if r, ok := idx.byName[nv.Name]; ok && r.Version == nv.Version {
				held[r] = struct{}{}
				delete(over, nv.Name)
			} else {
				if ok {
					delete(held, r)
				}
				over[nv.Name] = nv.Version
			}
		}
		isHeld := func(_ int, r *resource.Resource) bool { _, h := held[r]; return h }
		if len(held) == len(idx.list) {
			isHeld = nil // all of it: nothing to mark
		}
		if s.baseOn(idx, over, len(vs), isHeld) {
			return
		}
	}
	for _, nv := range vs {
		s.set(nv.Name, nv.Version)
	}
}

// mayBaseOn says whether setting n entries on the set could leave it best kept on idx: it is
// empty, and n is at least half of idx.
func (s *sentSet) mayBaseOn(idx *typeIndex, n int) bool {
	return s.empty() && idx != nil && len(idx.list) > 0 && n*2 >= len(idx.list)
}

// baseOn makes the (empty) set "idx plus over" if that is compact for the n entries set, and
// says whether it did. Every resource of idx that held (nil: all are) says the client does not
// hold at idx's version, and over does not mention, is marked not held.
func (s *sentSet) baseOn(idx *typeIndex, over map[string]string, n int, held func(i int, r *resource.Resource) bool) bool {
	if held != nil {
		for i, r := range idx.list {
			if _, o := over[r.Name]; !o && !held(i, r) {
				over[r.Name] = resource.NoVersion
			}
		}
	}
	if len(over)*2 >= n {
		return false
	}
	s.base, s.over = idx, over
	return true
}

// lacks says whether the client was not sent r's version of r: it does not hold it, or holds
// another version.
func (s *sentSet) lacks(r *resource.Resource) bool {
	if v, ok := s.over[r.Name]; ok {
		return v != r.Version
	}
	if s.base == nil {
		return true
	}
	b, ok := s.base.byName[r.Name]
	return !ok || b.Version != r.Version
}

// lacking returns the resources of rs the client lacks (see lacks): rs itself when the set is
// empty, as on a first push.
func (s *sentSet) lacking(rs []*resource.Resource) []*resource.Resource {
	if s.empty() {
		return rs
	}
	var out []*resource.Resource
	for _, r := range rs {
		if s.lacks(r) {
			out = append(out, r)
		}
	}
	return out
}

// eachOutside calls f with every entry whose name idx has no resource of.
func (s *sentSet) eachOutside(idx *typeIndex, f func(name, version string)) {
	for n, v := range s.over {
		if _, in := idx.byName[n]; !in && v != resource.NoVersion {
			f(n, v)
		}
	}
	if s.base == nil || s.base == idx {
		return // every name of the base is in idx
	}
	for _, r := range s.base.list {
		if _, in := idx.byName[r.Name]; in {
			continue
		}
		if _, o := s.over[r.Name]; !o {
			f(r.Name, r.Version)
		}
	}
}

// positionFrom is where name is in idx.list, looked for at hint first: callers walking names in
// the index's order find each at the place after the last in O(1).
func (idx *typeIndex) positionFrom(hint int, name string) (int, bool) {
	if hint >= 0 && hint < len(idx.list) && idx.list[hint].Name == name {
		return hint, true
	}
	return byName(idx.list, name)
}

// byName is where name is in list, sorted by name.
func byName(list []*resource.Resource, name string) (int, bool) {
	return slices.BinarySearchFunc(list, name, func(r *resource.Resource, n string) int { return strings.Compare(r.Name, n) })
}

// all returns every entry, name → version.
func (s *sentSet) all() map[string]string {
	size := len(s.over)
	if s.base != nil {
		size += len(s.base.list)
	}
	out := make(map[string]string, size)
	for n, v := range s.over {
		if v != resource.NoVersion {
			out[n] = v
		}
	}
	if s.base != nil {
		for _, r := range s.base.list {
			if _, ok := s.over[r.Name]; !ok {
				out[r.Name] = r.Version
			}
		}
	}
	return out
}

// size is how many entries the set holds.
func (s *sentSet) size() int {
	if s.base == nil {
		return len(s.over)
	}
	n := len(s.base.list)
	for name, v := range s.over {
		_, inBase := s.base.byName[name]
		switch {
		case inBase && v == resource.NoVersion:
			n--
		case !inBase:
			n++
		}
	}
	return n
}

// rebase keeps the set's content and expresses it relative to idx when that is much smaller
// than a plain map.
func (s *sentSet) rebase(idx *typeIndex) {
	if s.base == idx {
		return
	}
	if s.base != nil && idx.base == weak.Make(s.base) {
		// Only the names idx changed can read differently through it.
		type entry struct {
			name, v string
			ok      bool
		}
		keep := make([]entry, len(idx.changed))
		for i, n := range idx.changed {
			v, ok := s.get(n)
			keep[i] = entry{n, v, ok}
		}
		s.base = idx
		for _, e := range keep {
			if e.ok {
				s.set(e.name, e.v)
			} else {
				s.remove(e.name)
			}
		}
		if len(s.over) <= len(idx.list)/2 {
			return
		}
	}
	// From scratch, without copying the set: worth trying only when the client may hold at
	// least half of idx.
	if s.base == nil && len(s.over) < len(idx.list)/2 {
		return
	}
	// Against idx, the exceptions are idx's resources held at another version or not at all,
	// and whatever is held outside idx.
	over := map[string]string{}
	held := 0
	for _, r := range idx.list {
		switch v, ok := s.get(r.Name); {
		case !ok:
			over[r.Name] = resource.NoVersion
		case v != r.Version:
			over[r.Name] = v
			held++
		default:
			held++
		}
	}
	outside := func(n, v string) {
		if _, in := idx.byName[n]; !in {
			over[n] = v
			held++
		}
	}
	for n, v := range s.over {
		if v != resource.NoVersion {
			outside(n, v)
		}
	}
	if s.base != nil {
		for _, r := range s.base.list {
			if _, o := s.over[r.Name]; !o {
				outside(r.Name, r.Version)
			}
		}
	}
	switch {
	case len(over)*2 < held:
		s.base, s.over = idx, over
	case s.base != nil:
		s.base, s.over = nil, s.all()
	}
}

// nameSet is the names a client subscribed to by name. The zero value is empty.
type nameSet struct {
	// base, when set, says every name of base's resources is in the set unless in minus.
	base  *typeIndex
	plus  map[string]struct{} // in the set, not in base
	minus map[string]struct{} // in base, not in the set
	n     int
	// sorted caches the names in order for a set without base (nil: recompute).
	sorted []string
}

func (s *nameSet) has(n string) bool {
	if _, ok := s.plus[n]; ok {
		return true
	}
	if s.base == nil {
		return false
	}
	if _, ok := s.base.byName[n]; !ok {
		return false
	}
	_, out := s.minus[n]
	return !out
}

func (s *nameSet) len() int { return s.n }

// add adds n and says whether it was new.
func (s *nameSet) add(n string) bool {
	if s.has(n) {
		return false
	}
	s.n++
	s.sorted = nil
	if s.base != nil {
		if _, ok := s.base.byName[n]; ok {
			delete(s.minus, n)
			return true
		}
	}
	if s.plus == nil {
		s.plus = map[string]struct{}{}
	}
	s.plus[n] = struct{}{}
	return true
}

// remove removes n and says whether it was there.
func (s *nameSet) remove(n string) bool {
	if !s.has(n) {
		return false
	}
	s.n--
	s.sorted = nil
	if s.base != nil {
		if _, ok := s.base.byName[n]; ok {
			if s.minus == nil {
				s.minus = map[string]struct{}{}
			}
			s.minus[n] = struct{}{}
			return true
		}
	}
	delete(s.plus, n)
	return true
}

// addMany adds names, as add does one by one (canon gives the copy of a name to keep). A set
// without base that ends up holding most of idx is built on idx directly, without a map entry
// per name: this is every Envoy's first EDS subscription.
func (s *nameSet) addMany(idx *typeIndex, names []string, canon func(string) string) {
	if s.base == nil && idx != nil && len(idx.list) > 0 && (len(s.plus)+len(names))*2 >= len(idx.list) {
		marks := make([]bool, len(idx.list))
		plus := map[string]struct{}{}
		next := 0 // names usually come in idx.list's order
		add := func(n string) {
			if i, ok := idx.positionFrom(next, n); ok {
				marks[i] = true
				next = i + 1
			} else {
				plus[canon(n)] = struct{}{}
			}
		}
		for n := range s.plus {
			add(n)
		}
		for _, n := range names {
			add(n)
		}
		minus := map[string]struct{}{}
		n := len(plus)
		for i, r := range idx.list {
			if marks[i] {
				n++
			} else {
				minus[r.Name] = struct{}{}
			}
		}
		if (len(plus)+len(minus))*2 < n {
			*s = nameSet{base: idx, plus: plus, minus: minus, n: n}
			return
		}
	}
	if s.base == nil && s.plus == nil {
		s.plus = make(map[string]struct{}, len(names))
	}
	for _, n := range names {
		s.add(canon(n))
	}
}

// in returns the set's resources in idx, in name order, and the XOR of their hashes. The slice
// must not be modified: for a set that is all of idx, it is idx's own list.
func (s *nameSet) in(idx *typeIndex) ([]*resource.Resource, uint64) {
	if s.base == idx && len(s.minus) == 0 {
		return idx.list[:len(idx.list):len(idx.list)], idx.xor // plus holds only names idx lacks
	}
	out := make([]*resource.Resource, 0, s.n)
	var xor uint64
	if s.base == idx {
		for _, r := range idx.list {
			if _, gone := s.minus[r.Name]; !gone {
				out = append(out, r)
				xor ^= r.Hash()
			}
		}
		return out, xor
	}
	for _, n := range s.sortedNames() {
		if r, ok := idx.byName[n]; ok {
			out = append(out, r)
			xor ^= r.Hash()
		}
	}
	return out, xor
}

// outside returns the set's names that idx has no resource of, in order.
func (s *nameSet) outside(idx *typeIndex) []string {
	var out []string
	if s.base == idx {
		for n := range s.plus {
			out = append(out, n)
		}
		slices.Sort(out)
		return out
	}
	for _, n := range s.sortedNames() {
		if _, ok := idx.byName[n]; !ok {
			out = append(out, n)
		}
	}
	return out
}

// sortedNames returns the names in order. The slice must not be modified.
func (s *nameSet) sortedNames() []string {
	if s.sorted != nil {
		return s.sorted
	}
	out := make([]string, 0, s.n)
	for n := range s.plus {
		out = append(out, n)
	}
	slices.Sort(out)
	if s.base == nil {
		s.sorted = out // cached: a set without base is small or changes rarely
		return out
	}
	// Merge base's sorted names (less minus) with plus's.
	merged := make([]string, 0, s.n)
	i := 0
	for _, r := range s.base.list {
		if _, gone := s.minus[r.Name]; gone {
			continue
		}
		for i < len(out) && out[i] < r.Name {
			merged = append(merged, out[i])
			i++
		}
		merged = append(merged, r.Name)
	}
	return append(merged, out[i:]...)
}

// rebase keeps the set's content and expresses it relative to idx when that is much smaller
// than a plain set.
func (s *nameSet) rebase(idx *typeIndex) {
	if s.base == idx {
		return
	}
	if s.base != nil && idx.base == weak.Make(s.base) {
		keep := make([]bool, len(idx.changed))
		for i, n := range idx.changed {
			keep[i] = s.has(n)
		}
		s.base = idx
		for i, n := range idx.changed {
			_, inBase := idx.byName[n]
			delete(s.plus, n)
			delete(s.minus, n)
			switch {
			case keep[i] && !inBase:
				if s.plus == nil {
					s.plus = map[string]struct{}{}
				}
				s.plus[n] = struct{}{}
			case !keep[i] && inBase:
				if s.minus == nil {
					s.minus = map[string]struct{}{}
				}
				s.minus[n] = struct{}{}
			}
		}
		if len(s.plus)+len(s.minus) <= len(idx.list)/2 {
			return
		}
	}
	if s.base == nil && len(s.plus) < len(idx.list)/2 {
		return
	}
	plus, minus := map[string]struct{}{}, map[string]struct{}{}
	n := 0
	for _, r := range idx.list {
		if s.has(r.Name) {
			n++
		} else {
			minus[r.Name] = struct{}{}
		}
	}
	outside := func(name string) {
		if _, in := idx.byName[name]; !in {
			plus[name] = struct{}{}
			n++
		}
	}
	for name := range s.plus {
		outside(name)
	}
	if s.base != nil {
		for _, r := range s.base.list {
			if _, gone := s.minus[r.Name]; !gone {
				outside(r.Name)
			}
		}
	}
	switch {
	case (len(plus)+len(minus))*2 < n:
		*s = nameSet{base: idx, plus: plus, minus: minus, n: n}
	case s.base != nil:
		all := slices.Clone(s.sortedNames())
		*s = nameSet{plus: make(map[string]struct{}, len(all)), n: len(all), sorted: all}
		for _, name := range all {
			s.plus[name] = struct{}{}
		}
	}
}
