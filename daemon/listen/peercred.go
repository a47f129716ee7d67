package listen

import (
	"context"
	"net"

	"golang.org/x/sys/unix"
)

// Cred is the identity of the process at the other end of a Unix socket,
// from SO_PEERCRED.
type Cred struct {
	PID int32
	UID uint32
	GID uint32
}

type credKey struct{}

// ConnContext is an http.Server ConnContext that stores the peer's
// credentials of Unix connections in the context; read them with PeerCred.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return ctx
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return ctx
	}
	var cred *unix.Ucred
	_ = raw.Control(func(fd uintptr) {
		cred, _ = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if cred == nil {
		return ctx
	}
	return context.WithValue(ctx, credKey{}, Cred{PID: cred.Pid, UID: cred.Uid, GID: cred.Gid})
}

// PeerCred returns the credentials stored by ConnContext.
func PeerCred(ctx context.Context) (Cred, bool) {
	c, ok := ctx.Value(credKey{}).(Cred)
	return c, ok
}
