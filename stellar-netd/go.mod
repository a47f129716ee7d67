module stellar.dev/stellar-netd

go 1.26.0

require stellar.dev/api v0.0.0-00010101000000-000000000000

replace stellar.dev/api => ../api

require stellar.dev/daemon v0.0.0-00010101000000-000000000000

require (
	github.com/vishvananda/netlink v1.3.1 // indirect
	github.com/vishvananda/netns v0.0.5 // indirect
	golang.org/x/sys v0.48.0 // indirect
)

replace stellar.dev/daemon => ../daemon
