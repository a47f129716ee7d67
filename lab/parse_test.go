package lab

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestNodeIndex(t *testing.T) {
	tests := []struct {
		name string
		want int
		ok   bool
	}{
		{"node1", 1, true},
		{"node12", 12, true},
		{"node0", 0, false},
		{"node81", 0, false},
		{"client", 0, false},
		{"nodeX", 0, false},
	}
	for _, tt := range tests {
		got, err := NodeIndex(tt.name)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("NodeIndex(%q) = %d, %v; want %d, ok=%v", tt.name, got, err, tt.want, tt.ok)
		}
	}
	if got := NodeAddr(3).String(); got != "10.77.0.13" {
		t.Errorf("NodeAddr(3) = %s", got)
	}
}

func TestParseDepends(t *testing.T) {
	tests := []struct {
		field string
		want  []string
	}{
		{"containerd, runc (>= 1.1), adduser", []string{"adduser", "containerd", "runc"}},
		{"libc6:any (>= 2.34) | musl, init-system-helpers (>= 1.52),", []string{"init-system-helpers", "libc6"}},
		{"", nil},
	}
	for _, tt := range tests {
		if got := parseDepends(tt.field); !slices.Equal(got, tt.want) {
			t.Errorf("parseDepends(%q) = %q, want %q", tt.field, got, tt.want)
		}
	}
}

func TestParseSources(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		file, content string
		want          []sourceEntry
	}{
		{"a.sources", "Types: deb\nURIs: http://mirror/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb-src\nURIs: http://src/\nSuites: bookworm\n\nTypes: deb\nURIs: http://sec/debian-security\nSuites: bookworm-security\nEnabled: no\n",
			[]sourceEntry{{uri: "http://mirror/debian", suites: []string{"bookworm", "bookworm-updates"}}}},
		{"b.list", "# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://m2/debian bookworm main\ndeb-src http://x bookworm main\ndeb http://sec bookworm-security main\n",
			[]sourceEntry{{uri: "http://m2/debian", suites: []string{"bookworm"}}, {uri: "http://sec", suites: []string{"bookworm-security"}}}},
	}
	for _, tt := range tests {
		p := filepath.Join(dir, tt.file)
		if err := os.WriteFile(p, []byte(tt.content), 0o644); err != nil {
			t.Fatal(err)
		}
		got := parseSources(p)
		if len(got) != len(tt.want) {
			t.Fatalf("%s: got %+v, want %+v", tt.file, got, tt.want)
		}
		for i := range got {
			if got[i].uri != tt.want[i].uri || !slices.Equal(got[i].suites, tt.want[i].suites) {
				t.Errorf("%s[%d]: got %+v, want %+v", tt.file, i, got[i], tt.want[i])
			}
		}
	}
}

func TestFaultRuleset(t *testing.T) {
	tests := []struct {
		name   string
		faults Faults
		want   []string
		empty  bool
	}{
		{name: "none", empty: true},
		{name: "partition", faults: Faults{Partitions: [][]string{{"node1", "node2"}}},
			want: []string{`iifname "node1" oifname != { "client", "node1", "node2" } drop`, `oifname "node2" iifname != { "client", "node1", "node2" } drop`}},
		{name: "loss", faults: Faults{LossPercent: map[string]float64{"node3": 12.5}},
			want: []string{`oifname "node3" numgen random mod 10000 < 1250 drop`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := faultRuleset(tt.faults)
			if tt.empty != (got == "") {
				t.Fatalf("ruleset = %q", got)
			}
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("ruleset lacks %q:\n%s", w, got)
				}
			}
		})
	}
}

func TestMissingPackages(t *testing.T) {
	root := t.TempDir()
	status := "Package: containerd\nStatus: install ok installed\nVersion: 1\n\nPackage: runc\nStatus: deinstall ok config-files\n\nPackage: iptables\nStatus: install ok installed\nProvides: firewall (= 1)\n"
	if err := os.MkdirAll(filepath.Join(root, "var/lib/dpkg"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "var/lib/dpkg/status"), []byte(status), 0o644); err != nil {
		t.Fatal(err)
	}
	got := missingPackages(root, []string{"containerd", "runc", "firewall", "adduser"})
	if want := []string{"runc", "adduser"}; !slices.Equal(got, want) {
		t.Errorf("missingPackages = %q, want %q", got, want)
	}
}

func TestRootfsKeyFollowsPackages(t *testing.T) {
	a := rootfsKey(normalizePackages([]string{"b", "a"}))
	b := rootfsKey(normalizePackages([]string{"a", "b", "a"}))
	c := rootfsKey(normalizePackages([]string{"a", "b", "c"}))
	if a != b || a == c {
		t.Errorf("keys: %s %s %s", a, b, c)
	}
}
