package publish

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/holdfast/holdfast/cache"
	"github.com/holdfast/holdfast/resolver"
)

// TestViewsNeverGoBack: the store hands views to the publisher from four goroutines — the
// resolver's (a new resolution), its own loop's (a hold's period over, tombstones collected),
// an operator's (a hold released) and the restore at start — each after unlocking, so a
// goroutine can be overtaken between making a view and handing it in. Whatever the
// interleaving, the view the publisher keeps never goes back to an older one, and ends as the
// store's newest. The observer here yields the processor at random before handing a view in,
// as a scheduler may; without the publisher comparing generations, an older view replaced a
// newer one in more than half of the trials (checking only the end state missed it: a later
// view usually repaired it before the goroutines finished).
func TestViewsNeverGoBack(t *testing.T) {
	dir := t.TempDir()
	fleet := func(n int, prefix string) map[resolver.Key]*resolver.Service {
		out := map[resolver.Key]*resolver.Service{}
		for i := range n {
			k := resolver.Key{Namespace: "ns", Name: fmt.Sprintf("%s%d", prefix, i)}
			var eps []resolver.Endpoint
			for j := range 5 {
				eps = append(eps, resolver.Endpoint{Address: fmt.Sprintf("10.%d.%d.%d", len(prefix), i, j+1), Port: 80, Ready: true, Serving: true})
			}
			out[k] = &resolver.Service{Key: k, Ports: []resolver.Port{{Port: 80, Endpoints: eps}}}
		}
		return out
	}
	// A state file to restore from.
	seed, err := cache.NewStore(cache.StoreOptions{StateDir: dir}, cache.ObserverFunc(func(cache.View) {}))
	if err != nil {
		t.Fatal(err)
	}
	seed.OnResolution(resolver.Resolution{Services: fleet(20, "r"), Synced: true})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := seed.Run(ctx); err != nil { // a cancelled Run writes the state file and returns
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "state")); err != nil {
		t.Fatal(err)
	}

	lost := 0
	const trials = 300
	for trial := range trials {
		pub, err := New(Options{Translator: testTranslator}, nil)
		if err != nil {
			t.Fatal(err)
		}
		// kept is the generation the publisher kept after the previous view was handed in; read
		// under seen, the reads are ordered, so a newer view kept and then an older one in its
		// place shows as kept going down.
		var (
			seen     sync.Mutex
			kept     uint64
			wentBack int
		)
		jitter := cache.ObserverFunc(func(v cache.View) {
			// Injected jitter, not a wait: the scheduler's delays between a goroutine making a
			// view and handing it in (yields, and now and then a preemption of tens of µs).
			for range rand.IntN(3) {
				runtime.Gosched()
			}
			if rand.IntN(4) == 0 {
				time.Sleep(time.Duration(rand.IntN(50)) * time.Microsecond)
			}
			pub.OnView(v)
			seen.Lock()
			pub.mu.Lock()
			g := pub.latest.Generation
			pub.mu.Unlock()
			if g < kept {
				wentBack++
			}
			kept = max(kept, g)
			seen.Unlock()
		})
		store, err := cache.NewStore(cache.StoreOptions{StateDir: dir,
			Guard:  cache.GuardOptions{MinFleetEndpoints: 10, MinWithdrawnEndpoints: 5, HoldPeriod: time.Millisecond},
			Limits: cache.Limits{TombstoneGrace: time.Millisecond}}, jitter)
		if err != nil {
			t.Fatal(err)
		}
		big, small := fleet(20, "s"), fleet(3, "s")
		var wg sync.WaitGroup
		wg.Go(func() { _ = store.Restore() }) // races the first resolution
		wg.Go(func() {                        // the resolver
			for i := range 30 {
				m := big
				if i%3 == 2 {
					m = small // most of the fleet withdrawn: held
				}
				store.OnResolution(resolver.Resolution{Services: m, Synced: true})
			}
		})
		wg.Go(func() { // the store's loop: holds expire, tombstones go
			for i := range 30 {
				store.Tick(time.Now().Add(time.Duration(i) * time.Second))
			}
		})
		wg.Go(func() { // an operator
			for range 30 {
				if h := store.Held(); h != nil {
					_ = store.Release(h.ID)
				}
				runtime.Gosched()
			}
		})
		wg.Wait()
		want := store.View().Generation
		pub.mu.Lock()
		got := pub.latest.Generation
		pub.mu.Unlock()
		if got != want || wentBack > 0 {
			lost++
			if lost == 1 {
				t.Errorf("trial %d: the publisher went back to an older view %d times; it keeps generation %d, the store's newest is %d", trial, wentBack, got, want)
			}
		}
	}
	if lost > 0 {
		t.Errorf("%d of %d trials put an older view in place of a newer one", lost, trials)
	}
}
