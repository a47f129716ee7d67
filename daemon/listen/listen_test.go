package listen

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func fileOf(t *testing.T, c interface{ File() (*os.File, error) }) *os.File {
	t.Helper()
	f, err := c.File()
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestOpen_activatedSortsStreamsAndDatagrams(t *testing.T) {
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tl.Close()
	uc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	files := map[string][]*os.File{
		"dns": {fileOf(t, uc.(*net.UDPConn)), fileOf(t, tl.(*net.TCPListener))},
	}
	old := activationFiles
	activationFiles = func() map[string][]*os.File { return files }
	defer func() { activationFiles = old }()

	sock := filepath.Join(t.TempDir(), "api.sock")
	s, err := Open(context.Background(), []Spec{
		{Name: "api", Network: "unix", Addr: sock},
		{Name: "dns", Network: "udp", Addr: "127.0.0.1:1"},
		{Name: "dns", Network: "tcp", Addr: "127.0.0.1:1"},
	}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !s.Activated("dns") || s.Activated("api") {
		t.Fatalf("activated: dns=%v api=%v", s.Activated("dns"), s.Activated("api"))
	}
	if n := len(s.PacketConns("dns")); n != 1 {
		t.Fatalf("want 1 datagram socket from systemd, got %d", n)
	}
	if n := len(s.Listeners("dns")); n != 1 {
		t.Fatalf("want 1 stream socket from systemd, got %d", n)
	}
	if got := s.PacketConns("dns")[0].LocalAddr().String(); got != uc.LocalAddr().String() {
		t.Fatalf("datagram socket is %s, want %s", got, uc.LocalAddr())
	}
	if n := len(s.Listeners("api")); n != 1 {
		t.Fatalf("api must be bound by the daemon itself, got %d listeners", n)
	}
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket mode %v, want 0660", fi.Mode().Perm())
	}
}

func TestListenUnix_replacesStaleSocketRefusesLiveOne(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "x.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ListenUnix(sock); err == nil {
		t.Fatal("a live socket must not be taken over")
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close() // now stale
	l2, err := ListenUnix(sock)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	l2.Close()
	if err := os.WriteFile(sock, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ListenUnix(sock); err == nil {
		t.Fatal("a regular file must not be removed")
	}
}
