package main

import (
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

// takeTerminal makes the demo the terminal's foreground process group, as a job-control shell
// does for a job, and returns what gives the terminal back. Ctrl-C then interrupts the demo
// (and what it started) alone: it cleans up and exits 0, and make and go run, which no longer
// receive the SIGINT, exit with its status — otherwise make, interrupted itself, exits 2
// whatever the demo did. Without a terminal (a test, CI) it does nothing.
func takeTerminal() (restore func()) {
	fd := int(os.Stdin.Fd())
	if _, err := unix.IoctlGetTermios(fd, unix.TCGETS); err != nil {
		return func() {}
	}
	orig, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP)
	if err != nil {
		return func() {}
	}
	if err := syscall.Setpgid(0, 0); err != nil {
		return func() {}
	}
	// A background group that sets the foreground is sent SIGTTOU: ignore it meanwhile.
	signal.Ignore(syscall.SIGTTOU)
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPGRP, syscall.Getpid()); err != nil {
		_ = syscall.Setpgid(0, orig) // back in make's group: Ctrl-C behaves as before
		signal.Reset(syscall.SIGTTOU)
		return func() {}
	}
	return func() {
		_ = unix.IoctlSetPointerInt(fd, unix.TIOCSPGRP, orig)
		signal.Reset(syscall.SIGTTOU)
	}
}
