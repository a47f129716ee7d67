package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"stellar.dev/daemon/atomicfile"
	"stellar.dev/daemon/config"
)

// CNIConfName is the file netd writes in [network] cni_conf_dir.
const CNIConfName = "10-stellar.conflist"

// CNINetworkName is the CNI network name appd asks for.
const CNINetworkName = "stellar"

// cniConf returns the network configuration list: the bridge plugin with
// stellar-cni-ipam, then portmap and loopback. cniVersion is 1.0.0 (see
// README: Debian's bridge refuses 1.1.0).
func cniConf(cfg config.Config) ([]byte, error) {
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       CNINetworkName,
		"plugins": []any{
			map[string]any{
				"type":        "bridge",
				"bridge":      cfg.Network.Bridge,
				"isGateway":   true,
				"ipMasq":      false,
				"hairpinMode": true,
				"ipam": map[string]any{
					"type":   "stellar-cni-ipam",
					"socket": cfg.Socket("netd"),
				},
			},
			map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}, "snat": true},
			map[string]any{"type": "loopback"},
		},
	}
	return json.MarshalIndent(conf, "", "  ")
}

// writeCNIConf writes the configuration atomically when it changed.
func writeCNIConf(cfg config.Config) error {
	data, err := cniConf(cfg)
	if err != nil {
		return fmt.Errorf("encode cni configuration: %w", err)
	}
	data = append(data, '\n')
	path := filepath.Join(cfg.Network.CNIConfDir, CNIConfName)
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return nil
	}
	if err := os.MkdirAll(cfg.Network.CNIConfDir, 0o755); err != nil {
		return fmt.Errorf("write cni configuration: %w", err)
	}
	if err := atomicfile.Write(path, data, 0o644); err != nil {
		return fmt.Errorf("write cni configuration: %w", err)
	}
	return nil
}

func removeCNIConf(cfg config.Config) error {
	err := os.Remove(filepath.Join(cfg.Network.CNIConfDir, CNIConfName))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove cni configuration: %w", err)
	}
	return nil
}
