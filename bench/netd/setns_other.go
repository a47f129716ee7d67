//go:build !amd64 && !arm64

package netd

// sysSetns is unknown here: goTCP fails with ENOSYS and iperf3 is needed.
const sysSetns = ^uintptr(0)
