package logdriver

import (
	"bytes"
	"encoding/binary"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// parseEntry reads one native-protocol entry (what journald does).
func parseEntry(t *testing.T, b []byte) map[string]string {
	t.Helper()
	out := map[string]string{}
	for len(b) > 0 {
		nl := bytes.IndexByte(b, '\n')
		if nl < 0 {
			t.Fatalf("field without newline: %q", b)
		}
		line := b[:nl]
		if k, v, ok := bytes.Cut(line, []byte("=")); ok {
			out[string(k)] = string(v)
			b = b[nl+1:]
			continue
		}
		n := binary.LittleEndian.Uint64(b[nl+1 : nl+9])
		out[string(line)] = string(b[nl+9 : nl+9+int(n)])
		b = b[nl+9+int(n)+1:]
	}
	return out
}

// listen is a journald stand-in: a unixgram socket the test reads.
func listen(t *testing.T) (string, *net.UnixConn) {
	path := filepath.Join(t.TempDir(), "journal.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return path, c
}

// read returns the next entry, from the datagram or the file it passes.
func read(t *testing.T, c *net.UnixConn) map[string]string {
	t.Helper()
	buf := make([]byte, 1<<20)
	oob := make([]byte, 1024)
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		t.Fatal(err)
	}
	if n > 0 {
		return parseEntry(t, buf[:n])
	}
	msgs, err := syscall.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		t.Fatalf("no entry and no file: %v", err)
	}
	fds, err := syscall.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		t.Fatalf("no file passed: %v", err)
	}
	f := os.NewFile(uintptr(fds[0]), "entry")
	defer f.Close()
	var b bytes.Buffer
	if _, err := f.Seek(0, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := b.ReadFrom(f); err != nil {
		t.Fatal(err)
	}
	return parseEntry(t, b.Bytes())
}

func TestJournal_sendsNativeProtocol(t *testing.T) {
	path, c := listen(t)
	j, err := openJournal(path)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	fields := map[string]string{"STELLAR_APP": "web", "SYSLOG_IDENTIFIER": "web.www"}
	for _, tc := range []struct{ name, msg string }{
		{"plain", "hello"},
		{"newline", "two\nlines"},
		{"tooLargeForADatagram", strings.Repeat("x", 4<<20)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := j.Send(tc.msg, priErr, fields); err != nil {
				t.Fatal(err)
			}
			got := read(t, c)
			if got["MESSAGE"] != tc.msg || got["PRIORITY"] != "3" || got["STELLAR_APP"] != "web" || got["SYSLOG_IDENTIFIER"] != "web.www" {
				if len(got["MESSAGE"]) > 100 {
					got["MESSAGE"] = got["MESSAGE"][:100] + "..."
				}
				t.Fatalf("entry %v", got)
			}
		})
	}
}

func TestJournal_noSocket(t *testing.T) {
	if _, err := openJournal(filepath.Join(t.TempDir(), "none.sock")); err == nil {
		t.Fatal("a journal opened where no socket is")
	}
}
