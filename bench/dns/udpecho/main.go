// Command udpecho is the physical limit of the DNS benchmark: a bare UDP
// server that sends every query back with the QR bit set, doing no DNS work.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"runtime"
)

func main() {
	addr := flag.String("l", "127.0.0.1:5399", "listen address")
	flag.Parse()
	pc, err := net.ListenPacket("udp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "udpecho:", err)
		os.Exit(1)
	}
	uc := pc.(*net.UDPConn)
	done := make(chan struct{})
	for i := 0; i < 2*runtime.GOMAXPROCS(0); i++ {
		go func() {
			buf := make([]byte, 4096)
			for {
				n, a, err := uc.ReadFromUDPAddrPort(buf)
				if err != nil {
					close(done)
					return
				}
				if n >= 12 {
					buf[2] |= 0x80
					_, _ = uc.WriteToUDPAddrPort(buf[:n], a)
				}
			}
		}()
	}
	<-done
}
