// Command stellar-cni-ipam is the CNI IPAM plugin of Stellar: it forwards
// every call to stellar-netd over its Unix socket.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"
)

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{Add: cmdAdd, Del: cmdDel, Check: cmdCheck, GC: cmdGC, Status: cmdStatus},
		version.All, "stellar-cni-ipam: Stellar's CNI IPAM plugin (asks stellar-netd)")
}
