// Command cnirun runs one CNI operation on a network configuration list
// through libcni, as a container runtime would; netd's integration tests
// run it inside a node's network namespace.
//
//	cnirun add|check|del|gc CONFLIST CONTAINER_ID NETNS IFNAME PLUGIN_DIRS CACHE_DIR
//
// CNIRUN_PORT_MAPPINGS, when set, is the JSON list passed as the
// portMappings capability (for portmap), e.g.
// [{"hostPort":8080,"containerPort":9000,"protocol":"tcp"}].
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/containernetworking/cni/libcni"
)

func main() {
	if err := run(context.Background(), os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "cnirun: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	if len(args) != 7 {
		return fmt.Errorf("usage: cnirun add|check|del|gc CONFLIST CONTAINER_ID NETNS IFNAME PLUGIN_DIRS CACHE_DIR")
	}
	op, path, cid, netns, ifname, dirs, cache := args[0], args[1], args[2], args[3], args[4], args[5], args[6]
	list, err := libcni.ConfListFromFile(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	cni := libcni.NewCNIConfigWithCacheDir(strings.Split(dirs, ":"), cache, nil)
	rt := &libcni.RuntimeConf{ContainerID: cid, NetNS: netns, IfName: ifname}
	if pm := os.Getenv("CNIRUN_PORT_MAPPINGS"); pm != "" {
		var maps []map[string]any
		if err := json.Unmarshal([]byte(pm), &maps); err != nil {
			return fmt.Errorf("decode CNIRUN_PORT_MAPPINGS: %w", err)
		}
		rt.CapabilityArgs = map[string]any{"portMappings": maps}
	}
	switch op {
	case "add":
		res, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			return fmt.Errorf("add: %w", err)
		}
		return json.NewEncoder(os.Stdout).Encode(res)
	case "check":
		return cni.CheckNetworkList(ctx, list, rt)
	case "del":
		return cni.DelNetworkList(ctx, list, rt)
	case "gc":
		return cni.GCNetworkList(ctx, list, &libcni.GCArgs{})
	}
	return fmt.Errorf("unknown operation %q", op)
}
