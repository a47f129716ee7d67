package sdnotify

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func TestNotify(t *testing.T) {
	p := filepath.Join(t.TempDir(), "n.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: p, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t.Setenv("NOTIFY_SOCKET", p)
	ok, err := Notify(Ready)
	if !ok || err != nil {
		t.Fatalf("notify: %v %v", ok, err)
	}
	buf := make([]byte, 64)
	n, _ := c.Read(buf)
	if string(buf[:n]) != "READY=1" {
		t.Fatalf("got %q", buf[:n])
	}
	t.Setenv("NOTIFY_SOCKET", "")
	if ok, err := Notify(Ready); ok || err != nil {
		t.Fatalf("without systemd: %v %v", ok, err)
	}
}

func TestWatchdogInterval(t *testing.T) {
	t.Setenv("WATCHDOG_USEC", "4000000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	if got := WatchdogInterval(); got != 2*time.Second {
		t.Fatalf("got %s", got)
	}
	t.Setenv("WATCHDOG_PID", "1")
	if got := WatchdogInterval(); got != 0 {
		t.Fatalf("another pid's watchdog: got %s", got)
	}
}
