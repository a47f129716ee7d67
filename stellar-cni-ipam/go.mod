module stellar.dev/stellar-cni-ipam

go 1.26.0

require stellar.dev/api v0.0.0-00010101000000-000000000000

require (
	github.com/containernetworking/cni v1.3.1
	github.com/vishvananda/netns v0.0.4 // indirect
	golang.org/x/sys v0.23.0 // indirect
)

replace stellar.dev/api => ../api
