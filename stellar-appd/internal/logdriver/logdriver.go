// Package logdriver is containerd's binary log driver for Stellar's
// containers: the shim starts stellar-appd in this mode with the task's
// stdout and stderr, and each line goes to journald with STELLAR_APP,
// STELLAR_SERVICE, STELLAR_INSTANCE, CONTAINER_ID and
// SYSLOG_IDENTIFIER=<app>.<service>. Without a journal (a host not booted
// with systemd) lines go to a JSON-lines file per container in Dir. The
// driver runs under the shim, so output keeps flowing while appd restarts.
package logdriver

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Syslog priorities of stdout and stderr lines.
const (
	priErr  = 3
	priInfo = 6
)

// Flag marks the driver's command line: "stellar-appd --stellar-log-driver 1 ...".
const Flag = "--stellar-log-driver"

// Args returns the query arguments for containerd's BinaryIO. journal is
// the journald socket ("" for the default, DefaultJournalSocket).
func Args(app, service, instance, dir, journal string) map[string]string {
	a := map[string]string{Flag: "1", "--app": app, "--service": service, "--instance": instance, "--dir": dir}
	if journal != "" {
		a["--journal"] = journal
	}
	return a
}

// Is reports whether args are the driver's (pairs in any order: the shim
// passes the query in map order).
func Is(args []string) bool {
	for _, a := range args {
		if a == Flag {
			return true
		}
	}
	return false
}

// Line is one line of a log file.
type Line struct {
	Time    time.Time `json:"time"`
	Stream  string    `json:"stream"`
	Message string    `json:"message"`
}

// FilePath is where the driver writes a container's lines without a journal.
func FilePath(dir, containerID string) string { return filepath.Join(dir, containerID+".log") }

// Main runs the driver: fds 3 and 4 are the task's stdout and stderr, fd 5
// is closed once the driver is ready.
func Main(args []string) error {
	opts := map[string]string{}
	for i := 0; i+1 < len(args); i += 2 {
		opts[args[i]] = args[i+1]
	}
	id := os.Getenv("CONTAINER_ID")
	stdout := os.NewFile(3, "CONTAINER_STDOUT")
	stderr := os.NewFile(4, "CONTAINER_STDERR")
	wait := os.NewFile(5, "CONTAINER_WAIT")
	if stdout == nil || stderr == nil || wait == nil {
		return fmt.Errorf("run log driver: the shim's file descriptors 3, 4 and 5 are missing")
	}
	var sink func(stream, msg string)
	jpath := opts["--journal"]
	if jpath == "" {
		jpath = DefaultJournalSocket
	}
	if j, err := openJournal(jpath); err == nil {
		defer j.Close()
		vars := map[string]string{
			"STELLAR_APP":       opts["--app"],
			"STELLAR_SERVICE":   opts["--service"],
			"STELLAR_INSTANCE":  opts["--instance"],
			"CONTAINER_ID":      id,
			"SYSLOG_IDENTIFIER": opts["--app"] + "." + opts["--service"],
		}
		var mu sync.Mutex
		sink = func(stream, msg string) {
			v := make(map[string]string, len(vars)+1)
			for k, x := range vars {
				v[k] = x
			}
			v["STELLAR_STREAM"] = stream
			p := priInfo
			if stream == "stderr" {
				p = priErr
			}
			mu.Lock()
			defer mu.Unlock()
			_ = j.Send(msg, p, v)
		}
	} else {
		dir := opts["--dir"]
		if dir == "" {
			dir = os.TempDir()
		}
		_ = os.MkdirAll(dir, 0o750)
		f, err := os.OpenFile(FilePath(dir, id), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
		if err != nil {
			_ = wait.Close()
			return fmt.Errorf("open log file: %w", err)
		}
		defer f.Close()
		var mu sync.Mutex
		enc := json.NewEncoder(f)
		sink = func(stream, msg string) {
			mu.Lock()
			defer mu.Unlock()
			_ = enc.Encode(Line{Time: time.Now().UTC(), Stream: stream, Message: msg})
		}
	}
	var wg sync.WaitGroup
	for _, s := range []struct {
		name string
		r    io.Reader
	}{{"stdout", stdout}, {"stderr", stderr}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			copyLines(s.r, func(l string) { sink(s.name, l) })
		}()
	}
	_ = wait.Close()
	wg.Wait()
	return nil
}

func copyLines(r io.Reader, fn func(string)) {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			fn(strings.TrimRight(line, "\r\n"))
		}
		if err != nil {
			return
		}
	}
}
