// Command xdsbench is Holdfast's xDS load tool. It runs the same workload against Holdfast's
// ADS server and against a plain go-control-plane SnapshotCache server (what a user would write
// with that library), each in its own process so that its CPU, heap and RSS can be measured
// apart from the load, and prints one table.
//
//	xdsbench [-quick] [-changes N]
//
// Each run: N lean Envoy-like clients (wildcard CDS and LDS, then EDS and RDS by name, ACKing
// everything) connect at once; the initial push is timed until every client holds every
// resource; then single-endpoint changes are made one at a time, each timed until every client
// has received the changed assignment.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "serve" {
		fs := flag.NewFlagSet("serve", flag.ExitOnError)
		impl := fs.String("impl", "holdfast", "holdfast or baseline")
		services := fs.Int("services", 1000, "services")
		per := fs.Int("per", 10, "endpoints per service")
		_ = fs.Parse(os.Args[2:])
		if err := runServer(*impl, *services, *per); err != nil {
			fmt.Fprintln(os.Stderr, "xdsbench serve:", err)
			os.Exit(1)
		}
		return
	}
	quick := flag.Bool("quick", false, "a small run, to check the tool works")
	changes := flag.Int("changes", 10, "endpoint changes per run")
	only := flag.String("only", "", "run only IMPL/FLAVOUR/CLIENTS/SERVICES (e.g. holdfast/delta/1000/1000)")
	zones := flag.Int("zones", 0, "put client i in zone-(i mod N) (endpoints are spread over zone-0..2): clients then get per-zone priorities")
	flag.Parse()
	var runs []run
	if *quick {
		for _, impl := range []string{"holdfast", "baseline"} {
			for _, flavour := range []string{"sotw", "delta"} {
				runs = append(runs, run{impl, flavour, 10, 100, 10, 3, 0})
			}
		}
	} else {
		for _, clients := range []int{100, 1000} {
			for _, flavour := range []string{"sotw", "delta"} {
				for _, impl := range []string{"holdfast", "baseline"} {
					n := *changes
					if impl == "baseline" && clients == 1000 {
						n = max(3, n/3) // each costs tens of seconds
					}
					runs = append(runs, run{impl, flavour, clients, 1000, 10, n, 0})
				}
			}
		}
		for _, impl := range []string{"holdfast", "baseline"} {
			runs = append(runs, run{impl, "sotw", 100, 10000, 10, 3, 0})
		}
	}
	if *only != "" {
		f := strings.Split(*only, "/")
		if len(f) != 4 {
			fmt.Fprintln(os.Stderr, "xdsbench: -only IMPL/FLAVOUR/CLIENTS/SERVICES")
			os.Exit(2)
		}
		c, _ := strconv.Atoi(f[2])
		n, _ := strconv.Atoi(f[3])
		runs = []run{{f[0], f[1], c, n, 10, *changes, 0}}
	}
	for i := range runs {
		runs[i].zones = *zones
	}
	fmt.Println("| server | xDS | clients | services × endpoints | initial push: wall | initial push: CPU | change until all have it: p50 | p99 | CPU per change | bytes per change | heap | RSS |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|---|")
	results := map[run]result{}
	for _, r := range runs {
		res, err := r.do()
		if err != nil {
			fmt.Fprintf(os.Stderr, "%+v: %v\n", r, err)
			os.Exit(1)
		}
		results[r] = res
		fmt.Printf("| %s | %s | %d | %d × %d | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.impl, r.flavour, r.clients, r.services, r.per,
			dur(res.initWall), dur(res.initCPU)+" (user "+dur(res.initUser)+")", dur(res.p50), dur(res.p99), dur(res.changeCPU), size(res.bytesPerChange), size(float64(res.heap)), size(float64(res.rss)))
	}
	fmt.Println()
	fmt.Println("| ratio (baseline ÷ Holdfast) | xDS | clients | services | initial push CPU | of it user | CPU per change | change p99 | bytes per change | heap |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range runs {
		if r.impl != "holdfast" {
			continue
		}
		var hb result
		ok := false
		for o, res := range results {
			if o.impl == "baseline" && o.flavour == r.flavour && o.clients == r.clients && o.services == r.services {
				hb, ok = res, true
			}
		}
		if !ok {
			continue
		}
		h := results[r]
		fmt.Printf("| | %s | %d | %d | %s | %s | %s | %s | %s | %s |\n", r.flavour, r.clients, r.services,
			ratio(float64(hb.initCPU), float64(h.initCPU)), ratio(float64(hb.initUser), float64(h.initUser)), ratio(float64(hb.changeCPU), float64(h.changeCPU)),
			ratio(float64(hb.p99), float64(h.p99)), ratio(hb.bytesPerChange, h.bytesPerChange), ratio(float64(hb.heap), float64(h.heap)))
	}
	printResumes(runs, results)
}

func printResumes(runs []run, results map[run]result) {
	fmt.Println()
	fmt.Println("| server | xDS | clients | services × endpoints | resume (all reconnect at once, saying what they hold): wall | CPU |")
	fmt.Println("|---|---|---|---|---|---|")
	for _, r := range runs {
		if res := results[r]; res.resumeWall > 0 {
			fmt.Printf("| %s | %s | %d | %d × %d | %s | %s |\n", r.impl, r.flavour, r.clients, r.services, r.per, dur(res.resumeWall), dur(res.resumeCPU))
		}
	}
}

type run struct {
	impl, flavour                   string
	clients, services, per, changes int
	zones                           int
}

type result struct {
	initWall, initCPU time.Duration
	initUser, initSys time.Duration // initCPU split
	p50, p99          time.Duration
	changeCPU         time.Duration
	bytesPerChange    float64
	heap, rss         uint64
	// Delta against Holdfast: every client closes its stream and opens another saying what it
	// holds, at once (a control plane restart seen from the clients); timed until all are
	// answered for every type. go-control-plane sends nothing to an up-to-date named
	// subscription, so the baseline cannot be timed this way.
	resumeWall, resumeCPU time.Duration
}

func (r run) do() (result, error) {
	var res result
	cmd := exec.Command(os.Args[0], "serve", "-impl", r.impl, "-services", strconv.Itoa(r.services), "-per", strconv.Itoa(r.per))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return res, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return res, err
	}
	if err := cmd.Start(); err != nil {
		return res, err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	out := bufio.NewReader(stdout)
	line, err := out.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ready ") {
		return res, fmt.Errorf("server did not start: %q: %w", line, err)
	}
	addr := strings.TrimSpace(strings.TrimPrefix(line, "ready "))
	pid := cmd.Process.Pid
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	cpuProfile := func(what string) error {
		dir := os.Getenv("XDSBENCH_CPU_PROFILE_DIR")
		if dir == "" {
			return nil
		}
		arg := "stop"
		if what != "stop" {
			arg = fmt.Sprintf("%s/%s-%s-%d-%d-%s.pprof", dir, r.impl, r.flavour, r.clients, r.services, what)
		}
		fmt.Fprintf(stdin, "cpuprofile %s\n", arg)
		_, err := out.ReadString('\n')
		return err
	}
	if err := cpuProfile("init"); err != nil {
		return res, err
	}
	cpu0, t0 := procCPU(pid), time.Now()
	user0, sys0 := procTimes(pid)
	clients := make([]*client, r.clients)
	for i := range clients {
		zone := ""
		if r.zones > 0 {
			zone = fmt.Sprintf("zone-%d", i%r.zones)
		}
		c, err := startClient(ctx, addr, fmt.Sprintf("bench-%d", i), zone, r.flavour == "delta", r.services)
		if err != nil {
			return res, err
		}
		defer c.close()
		clients[i] = c
	}
	deadline := time.After(10 * time.Minute)
	for _, c := range clients {
		select {
		case <-c.complete:
		case <-deadline:
			c.mu.Lock()
			defer c.mu.Unlock()
			return res, fmt.Errorf("initial push incomplete after 10m: %v: %w", c.counts, c.err)
		}
	}
	res.initWall, res.initCPU = time.Since(t0), procCPU(pid)-cpu0
	user1, sys1 := procTimes(pid)
	res.initUser, res.initSys = user1-user0, sys1-sys0
	defer func() {
		// Reported, not hidden: a reconnect costs the server a second initial push.
		n, first := 0, error(nil)
		for _, c := range clients {
			c.mu.Lock()
			n += c.reconnects
			if first == nil {
				first = c.err
			}
			c.mu.Unlock()
		}
		if n > 0 {
			fmt.Fprintf(os.Stderr, "%v: %d client streams failed and reconnected (e.g. %v)\n", r, n, first)
		}
	}()
	if err := cpuProfile("stop"); err != nil {
		return res, err
	}
	if err := cpuProfile("change"); err != nil {
		return res, err
	}

	var bytes0 int64
	for _, c := range clients {
		bytes0 += c.bytes.Load()
	}
	cpu1 := procCPU(pid)
	var took []time.Duration
	for k := range r.changes {
		i := (k*37 + 11) % r.services
		name := fmt.Sprintf("svc-%d.ns-%d.svc.cluster.local:80", i, i%50)
		tc := time.Now()
		if _, err := fmt.Fprintf(stdin, "change %d\n", i); err != nil {
			return res, err
		}
		if l, err := out.ReadString('\n'); err != nil || strings.TrimSpace(l) != "ok" {
			return res, fmt.Errorf("change: %q: %w", l, err)
		}
		var last time.Time
		limit := time.Now().Add(5 * time.Minute)
		for _, c := range clients {
			for {
				if at, ok := c.seenAfter(name, tc); ok {
					last = maxTime(last, at)
					break
				}
				if time.Now().After(limit) {
					return res, errors.New("a change did not reach every client within 5m")
				}
				time.Sleep(time.Millisecond)
			}
		}
		took = append(took, last.Sub(tc))
	}
	res.changeCPU = (procCPU(pid) - cpu1) / time.Duration(max(1, r.changes))
	if err := cpuProfile("stop"); err != nil {
		return res, err
	}
	var bytes1 int64
	for _, c := range clients {
		bytes1 += c.bytes.Load()
	}
	res.bytesPerChange = float64(bytes1-bytes0) / float64(max(1, r.changes))
	slices.Sort(took)
	res.p50, res.p99 = took[len(took)/2], took[(len(took)*99)/100]
	res.rss = procRSS(pid)
	if dir := os.Getenv("XDSBENCH_HEAP_PROFILE_DIR"); dir != "" {
		fmt.Fprintf(stdin, "heapprofile %s/%s-%s-%d-%d.pprof\n", dir, r.impl, r.flavour, r.clients, r.services)
		if _, err := out.ReadString('\n'); err != nil {
			return res, err
		}
	}
	if _, err := io.WriteString(stdin, "stats\n"); err != nil {
		return res, err
	}
	l, err := out.ReadString('\n')
	if err != nil {
		return res, err
	}
	if _, err = fmt.Sscanf(l, "heap %d", &res.heap); err != nil {
		return res, err
	}
	if r.flavour == "delta" && r.impl == "holdfast" {
		if err := cpuProfile("resume"); err != nil {
			return res, err
		}
		cpu2, t2 := procCPU(pid), time.Now()
		var resumed []<-chan struct{}
		for _, c := range clients {
			resumed = append(resumed, c.resume())
		}
		limit := time.After(5 * time.Minute)
		for _, done := range resumed {
			select {
			case <-done:
			case <-limit:
				return res, errors.New("resumed streams not all answered within 5m")
			}
		}
		res.resumeWall, res.resumeCPU = time.Since(t2), procCPU(pid)-cpu2
		if err := cpuProfile("stop"); err != nil {
			return res, err
		}
	}
	return res, nil
}

var clkTck = 100 * time.Millisecond / 10 // 100 ticks per second (USER_HZ on Linux)

// procCPU returns the user+system CPU time pid has used.
func procCPU(pid int) time.Duration {
	u, s := procTimes(pid)
	return u + s
}

// procTimes returns the user and the system CPU time pid has used.
func procTimes(pid int) (user, system time.Duration) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0, 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	sy, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u) * clkTck, time.Duration(sy) * clkTck
}

// procRSS returns pid's resident set size in bytes.
func procRSS(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			kb, _ := strconv.ParseUint(strings.Fields(l)[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func dur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	default:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	}
}

func size(b float64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.2f GiB", b/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", b/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KiB", b/(1<<10))
	}
	return fmt.Sprintf("%.0f B", b)
}

func ratio(a, b float64) string {
	if b == 0 {
		return "∞"
	}
	return fmt.Sprintf("%.1f×", a/b)
}
