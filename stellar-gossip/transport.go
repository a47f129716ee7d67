package main

import (
	"fmt"
	"log"
	"net"
	"time"

	"github.com/hashicorp/memberlist"
)

// sourcedTransport is memberlist's network transport whose outgoing TCP
// connections leave from the bound address when [gossip] bind names one:
// peers and packet filters then see the node's own address, not whatever
// source the kernel picks for the route.
type sourcedTransport struct {
	*memberlist.NetTransport
	local *net.TCPAddr
}

func newTransport(host string, port int, logger *log.Logger) (*sourcedTransport, int, error) {
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{host}, BindPort: port, Logger: logger})
	if err != nil {
		return nil, 0, fmt.Errorf("bind gossip on %s: %w", net.JoinHostPort(host, fmt.Sprint(port)), err)
	}
	if port == 0 {
		port = nt.GetAutoBindPort()
	}
	t := &sourcedTransport{NetTransport: nt}
	if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
		t.local = &net.TCPAddr{IP: ip}
	}
	return t, port, nil
}

// DialTimeout dials addr from the bound address.
func (t *sourcedTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	if t.local != nil {
		d.LocalAddr = t.local
	}
	return d.Dial("tcp", addr)
}

// DialAddressTimeout is DialTimeout for memberlist's node-aware calls.
func (t *sourcedTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(a.Addr, timeout)
}
