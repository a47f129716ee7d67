module stellar.dev/stellar-cni-ipam

go 1.26.0

require stellar.dev/api v0.0.0-00010101000000-000000000000

require (
	golang.org/x/net v0.59.0 // indirect
	golang.org/x/tools v0.49.0 // indirect
)

require (
	github.com/containernetworking/cni v1.3.1
	github.com/vishvananda/netns v0.0.5 // indirect
	golang.org/x/sys v0.48.0 // indirect
)

replace stellar.dev/api => ../api
