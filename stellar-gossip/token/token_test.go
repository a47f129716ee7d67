package token

import (
	"strings"
	"testing"
)

func TestParse_roundTrip(t *testing.T) {
	tok, err := New("[::1]:7947", strings.Repeat("ab", 32))
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(tok.String())
	if err != nil {
		t.Fatal(err)
	}
	if got.String() != tok.String() || got.Addr != "[::1]:7947" {
		t.Fatalf("round trip: %+v != %+v", got, tok)
	}
}

func TestParse_rejectsBadTokens(t *testing.T) {
	good, _ := New("127.0.0.1:7947", strings.Repeat("0", 64))
	s := good.String()
	for _, tc := range []struct{ name, in, want string }{
		{"empty", "", "does not start"},
		{"other prefix", "stl2." + s[5:], "does not start"},
		{"missing field", s[:strings.LastIndex(s, ".")], "fields"},
		{"bad id", "stl1.zz" + s[7:], "id"},
		{"short hash", s[:len(s)-2], "ca hash"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.in)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse(%q) = %v, want error with %q", tc.in, err, tc.want)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	good, _ := New("127.0.0.1:7947", strings.Repeat("0", 64))
	f.Add(good.String())
	f.Add("stl1....")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := Parse(s)
		if err != nil {
			return
		}
		again, err := Parse(tok.String())
		if err != nil || again.String() != tok.String() {
			t.Fatalf("re-parse of %q: %v", tok.String(), err)
		}
	})
}
