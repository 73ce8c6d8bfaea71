package publish

import (
	"testing"
	"time"

	"github.com/holdfast/holdfast/cache"
	"github.com/holdfast/holdfast/xds/internal/xdstest"
	"github.com/holdfast/holdfast/xds/translate"
)

var testTranslator = translate.Translator{Naming: translate.Naming{Domain: xdstest.Domain}, EnvoyListenAddress: "127.0.0.1"}

func TestPublisherStuck(t *testing.T) {
	p, err := New(Options{Translator: testTranslator}, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if stuck, _ := p.Stuck(now, time.Second); stuck {
		t.Fatal("stuck with nothing queued")
	}
	a, _ := xdstest.TwoServices()
	p.OnView(cache.View{Services: xdstest.Services(a), Synced: true, Generation: 1}) // the run loop is not running: nobody takes it
	if stuck, _ := p.Stuck(now, time.Minute); stuck {
		t.Error("stuck before the bound")
	}
	if stuck, why := p.Stuck(now.Add(2*time.Minute), time.Minute); !stuck || why == "" {
		t.Error("a view waiting past the bound is not reported")
	}
}
