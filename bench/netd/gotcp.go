package netd

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"syscall"
	"time"

	"stellar.dev/bench/harness"
)

// inNetns runs fn on a thread that has joined the named network namespace;
// sockets fn creates stay in that namespace.
func inNetns(name string, fn func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return err
	}
	defer self.Close()
	target, err := os.Open("/run/netns/" + name)
	if err != nil {
		return err
	}
	defer target.Close()
	if err := setns(target); err != nil {
		return fmt.Errorf("enter netns %s: %w", name, err)
	}
	ferr := fn()
	if err := setns(self); err != nil {
		// The thread cannot go back: leave it locked so it dies with the goroutine.
		runtime.LockOSThread()
		return fmt.Errorf("leave netns %s: %w", name, err)
	}
	return ferr
}

func setns(f *os.File) error {
	if _, _, e := syscall.RawSyscall(sysSetns, f.Fd(), syscall.CLONE_NEWNET, 0); e != 0 {
		return e
	}
	return nil
}

// goTCP measures one TCP stream from clientNS to serverIP in serverNS for
// secs seconds, with Go sockets (used when iperf3 is not installed).
func goTCP(ctx context.Context, s *harness.Subject, serverNS, clientNS, serverIP string, secs int) error {
	var ln net.Listener
	if err := inNetns(serverNS, func() (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort(serverIP, "5299"))
		return err
	}); err != nil {
		return err
	}
	defer ln.Close()
	got := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- 0
			return
		}
		defer c.Close()
		n, _ := io.Copy(io.Discard, c)
		got <- n
	}()
	var c net.Conn
	if err := inNetns(clientNS, func() (err error) {
		c, err = net.DialTimeout("tcp", net.JoinHostPort(serverIP, "5299"), 10*time.Second)
		return err
	}); err != nil {
		return err
	}
	buf := make([]byte, 128<<10)
	start := time.Now()
	end := start.Add(time.Duration(secs) * time.Second)
	for time.Now().Before(end) && ctx.Err() == nil {
		if _, err := c.Write(buf); err != nil {
			c.Close()
			return fmt.Errorf("send to %s: %w", serverIP, err)
		}
	}
	c.Close()
	n := <-got
	el := time.Since(start).Seconds()
	if n == 0 {
		return fmt.Errorf("nothing reached %s", serverIP)
	}
	s.Add("tcp", float64(n)*8/el/1e9)
	return nil
}
