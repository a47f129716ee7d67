package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// journalSink is a journald stand-in: it listens on a unixgram socket and
// keeps every native-protocol entry sent to it.
type journalSink struct {
	path string
	conn *net.UnixConn
	mu   sync.Mutex
	ents []map[string]string
}

func newJournalSink(t *testing.T) *journalSink {
	dir, err := os.MkdirTemp("", "journal-")
	if err != nil {
		t.Fatal(err)
	}
	s := &journalSink{path: filepath.Join(dir, "socket")}
	s.conn, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: s.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.conn.Close(); os.RemoveAll(dir) })
	go s.read()
	return s
}

func (s *journalSink) read() {
	buf := make([]byte, 1<<20)
	oob := make([]byte, 1024)
	for {
		n, oobn, _, _, err := s.conn.ReadMsgUnix(buf, oob)
		if err != nil {
			return
		}
		data := append([]byte(nil), buf[:n]...)
		if n == 0 && oobn > 0 {
			data = readPassedFile(oob[:oobn])
		}
		if e := parseJournalEntry(data); e != nil {
			s.mu.Lock()
			s.ents = append(s.ents, e)
			s.mu.Unlock()
		}
	}
}

func readPassedFile(oob []byte) []byte {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil || len(msgs) == 0 {
		return nil
	}
	fds, err := syscall.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) == 0 {
		return nil
	}
	f := os.NewFile(uintptr(fds[0]), "entry")
	defer f.Close()
	var b bytes.Buffer
	_, _ = f.Seek(0, 0)
	_, _ = b.ReadFrom(f)
	return b.Bytes()
}

// parseJournalEntry reads journald's native protocol: "KEY=value\n", or
// "KEY\n", a 64-bit little-endian length, the value and "\n".
func parseJournalEntry(b []byte) map[string]string {
	out := map[string]string{}
	for len(b) > 0 {
		nl := bytes.IndexByte(b, '\n')
		if nl < 0 {
			return nil
		}
		line := b[:nl]
		if k, v, ok := bytes.Cut(line, []byte("=")); ok {
			out[string(k)] = string(v)
			b = b[nl+1:]
			continue
		}
		if len(b) < nl+9 {
			return nil
		}
		n := int(binary.LittleEndian.Uint64(b[nl+1 : nl+9]))
		if len(b) < nl+9+n+1 {
			return nil
		}
		out[string(line)] = string(b[nl+9 : nl+9+n])
		b = b[nl+9+n+1:]
	}
	return out
}

// last returns the highest counter of "tick N" lines seen so far, and the
// entries of each stream.
func (s *journalSink) last() (tick int, byStream map[string]map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	byStream = map[string]map[string]string{}
	tick = -1
	for _, e := range s.ents {
		byStream[e["STELLAR_STREAM"]] = e
		if n, ok := strings.CutPrefix(e["MESSAGE"], "tick "); ok {
			if v, err := strconv.Atoi(n); err == nil && v > tick {
				tick = v
			}
		}
	}
	return tick, byStream
}

// TestAppd_logsToJournal: what can be checked of point 7 without systemd.
// The log driver (stellar-appd under containerd's shim) sends each line
// of a container's stdout and stderr to a journald native-protocol socket
// (here one the test listens on, named by STELLAR_JOURNAL_SOCKET) with
// STELLAR_APP, STELLAR_SERVICE, STELLAR_INSTANCE, CONTAINER_ID,
// STELLAR_STREAM, SYSLOG_IDENTIFIER=<app>.<service> and the priority; and
// lines keep flowing while appd is killed with SIGKILL and after it comes
// back, from the same container process. What only a systemd host shows
// (journald filing the lines under containerd.service, its rate limit,
// `journalctl STELLAR_APP=...` and `sctl apps logs` reading them back) is
// checked in the lab.
func TestAppd_logsToJournal(t *testing.T) {
	sink := newJournalSink(t)
	t.Setenv(journalSocketEnv, sink.path)
	h := newHarness(t)
	ctx := context.Background()
	r, err := os.Open(h.busybox)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.api.ImportImage(ctx, r); err != nil {
		t.Fatalf("import busybox: %v", err)
	}
	r.Close()
	spec := parse(t, `{"name":"jl","services":[{"name":"s","image":"stellar.test/busybox:latest","network":false,
		"process":{"args":["sh","-c","trap 'exit 0' TERM; i=0; while :; do echo tick $i; echo oops $i >&2; i=$((i+1)); sleep 0.2; done"]}}]}`)
	if _, err := h.api.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	before := pids(h.running("jl", 1, false, 2*time.Minute))

	t.Run("fields", func(t *testing.T) {
		eventually(t, time.Minute, "stdout and stderr entries with every field", func() error {
			_, by := sink.last()
			want := map[string]string{"STELLAR_APP": "jl", "STELLAR_SERVICE": "s", "STELLAR_INSTANCE": "0.s.jl",
				"CONTAINER_ID": "jl.s.0", "SYSLOG_IDENTIFIER": "jl.s"}
			for stream, pri := range map[string]string{"stdout": "6", "stderr": "3"} {
				e := by[stream]
				if e == nil {
					return fmt.Errorf("no %s entry yet", stream)
				}
				for k, v := range want {
					if e[k] != v {
						return fmt.Errorf("%s entry %s = %q, want %q (%v)", stream, k, e[k], v, e)
					}
				}
				if e["PRIORITY"] != pri {
					return fmt.Errorf("%s entry PRIORITY = %q, want %s", stream, e["PRIORITY"], pri)
				}
			}
			if !strings.HasPrefix(by["stderr"]["MESSAGE"], "oops ") {
				return fmt.Errorf("stderr message %q", by["stderr"]["MESSAGE"])
			}
			return nil
		})
	})

	t.Run("flowsAcrossKill9OfAppd", func(t *testing.T) {
		h.appd.kill()
		h.appd = nil
		seen, _ := sink.last()
		eventually(t, time.Minute, "new lines while appd is dead", func() error {
			if now, _ := sink.last(); now <= seen+3 {
				return fmt.Errorf("last tick %d, was %d when appd died", now, seen)
			}
			return nil
		})
		h.startAppd()
		after := pids(h.running("jl", 1, false, 2*time.Minute))
		if fmt.Sprint(after) != fmt.Sprint(before) {
			t.Fatalf("container PID changed across the kill: %v -> %v", before, after)
		}
		seen, _ = sink.last()
		eventually(t, time.Minute, "new lines after appd is back", func() error {
			if now, _ := sink.last(); now <= seen+3 {
				return fmt.Errorf("last tick %d, was %d when appd came back", now, seen)
			}
			return nil
		})
	})

	if err := h.api.Delete(ctx, "jl", ""); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Minute, "no container left", func() error {
		if out, _ := h.ctr("containers", "ls", "-q"); strings.TrimSpace(out) != "" {
			return fmt.Errorf("containers: %s", out)
		}
		return nil
	})
}
