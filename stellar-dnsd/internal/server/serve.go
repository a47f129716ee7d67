package server

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"time"
)

// Limits bound what a flood of queries can take.
type Limits struct {
	// UDPWorkers read and answer UDP queries per socket (0: 2 per CPU).
	UDPWorkers int
	// Forwards is the most forwarded queries in flight; beyond it a
	// forwarded UDP query is dropped (the client retries).
	Forwards int
	// TCPConns is the most open TCP connections per listener; beyond it
	// new connections are closed at once.
	TCPConns int
	// TCPIdle closes a TCP connection with no query for this long.
	TCPIdle time.Duration
	// TCPQueries is the most queries answered on one TCP connection.
	TCPQueries int
	// ForwardTimeout bounds one forwarded query, all upstreams included.
	ForwardTimeout time.Duration
}

// DefaultLimits returns the limits stellar-dnsd runs with.
func DefaultLimits() Limits {
	return Limits{UDPWorkers: 2 * runtime.GOMAXPROCS(0), Forwards: 512, TCPConns: 256, TCPIdle: 10 * time.Second, TCPQueries: 1000, ForwardTimeout: 5 * time.Second}
}

// Server serves a Handler on UDP and TCP sockets.
type Server struct {
	h      *Handler
	lim    Limits
	log    *slog.Logger
	fwdSem chan struct{}
	wg     sync.WaitGroup
}

// New returns a server of h with the limits lim.
func New(h *Handler, lim Limits, log *slog.Logger) *Server {
	if lim.UDPWorkers <= 0 {
		lim.UDPWorkers = 2 * runtime.GOMAXPROCS(0)
	}
	return &Server{h: h, lim: lim, log: log, fwdSem: make(chan struct{}, max(lim.Forwards, 1))}
}

// ServeUDP answers queries on pc until ctx is done; it closes pc then.
func (s *Server) ServeUDP(ctx context.Context, pc net.PacketConn) error {
	stop := context.AfterFunc(ctx, func() { pc.Close() })
	defer stop()
	errc := make(chan error, s.lim.UDPWorkers)
	for i := 0; i < s.lim.UDPWorkers; i++ {
		go func() { errc <- s.udpWorker(ctx, pc) }()
	}
	var first error
	for i := 0; i < s.lim.UDPWorkers; i++ {
		if err := <-errc; err != nil && first == nil && ctx.Err() == nil {
			first = err
			pc.Close()
		}
	}
	s.wg.Wait()
	return first
}

func (s *Server) udpWorker(ctx context.Context, pc net.PacketConn) error {
	buf := make([]byte, MaxUDPQuery)
	uc, _ := pc.(*net.UDPConn)
	for {
		var n int
		var addr net.Addr
		var err error
		if uc != nil {
			var ap = new(net.UDPAddr)
			n, ap, err = uc.ReadFromUDP(buf)
			addr = ap
		} else {
			n, addr, err = pc.ReadFrom(buf)
		}
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			s.log.Warn("read udp query", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		out, pending := s.h.Handle(buf[:n], false)
		if out != nil {
			_, _ = pc.WriteTo(out, addr)
			continue
		}
		if pending == nil {
			continue
		}
		select {
		case s.fwdSem <- struct{}{}:
		default:
			s.h.count(false, OutDropped)
			continue // too many forwards in flight: drop, the client retries
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-s.fwdSem }()
			fctx, cancel := context.WithTimeout(ctx, s.lim.ForwardTimeout)
			defer cancel()
			if out := s.h.Forward(fctx, pending); out != nil {
				_, _ = pc.WriteTo(out, addr)
			}
		}()
	}
}

// ServeTCP answers queries on l until ctx is done; it closes l then.
func (s *Server) ServeTCP(ctx context.Context, l net.Listener) error {
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	sem := make(chan struct{}, max(s.lim.TCPConns, 1))
	var conns sync.WaitGroup
	defer conns.Wait()
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			s.log.Warn("accept tcp", "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		select {
		case sem <- struct{}{}:
		default:
			c.Close() // too many connections
			s.h.count(true, OutDropped)
			continue
		}
		conns.Add(1)
		go func() {
			defer conns.Done()
			defer func() { <-sem }()
			s.serveConn(ctx, c)
		}()
	}
}

func (s *Server) serveConn(ctx context.Context, c net.Conn) {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	var lenBuf [2]byte
	buf := make([]byte, 512)
	for i := 0; i < s.lim.TCPQueries; i++ {
		_ = c.SetReadDeadline(time.Now().Add(s.lim.TCPIdle))
		if _, err := io.ReadFull(c, lenBuf[:]); err != nil {
			return // closed, idle or broken
		}
		n := int(binary.BigEndian.Uint16(lenBuf[:]))
		if n > MaxTCPQuery {
			s.h.count(true, OutDropped)
			return
		}
		if n > len(buf) {
			buf = make([]byte, n)
		}
		if _, err := io.ReadFull(c, buf[:n]); err != nil {
			return
		}
		out, pending := s.h.Handle(buf[:n], true)
		if pending != nil {
			fctx, cancel := context.WithTimeout(ctx, s.lim.ForwardTimeout)
			out = s.h.Forward(fctx, pending)
			cancel()
		}
		if out == nil {
			continue
		}
		msg := make([]byte, 2+len(out))
		binary.BigEndian.PutUint16(msg, uint16(len(out)))
		copy(msg[2:], out)
		_ = c.SetWriteDeadline(time.Now().Add(s.lim.TCPIdle))
		if _, err := c.Write(msg); err != nil {
			return
		}
	}
}
