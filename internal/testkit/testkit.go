// Package testkit is what unit tests share: waiting for a condition within a correctness
// deadline, a log sink goroutines may write to, and the check that a package's tests leave no
// goroutine behind. Tests only; production code never imports it.
package testkit

import (
	"bytes"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Deadline bounds every wait for something that must happen: a correctness deadline, far above
// what the wait takes (CONTRACT §4), never a performance claim.
const Deadline = 10 * time.Second

// Eventually waits until cond holds, and fails the test with what when Deadline passes first.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(Deadline)
	for wait := time.Millisecond; !cond(); wait = min(2*wait, 50*time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("never within %v: %s", Deadline, what)
		}
		time.Sleep(wait)
	}
}

// Log is a log destination safe for concurrent writers: give it to slog.NewTextHandler.
type Log struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *Log) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// VerifyNoLeaks runs a package's tests and then fails if any goroutine they started is still
// running: call it from TestMain. Goroutines that live as long as the process by design (the
// runtime's, gRPC's and client-go's background workers) are ignored by name.
func VerifyNoLeaks(m *testing.M) {
	goleak.VerifyTestMain(m, ignored...)
}

// ignored are the long-lived goroutines of libraries, started once per process.
var ignored = []goleak.Option{
	// klog's flush daemon and client-go's shared rate limiters live as long as the process.
	goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"),
	goleak.IgnoreAnyFunction("k8s.io/client-go/util/workqueue.(*Type).updateUnfinishedWorkLoop"),
	// grpc-go's resolver and balancer callbacks drain after a ClientConn closes.
	goleak.IgnoreTopFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
	// The fuzzing engine's and testing's own.
	goleak.IgnoreTopFunction("testing.(*F).Fuzz.func1"),
}
