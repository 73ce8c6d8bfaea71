package e2e

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/holdfast/holdfast/e2e/harness"
	"github.com/holdfast/holdfast/internal/testkit"
)

// TestDemo keeps the README's first command true, run as a user runs it: `make demo` in a
// terminal (a pty made by script(1)). The demo starts its own API server, serves two services,
// shows traffic following endpoint changes, then survives the failures it stages (the API server
// stopped, Holdfast restarted with it down, every slice deleted at once, a zone's backends
// gone), printing what it says at each; Ctrl-C then cleans up and make exits 0 (without the
// demo taking the terminal's foreground, make itself is interrupted and exits 2). Scenes last
// 2 s here (5 s by default). The demo is the package's longest test: TestMain starts it before
// any test (startDemo), so that it runs beside all of them from the start instead of waiting
// for a parallel slot behind them.
func TestDemo(t *testing.T) {
	t.Parallel()
	d := env.demo
	if d == nil {
		d = startDemo()
		t.Cleanup(d.stop)
	}
	if d.err != nil {
		t.Fatal(d.err)
	}
	out, done, tty := d.out, d.done, d.tty
	out.waitFor(t, "demo: done", done, 6*timeout)
	if _, err := tty.Write([]byte{0x03}); err != nil { // Ctrl-C, as the terminal sees it
		t.Fatal(err)
	}
	if err := out.exit(t, done, 2*timeout); err != nil { // script(1) exits with make's status (-e)
		t.Errorf("make demo after Ctrl-C: %v", err)
	}
	// script(1) writes the terminal's line endings.
	text := strings.ReplaceAll(out.String(), "\r\n", "\n")
	if !strings.Contains(text, "MAKE_EXIT=0") {
		t.Errorf("after Ctrl-C, want make exiting 0:\n%s", text)
	}
	for _, want := range []string{
		"greeter  answered by: greeter-1", "echo     answered by: echo-1:6 echo-2:6", // the client is in zone-a, echo-3 in zone-b
		"demo: cleaned up",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("demo output lacks %q:\n%s", want, text)
		}
	}
	// After the scale-down, greeter-3 stops answering (the first line may predate propagation).
	var greeter []string
	down := text[strings.Index(text, "scaled down to 2"):]
	if end := strings.Index(down, "greeter-1 not ready"); end > 0 {
		down = down[:end]
	}
	for _, l := range strings.Split(down, "\n") {
		if strings.HasPrefix(l, "greeter  answered by:") {
			greeter = append(greeter, l)
		}
	}
	if len(greeter) < 2 || strings.Contains(greeter[len(greeter)-1], "greeter-3") || !strings.Contains(greeter[len(greeter)-1], "greeter-2") {
		t.Errorf("after the scale-down, want greeter-1 and greeter-2 only; got %q", greeter)
	}
	// Each failure, and what the demo says of it.
	for _, f := range []struct {
		from, to string
		want     []string
		routing  bool // every RPC of the section answered
	}{
		{"== failure 1", "== failure 2", []string{"/readyz: 200", `"stale":true`, "$ holdfastctl sources", "demo    stale"}, true},
		{"== failure 2", "== the API server continues", []string{"restarted Holdfast ready", "the API server is still stopped", "greeter  answered by: greeter-1:4 greeter-2:4 greeter-3:4"}, true},
		{"== the API server continues", "== failure 3", []string{"demo    live"}, true},
		{"== failure 3", "== an operator releases", []string{"$ holdfastctl why demo-client demo/greeter:80", "[guard_hold]", "guard_hold hold 1"}, true},
		{"== an operator releases", "== the slices come back", []string{"released hold 1", "greeter  answered by:   failed: 12", "echo     answered by:   failed: 12"}, false},
		{"== failure 4", "demo: done", []string{"echo     answered by: echo-3:12"}, false},
	} {
		i, j := strings.Index(text, f.from), strings.Index(text, f.to)
		if i < 0 || j < i {
			t.Errorf("demo output lacks the section %q … %q", f.from, f.to)
			continue
		}
		section := text[i:j]
		for _, w := range f.want {
			if !strings.Contains(section, w) {
				t.Errorf("section %q lacks %q:\n%s", f.from, w, section)
			}
		}
		for _, l := range strings.Split(section, "\n") {
			if f.routing && strings.Contains(l, "answered by:") && strings.Contains(l, "failed:") {
				t.Errorf("section %q: RPCs failed: %s", f.from, l)
			}
		}
	}
	if n, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(n), "hf-demo") {
		t.Errorf("the demo left its network namespace behind: %s", n)
	}
}

// demoRun is `make demo` running in a terminal (a pty made by script(1)).
type demoRun struct {
	out    *watched
	done   <-chan error   // its exit, once
	exited chan struct{}  // closed when it has exited
	tty    io.WriteCloser // the terminal's input
	err    error          // why it did not start
}

// startDemo starts `make demo` with 2 s scenes, as TestDemo checks it.
func startDemo() *demoRun {
	root, err := harness.ModuleRoot()
	if err != nil {
		return &demoRun{err: err}
	}
	cmd := exec.Command("script", "-qfec", "make demo DEMO_FLAGS=--scene=2s; echo MAKE_EXIT=$?", "/dev/null")
	cmd.Dir = root
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "MAKEFLAGS=") || strings.HasPrefix(kv, "MFLAGS=") || strings.HasPrefix(kv, "MAKELEVEL=")
	})
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	tty, err := cmd.StdinPipe()
	if err != nil {
		return &demoRun{err: err}
	}
	w := &watched{cmd: cmd}
	cmd.Stdout, cmd.Stderr = &w.Log, &w.Log
	if err := cmd.Start(); err != nil {
		return &demoRun{err: fmt.Errorf("start make demo: %w", err)}
	}
	done, exited := make(chan error, 1), make(chan struct{})
	go func() { done <- cmd.Wait(); close(exited) }()
	return &demoRun{out: w, done: done, exited: exited, tty: tty}
}

// stop ends the demo if it still runs (a test that failed before Ctrl-C, a run cut short).
func (d *demoRun) stop() {
	if d.err != nil {
		return
	}
	select {
	case <-d.exited:
		return
	default:
	}
	_, _ = d.tty.Write([]byte{0x03})
	select {
	case <-d.exited:
	case <-time.After(2 * timeout):
		_ = d.out.cmd.Process.Kill()
	}
}

// selected says whether the test binary's -test.run and -test.skip flags select the top-level
// test name.
func selected(name string) bool {
	match := func(flagName string) (bool, bool) {
		f := flag.Lookup(flagName)
		if f == nil || f.Value.String() == "" {
			return false, false
		}
		re, err := regexp.Compile(strings.Split(f.Value.String(), "/")[0])
		return err == nil && re.MatchString(name), true
	}
	if skip, set := match("test.skip"); set && skip {
		return false
	}
	run, set := match("test.run")
	return run || !set
}

// watched is a command's output, read while it runs.
type watched struct {
	testkit.Log
	cmd *exec.Cmd
}

// waitFor waits until the output says want; the command exiting first, or d passing, fails
// the test.
func (w *watched) waitFor(t *testing.T, want string, done <-chan error, d time.Duration) {
	t.Helper()
	deadline := time.After(d)
	for !strings.Contains(w.String(), want) {
		select {
		case err := <-done:
			t.Fatalf("%s exited (%v) before saying %q:\n%s", w.cmd.Args, err, want, w.String())
		case <-deadline:
			_ = w.cmd.Process.Kill()
			t.Fatalf("%s did not say %q within %v:\n%s", w.cmd.Args, want, d, w.String())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// exit waits up to d for the command to exit, and returns how it did.
func (w *watched) exit(t *testing.T, done <-chan error, d time.Duration) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		_ = w.cmd.Process.Kill()
		t.Fatalf("%s did not exit within %v:\n%s", w.cmd.Args, d, w.String())
		return nil
	}
}
