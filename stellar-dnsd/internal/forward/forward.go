// Package forward sends questions outside the cluster zone to the upstream
// name servers, with a timeout per server and failover across them.
package forward

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// Forwarder asks a list of upstream servers in turn.
type Forwarder struct {
	upstreams []string
	timeout   time.Duration
	// next is the index of the server to try first: the last one that
	// answered.
	next atomic.Uint32
}

// New returns a forwarder to upstreams (host:port), each given timeout.
func New(upstreams []string, timeout time.Duration) *Forwarder {
	return &Forwarder{upstreams: upstreams, timeout: timeout}
}

// Upstreams returns the servers in use.
func (f *Forwarder) Upstreams() []string { return f.upstreams }

// ErrNoUpstream means no upstream server is configured.
var ErrNoUpstream = errors.New("no upstream name server")

// Forward sends q to the upstreams, starting with the last that answered,
// until one answers with something other than SERVFAIL or REFUSED. Over
// tcp it uses TCP; a truncated UDP answer is passed on (the client asks
// again over TCP).
func (f *Forwarder) Forward(ctx context.Context, q *dns.Msg, tcp bool) (*dns.Msg, error) {
	n := len(f.upstreams)
	if n == 0 {
		return nil, ErrNoUpstream
	}
	netw := "udp"
	if tcp {
		netw = "tcp"
	}
	c := &dns.Client{Net: netw, Timeout: f.timeout, UDPSize: 1232}
	start := int(f.next.Load()) % n
	var errs []error
	var last *dns.Msg
	for i := 0; i < n; i++ {
		if ctx.Err() != nil {
			break
		}
		idx := (start + i) % n
		up := f.upstreams[idx]
		resp, _, err := c.ExchangeContext(ctx, q, up)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", up, err))
			continue
		}
		if resp.Rcode == dns.RcodeServerFailure || resp.Rcode == dns.RcodeRefused {
			last = resp
			errs = append(errs, fmt.Errorf("%s: %s", up, dns.RcodeToString[resp.Rcode]))
			continue
		}
		f.next.Store(uint32(idx))
		return resp, nil
	}
	if last != nil {
		return last, nil
	}
	if ctx.Err() != nil {
		errs = append(errs, ctx.Err())
	}
	return nil, fmt.Errorf("forward %s: %w", q.Question[0].Name, errors.Join(errs...))
}

// Resolve returns the upstream servers: configured (ip or ip:port) when
// given, else the nameservers of resolvConf; never one of own (Stellar's
// own DNS addresses, ip:port or ip). skipped names the ones left out.
func Resolve(configured []string, resolvConf string, own []string) (ups []string, skipped []string, err error) {
	cands := configured
	if len(cands) == 0 {
		f, err := os.Open(resolvConf)
		if err != nil {
			return nil, nil, fmt.Errorf("read upstream servers from %s: %w", resolvConf, err)
		}
		defer f.Close()
		cands = ParseResolvConf(f)
	}
	isOwn := func(hp string) bool {
		host, port, _ := net.SplitHostPort(hp)
		for _, o := range own {
			oh, op, err := net.SplitHostPort(o)
			if err != nil {
				oh, op = o, ""
			}
			a, e1 := netip.ParseAddr(oh)
			b, e2 := netip.ParseAddr(host)
			if e1 == nil && e2 == nil && a.Unmap() == b.Unmap() && (op == "" || op == port) {
				return true
			}
		}
		return false
	}
	for _, c := range cands {
		hp := c
		if _, _, err := net.SplitHostPort(c); err != nil {
			hp = net.JoinHostPort(c, "53")
		}
		if isOwn(hp) {
			skipped = append(skipped, hp)
			continue
		}
		ups = append(ups, hp)
	}
	return ups, skipped, nil
}

// ParseResolvConf returns the nameserver addresses of a resolv.conf.
func ParseResolvConf(r io.Reader) []string {
	var out []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		a, err := netip.ParseAddr(f[1])
		if err != nil {
			continue
		}
		out = append(out, a.WithZone("").String())
	}
	return out
}
