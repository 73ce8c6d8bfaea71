package e2e

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/holdfast/holdfast/e2e/harness"
)

// load is steady RPC traffic from grpc-go xDS clients, one goroutine each: every RPC counted,
// and, for logCalls, which backend answered each (in order).
type load struct {
	stop         context.CancelFunc
	wg           sync.WaitGroup
	sent, failed atomic.Int64
	record       bool

	mu      sync.Mutex
	lastErr error
	ids     []string // with record: the backend of each call, "" for a failure
}

// startLoad has each client make an RPC (2 s deadline), then wait every before the next.
func startLoad(every time.Duration, clients ...*harness.GRPCClient) *load {
	return newLoad(false, every, clients)
}

// logCalls is startLoad for one client that also records which backend answered each call.
func logCalls(c *harness.GRPCClient) *load {
	return newLoad(true, 5*time.Millisecond, []*harness.GRPCClient{c})
}

func newLoad(record bool, every time.Duration, clients []*harness.GRPCClient) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{stop: cancel, record: record}
	for _, c := range clients {
		l.wg.Go(func() {
			for ctx.Err() == nil {
				cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				id, err := c.Call(cctx)
				cancel()
				if ctx.Err() != nil {
					return
				}
				l.sent.Add(1)
				if err != nil {
					l.failed.Add(1)
					id = ""
				}
				l.mu.Lock()
				if err != nil {
					l.lastErr = err
				}
				if l.record {
					l.ids = append(l.ids, id)
				}
				l.mu.Unlock()
				time.Sleep(every)
			}
		})
	}
	return l
}

func (l *load) counts() (sent, failed int64) { return l.sent.Load(), l.failed.Load() }

// finish stops the load and returns what succeeded, what failed and the last error.
func (l *load) finish() (ok, failed int64, lastErr error) {
	l.stop()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sent.Load() - l.failed.Load(), l.failed.Load(), l.lastErr
}

// mark returns how many calls are recorded so far.
func (l *load) mark() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.ids)
}

// since returns the calls recorded after mark.
func (l *load) since(mark int) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.ids[mark:])
}

// waitSettled waits until the last 50 calls after mark all landed in zone, and returns the
// failures after mark up to then.
func (l *load) waitSettled(ctx context.Context, t *testing.T, sc *zoneScene, mark int, zone string) int {
	t.Helper()
	for {
		calls := l.since(mark)
		if n := len(calls); n >= 50 && !slices.ContainsFunc(calls[n-50:], func(id string) bool { return id == "" || sc.zoneOf[id] != zone }) {
			return countFailures(calls)
		}
		select {
		case <-ctx.Done():
			tail := calls[max(0, len(calls)-20):]
			t.Fatalf("calls never settled on %s; last: %q", zone, tail)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func countFailures(ids []string) int {
	n := 0
	for _, id := range ids {
		if id == "" {
			n++
		}
	}
	return n
}
