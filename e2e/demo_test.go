package e2e

import (
	"bytes"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/holdfast/holdfast/e2e/harness"
)

// TestDemo keeps the README's first command true: the demo starts its own API server, serves
// two services, shows traffic following endpoint changes, and cleans up on Ctrl-C.
func TestDemo(t *testing.T) {
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	demo := env.dir + "/demo"
	build := exec.Command("go", "build", "-o", demo, "./e2e/cmd/demo")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build demo: %v\n%s", err, out)
	}
	var out bytes.Buffer
	cmd := exec.Command(demo)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// Long enough for the first scene change (scenes last 5 s).
	deadline := time.After(timeout)
	for !strings.Contains(out.String(), "greeter: scaled down to 2") {
		select {
		case err := <-done:
			t.Fatalf("demo exited early (%v):\n%s", err, out.String())
		case <-deadline:
			_ = cmd.Process.Kill()
			t.Fatalf("demo never reached its second scene:\n%s", out.String())
		case <-time.After(200 * time.Millisecond):
		}
	}
	time.Sleep(3 * time.Second)
	_ = cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("demo exit after Ctrl-C: %v", err)
		}
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		t.Fatalf("demo did not stop on Ctrl-C:\n%s", out.String())
	}
	text := out.String()
	for _, want := range []string{
		"greeter  answered by: greeter-1", "echo     answered by: echo-1:4 echo-2:4 echo-3:4",
		"demo: cleaned up",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("demo output lacks %q:\n%s", want, text)
		}
	}
	// After the scale-down, greeter-3 stops answering (the first line may predate propagation).
	var greeter []string
	for _, l := range strings.Split(text[strings.Index(text, "scaled down to 2"):], "\n") {
		if strings.HasPrefix(l, "greeter  answered by:") {
			greeter = append(greeter, l)
		}
	}
	if len(greeter) < 2 || strings.Contains(greeter[len(greeter)-1], "greeter-3") || !strings.Contains(greeter[len(greeter)-1], "greeter-2") {
		t.Errorf("after the scale-down, want greeter-1 and greeter-2 only; got %q", greeter)
	}
	if n, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(n), "hf-demo") {
		t.Errorf("the demo left its network namespace behind: %s", n)
	}
}
