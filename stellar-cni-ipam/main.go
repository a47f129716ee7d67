// Command stellar-cni-ipam is the CNI IPAM plugin of Stellar: it forwards
// every call to stellar-netd over its Unix socket.
package main

import (
	"fmt"
	"os"
)

func main() {
	// Placeholder until the plugin is built: answer as a CNI plugin would,
	// with an error result on stdout.
	fmt.Println(`{"cniVersion":"1.0.0","code":999,"msg":"stellar-cni-ipam is not implemented yet"}`)
	os.Exit(1)
}
