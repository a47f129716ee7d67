package lab

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is one process as seen in /proc.
type proc struct {
	pid, ppid int
	start     uint64 // start time in clock ticks since boot
	comm      string
	state     byte
}

func readProc(pid int) (proc, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return proc{}, err
	}
	s := string(b)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < 0 || end+2 >= len(s) {
		return proc{}, errors.New("bad stat")
	}
	p := proc{pid: pid, comm: s[open+1 : end]}
	f := strings.Fields(s[end+2:])
	if len(f) < 20 {
		return proc{}, errors.New("short stat")
	}
	p.state = f[0][0]
	p.ppid, _ = strconv.Atoi(f[1])
	p.start, _ = strconv.ParseUint(f[19], 10, 64)
	return p, nil
}

func allProcs() []proc {
	ents, _ := os.ReadDir("/proc")
	out := make([]proc, 0, len(ents))
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, err := readProc(pid); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// alive says whether pid still is the process that started at start.
func alive(pid int, start uint64) bool {
	if pid <= 0 {
		return false
	}
	p, err := readProc(pid)
	return err == nil && p.start == start && p.state != 'Z'
}

// descendants returns root and every process below it.
func descendants(root int, procs []proc) []int {
	children := map[int][]int{}
	for _, p := range procs {
		children[p.ppid] = append(children[p.ppid], p.pid)
	}
	var out []int
	queue := []int{root}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		out = append(out, pid)
		queue = append(queue, children[pid]...)
	}
	return out
}

func nsInode(path string) uint64 {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0
	}
	return st.Ino
}

// procsInNetns lists processes whose network namespace is the named one.
func procsInNetns(ns string, procs []proc) []int {
	ino := nsInode(netnsPath(ns))
	if ino == 0 {
		return nil
	}
	var out []int
	for _, p := range procs {
		if p.pid == os.Getpid() {
			continue
		}
		if nsInode(filepath.Join("/proc", strconv.Itoa(p.pid), "ns/net")) == ino {
			out = append(out, p.pid)
		}
	}
	return out
}

// killAll stops the given processes at once (SIGSTOP, so none can fork or
// react), then SIGKILLs them, and waits until they are gone or timeout.
func killAll(pids []int, timeout time.Duration) bool {
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGSTOP)
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline := time.Now().Add(timeout)
	for {
		left := false
		for _, pid := range pids {
			if p, err := readProc(pid); err == nil && p.state != 'Z' {
				left = true
				break
			}
		}
		if !left {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}
