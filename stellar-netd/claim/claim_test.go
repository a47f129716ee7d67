package claim

import (
	"errors"
	"net/netip"
	"path/filepath"
	"testing"

	"stellar.dev/api/errdefs"
)

func TestBeats_conflictRule(t *testing.T) {
	b := netip.MustParsePrefix("172.16.0.0/22")
	for _, tc := range []struct {
		name string
		a, b Claim
		want bool
	}{
		{"established beats new", Claim{"zz", b, 3}, Claim{"aa", b, 0}, true},
		{"new loses to established", Claim{"aa", b, 0}, Claim{"zz", b, 1}, false},
		{"equals: lower name wins", Claim{"node-1", b, 0}, Claim{"node-2", b, 0}, true},
		{"equals: higher name loses", Claim{"node-2", b, 5}, Claim{"node-1", b, 5}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Beats(tc.a, tc.b); got != tc.want {
				t.Fatalf("Beats = %v, want %v", got, tc.want)
			}
			if Beats(tc.b, tc.a) == tc.want {
				t.Fatal("the rule is not antisymmetric")
			}
		})
	}
}

func TestPick(t *testing.T) {
	r := netip.MustParsePrefix("172.16.0.0/12")
	p := func(s string) netip.Prefix { return netip.MustParsePrefix(s) }
	for _, tc := range []struct {
		name  string
		avoid []netip.Prefix
		want  string
	}{
		{"empty range gives block 0", nil, "172.16.0.0/22"},
		{"skips claimed", []netip.Prefix{p("172.16.0.0/22")}, "172.16.4.0/22"},
		{"skips host route overlapping", []netip.Prefix{p("172.16.0.0/16"), p("172.17.0.0/16")}, "172.18.0.0/22"},
		{"skips a smaller route inside a block", []netip.Prefix{p("172.16.1.0/24")}, "172.16.4.0/22"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Pick(r, 22, tc.avoid)
			if err != nil || got.String() != tc.want {
				t.Fatalf("Pick = %v, %v; want %s", got, err, tc.want)
			}
		})
	}
}

func TestPick_fullRange(t *testing.T) {
	_, err := Pick(netip.MustParsePrefix("10.0.0.0/23"), 24, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("10.0.1.0/24")})
	if !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Fatalf("full range: %v", err)
	}
}

func TestState_saveLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "claim.json")
	if s, err := Load(path); err != nil || s.Subnet != "" {
		t.Fatalf("missing file: %+v %v", s, err)
	}
	if err := Save(path, State{Subnet: "172.16.4.0/22", Final: true}); err != nil {
		t.Fatal(err)
	}
	s, err := Load(path)
	if err != nil || s.Subnet != "172.16.4.0/22" || !s.Final {
		t.Fatalf("load: %+v %v", s, err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"subnet":"172.16.0.0/22","final":true}`))
	f.Add([]byte(`{"subnet":"x"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Parse(data)
		if err == nil && s.Subnet != "" {
			if _, err := netip.ParsePrefix(s.Subnet); err != nil {
				t.Fatalf("accepted %q", s.Subnet)
			}
		}
	})
}
