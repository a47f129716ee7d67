package lab

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// This kernel has no netem qdisc, so delay is done in user space: an iptables
// rule in the node's network namespace queues every IPv4 packet arriving on
// its eth0 (NFQUEUE, fail-open), and a helper process holds each packet for
// the delay before accepting it, in order. The helper is this program run
// again with STELLAR_LAB_HELPER=delay; see RunHelper.

const helperEnv = "STELLAR_LAB_HELPER"

// RunHelper runs a lab helper process and exits when the process was started
// as one; otherwise it returns at once. Every program that calls Lab.Delay
// (stellar-lab, and a test binary's TestMain) must call it first thing.
func RunHelper() {
	if os.Getenv(helperEnv) != "delay" {
		return
	}
	q, _ := strconv.Atoi(os.Getenv("STELLAR_LAB_QUEUE"))
	ms, _ := strconv.Atoi(os.Getenv("STELLAR_LAB_DELAY_MS"))
	if err := runDelayer(uint16(q), time.Duration(ms)*time.Millisecond); err != nil {
		fmt.Fprintln(os.Stderr, "stellar-lab delay helper:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

type delayHelper struct {
	PID   int    `json:"pid"`
	Start uint64 `json:"start"`
	MS    int    `json:"ms"`
}

func (l *Lab) delayFile(node string) string { return filepath.Join(l.nodeRunDir(node), "delay.json") }

func delayQueue(node string) uint16 {
	i, _ := NodeIndex(node)
	return uint16(7700 + i)
}

func (l *Lab) delayRule(node string) []string {
	return []string{"-t", "mangle", "PREROUTING", "-i", "eth0", "-j", "NFQUEUE",
		"--queue-num", strconv.Itoa(int(delayQueue(node))), "--queue-bypass"}
}

func (l *Lab) iptablesIn(ctx context.Context, node, op string) error {
	r := l.delayRule(node)
	args := append([]string{"--net=" + netnsPath(l.NodeNS(node)), "--", "iptables", "-w", r[0], r[1], op}, r[2:]...)
	_, err := run(ctx, "nsenter", args...)
	return err
}

// applyDelays starts, restarts or stops the delay helpers to match f.
func (l *Lab) applyDelays(ctx context.Context, f Faults) error {
	nodes, err := l.knownNodes()
	if err != nil {
		return err
	}
	for _, s := range nodes {
		want := f.DelayMS[s.Name]
		var h delayHelper
		if b, err := os.ReadFile(l.delayFile(s.Name)); err == nil {
			_ = json.Unmarshal(b, &h)
		}
		running := alive(h.PID, h.Start)
		if running && h.MS == want && l.running(s) {
			continue
		}
		if running {
			killAll([]int{h.PID}, 5*time.Second)
		}
		_ = os.Remove(l.delayFile(s.Name))
		for l.iptablesIn(ctx, s.Name, "-D") == nil {
		}
		if want <= 0 || !l.running(s) {
			continue
		}
		if err := l.startDelayer(ctx, s.Name, want); err != nil {
			return fmt.Errorf("delay %s: %w", s.Name, err)
		}
	}
	return nil
}

func (l *Lab) startDelayer(ctx context.Context, node string, ms int) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	logf, err := os.OpenFile(filepath.Join(l.nodeRunDir(node), "delay.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	prev, _ := os.ReadFile(logf.Name())
	bound := strings.Count(string(prev), "bound queue "+strconv.Itoa(int(delayQueue(node))))
	// -test.run=^$ makes a test binary that forgot RunHelper in TestMain
	// run no tests instead of all of them; RunHelper never reads arguments.
	cmd := exec.Command("nsenter", "--net="+netnsPath(l.NodeNS(node)), "--", exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=delay",
		"STELLAR_LAB_QUEUE="+strconv.Itoa(int(delayQueue(node))), "STELLAR_LAB_DELAY_MS="+strconv.Itoa(ms))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start delay helper: %w", err)
	}
	go cmd.Wait()
	p, err := readProc(cmd.Process.Pid)
	if err != nil {
		return fmt.Errorf("delay helper died at once: %s", tail(logf.Name(), 5))
	}
	if err := writeJSON(l.delayFile(node), delayHelper{PID: p.pid, Start: p.start, MS: ms}); err != nil {
		return err
	}
	// Give the helper a moment to bind its queue; until then the rule's
	// bypass lets packets through undelayed.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if b, _ := os.ReadFile(logf.Name()); strings.Count(string(b), "bound queue "+strconv.Itoa(int(delayQueue(node)))) > bound {
			break
		}
		if !alive(p.pid, p.start) || time.Now().After(deadline) {
			killAll([]int{p.pid}, time.Second)
			_ = os.Remove(l.delayFile(node))
			return fmt.Errorf("delay helper %s did not start (does the program call lab.RunHelper first?): %s", exe, tail(logf.Name(), 5))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := l.iptablesIn(ctx, node, "-I"); err != nil {
		return fmt.Errorf("add queue rule: %w", err)
	}
	l.Log.Info("delaying packets to node", "node", node, "ms", ms)
	return nil
}

// nfnetlink_queue constants (linux/netfilter/nfnetlink_queue.h).
const (
	nfnlSubsysQueue   = 3
	nfqnlMsgPacket    = 0
	nfqnlMsgVerdict   = 1
	nfqnlMsgConfig    = 2
	nfqaCfgCmd        = 1
	nfqaCfgParams     = 2
	nfqaCfgQueueMax   = 3
	nfqaCfgMask       = 4
	nfqaCfgFlags      = 5
	nfqaPacketHdr     = 1
	nfqaVerdictHdr    = 2
	nfqnlCfgCmdBind   = 1
	nfqnlCopyMeta     = 1
	nfqaCfgFFailOpen  = 1
	nfAccept          = 1
	netlinkNoENOBUFS  = 5
	solNetlink        = 270
	netlinkNetfilter  = 12
	nlmsgHdrLen       = 16
	nfgenHdrLen       = 4
	nlmsgTypeError    = 2
	nlFlagsRequestAck = syscall.NLM_F_REQUEST | syscall.NLM_F_ACK
)

type nfqueue struct {
	fd    int
	queue uint16
	seq   uint32
}

func nlAttr(typ uint16, payload []byte) []byte {
	n := 4 + len(payload)
	b := make([]byte, (n+3)&^3)
	binary.LittleEndian.PutUint16(b[0:], uint16(n))
	binary.LittleEndian.PutUint16(b[2:], typ)
	copy(b[4:], payload)
	return b
}

func (q *nfqueue) send(msgType uint16, flags uint16, family uint8, attrs ...[]byte) error {
	body := []byte{family, 0, byte(q.queue >> 8), byte(q.queue)}
	for _, a := range attrs {
		body = append(body, a...)
	}
	q.seq++
	msg := make([]byte, nlmsgHdrLen, nlmsgHdrLen+len(body))
	binary.LittleEndian.PutUint32(msg[0:], uint32(nlmsgHdrLen+len(body)))
	binary.LittleEndian.PutUint16(msg[4:], nfnlSubsysQueue<<8|msgType)
	binary.LittleEndian.PutUint16(msg[6:], flags)
	binary.LittleEndian.PutUint32(msg[8:], q.seq)
	msg = append(msg, body...)
	return syscall.Sendto(q.fd, msg, 0, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK})
}

func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

func runDelayer(queue uint16, delay time.Duration) error {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	fd, err := syscall.Socket(syscall.AF_NETLINK, syscall.SOCK_RAW, netlinkNetfilter)
	if err != nil {
		return fmt.Errorf("open netfilter netlink socket: %w", err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK}); err != nil {
		return fmt.Errorf("bind netlink socket: %w", err)
	}
	_ = syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, 64<<20)
	_ = syscall.SetsockoptInt(fd, solNetlink, netlinkNoENOBUFS, 1)
	q := &nfqueue{fd: fd, queue: queue}
	if err := q.send(nfqnlMsgConfig, nlFlagsRequestAck, syscall.AF_UNSPEC,
		nlAttr(nfqaCfgCmd, []byte{nfqnlCfgCmdBind, 0, 0, syscall.AF_INET})); err != nil {
		return fmt.Errorf("bind queue %d: %w", queue, err)
	}
	params := append(be32(0xffff), nfqnlCopyMeta)
	if err := q.send(nfqnlMsgConfig, nlFlagsRequestAck, syscall.AF_UNSPEC,
		nlAttr(nfqaCfgParams, params), nlAttr(nfqaCfgQueueMax, be32(1<<16)),
		nlAttr(nfqaCfgMask, be32(nfqaCfgFFailOpen)), nlAttr(nfqaCfgFlags, be32(nfqaCfgFFailOpen))); err != nil {
		return fmt.Errorf("configure queue %d: %w", queue, err)
	}
	type held struct {
		id uint32
		at time.Time
	}
	ch := make(chan held, 1<<16)
	go func() {
		for h := range ch {
			if d := time.Until(h.at); d > 0 {
				time.Sleep(d)
			}
			verdict := append(be32(nfAccept), be32(h.id)...)
			if err := q.send(nfqnlMsgVerdict, syscall.NLM_F_REQUEST, syscall.AF_UNSPEC, nlAttr(nfqaVerdictHdr, verdict)); err != nil {
				log.Error("send verdict", "err", err)
			}
		}
	}()
	log.Info("bound queue "+strconv.Itoa(int(queue)), "delay", delay)
	buf := make([]byte, 1<<20)
	for {
		n, _, err := syscall.Recvfrom(fd, buf, 0)
		if errors.Is(err, syscall.EINTR) || errors.Is(err, syscall.ENOBUFS) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read queue: %w", err)
		}
		now := time.Now()
		for b := buf[:n]; len(b) >= nlmsgHdrLen; {
			l := int(binary.LittleEndian.Uint32(b[0:]))
			if l < nlmsgHdrLen || l > len(b) {
				break
			}
			typ := binary.LittleEndian.Uint16(b[4:])
			msg := b[nlmsgHdrLen:l]
			b = b[min((l+3)&^3, len(b)):]
			if typ == nlmsgTypeError {
				if len(msg) >= 4 {
					if code := int32(binary.LittleEndian.Uint32(msg)); code != 0 {
						log.Error("netlink error", "errno", syscall.Errno(-code))
					}
				}
				continue
			}
			if typ != nfnlSubsysQueue<<8|nfqnlMsgPacket || len(msg) < nfgenHdrLen {
				continue
			}
			for a := msg[nfgenHdrLen:]; len(a) >= 4; {
				al := int(binary.LittleEndian.Uint16(a[0:]))
				at := binary.LittleEndian.Uint16(a[2:]) & 0x3fff
				if al < 4 || al > len(a) {
					break
				}
				if at == nfqaPacketHdr && al >= 8 {
					ch <- held{id: binary.BigEndian.Uint32(a[4:]), at: now.Add(delay)}
				}
				a = a[min((al+3)&^3, len(a)):]
			}
		}
	}
}
