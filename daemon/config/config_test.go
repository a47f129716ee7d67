package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func write(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "stellar.toml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaultConfig_isValid(t *testing.T) {
	c := DefaultConfig()
	c.Node.Name = "node1"
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestLoad_noFileGivesDefaults(t *testing.T) {
	c, err := Load(filepath.Join(t.TempDir(), "absent.toml"), false)
	if err != nil {
		t.Fatal(err)
	}
	if c.Node.Name == "" || c.DNS.TTL != 5*time.Second || c.Network.Bridge != "stellar0" {
		t.Fatalf("unexpected %+v", c)
	}
}

func TestLoad_explicitMissingFileFails(t *testing.T) {
	if _, err := Load(filepath.Join(t.TempDir(), "absent.toml"), true); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("want not exist, got %v", err)
	}
}

func TestLoad_overrides(t *testing.T) {
	p := write(t, "[node]\nname = \"edge-1\"\nlabels = [\"env=prod\"]\n[dns]\nttl = \"30s\"\n[gossip]\nprofile = \"edge\"\n")
	c, err := Load(p, true)
	if err != nil {
		t.Fatal(err)
	}
	if c.Node.Name != "edge-1" || c.DNS.TTL != 30*time.Second || c.Gossip.Profile != "edge" || c.LabelMap()["env"] != "prod" {
		t.Fatalf("unexpected %+v", c)
	}
}

func TestLoad_badInputNamesFileLineKey(t *testing.T) {
	tests := []struct {
		name string
		body string
		want string
	}{
		{"unknown key", "[node]\nname = \"a\"\ncolour = \"red\"\n", ":3: key node.colour: unknown key"},
		{"unknown section", "[nodes]\nname = \"a\"\n", "key nodes"},
		{"bad duration", "[dns]\n\nttl = \"5 parsecs\"\n", ":3: key dns.ttl"},
		{"wrong type", "[network]\nnode_prefix = \"big\"\n", ":2: key network.node_prefix"},
		{"bad subnet", "[network]\nsubnet = \"10.0.0.1/8\"\n", ":2: key network.subnet: \"10.0.0.1/8\" is not an IPv4 network"},
		{"bad profile", "[gossip]\nprofile = \"wan\"\n", ":2: key gossip.profile"},
		{"bad label", "[node]\nlabels = [\"nolabel\"]\n", ":2: key node.labels"},
		{"bad name", "[node]\nname = \"Bad_Name\"\n", ":2: key node.name"},
		{"syntax", "[node\n", "stellar.toml:"},
		{"prefix", "[network]\nnode_prefix = 31\n", "key network.node_prefix"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := write(t, tt.body)
			_, err := Load(p, true)
			if err == nil {
				t.Fatal("want an error")
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), p) {
				t.Fatalf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func TestTOML_roundTrips(t *testing.T) {
	c := DefaultConfig()
	c.Node.Name = "n1"
	var back Config
	if err := Parse("x", []byte(c.TOML()), &back); err != nil {
		t.Fatalf("%v\n%s", err, c.TOML())
	}
	if back.TOML() != c.TOML() {
		t.Fatalf("round trip differs:\n%s\n%s", c.TOML(), back.TOML())
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("[node]\nname = \"a\"\n"))
	f.Add([]byte("[dns]\nttl = \"1s\"\nlisten = [\"1.2.3.4:53\"]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c := DefaultConfig()
		if err := Parse("f", data, &c); err == nil {
			_ = c.Validate()
		}
	})
}
