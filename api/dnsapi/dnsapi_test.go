package dnsapi

import (
	"errors"
	"strings"
	"testing"

	"stellar.dev/api/errdefs"
)

func TestNormalize(t *testing.T) {
	tests := []struct {
		name    string
		in      Record
		want    Record
		wantErr string
	}{
		{name: "A defaults", in: Record{Name: "DB.Example.Stellar.", Value: " 10.0.0.5 "}, want: Record{Name: "db.example.stellar", Type: "A", Value: "10.0.0.5"}},
		{name: "AAAA canonical", in: Record{Name: "v6.example.stellar", Type: "aaaa", Value: "FD00:0::1"}, want: Record{Name: "v6.example.stellar", Type: "AAAA", Value: "fd00::1"}},
		{name: "CNAME", in: Record{Name: "www.example.stellar", Type: "CNAME", Value: "Web.Example.Stellar."}, want: Record{Name: "www.example.stellar", Type: "CNAME", Value: "web.example.stellar"}},
		{name: "TXT kept as is", in: Record{Name: "example.stellar", Type: "TXT", Value: "v=spf1 -all"}, want: Record{Name: "example.stellar", Type: "TXT", Value: "v=spf1 -all"}},
		{name: "SRV", in: Record{Name: "_sip._udp.example.stellar", Type: "SRV", Value: "10  5 5060 SIP.example.com."}, want: Record{Name: "_sip._udp.example.stellar", Type: "SRV", Value: "10 5 5060 sip.example.com"}},
		{name: "MX", in: Record{Name: "example.stellar", Type: "MX", Value: "10 mail.example.com", TTL: 60}, want: Record{Name: "example.stellar", Type: "MX", Value: "10 mail.example.com", TTL: 60}},
		{name: "one label", in: Record{Name: "db", Value: "10.0.0.5"}, wantErr: "at least two labels"},
		{name: "empty name", in: Record{Value: "10.0.0.5"}, wantErr: "name is empty"},
		{name: "bad character", in: Record{Name: "d b.example.stellar", Value: "10.0.0.5"}, wantErr: "has the character"},
		{name: "hyphen at start", in: Record{Name: "-db.example.stellar", Value: "10.0.0.5"}, wantErr: "starts or ends with '-'"},
		{name: "empty label", in: Record{Name: "db..stellar", Value: "10.0.0.5"}, wantErr: "empty label"},
		{name: "long label", in: Record{Name: strings.Repeat("a", 64) + ".stellar", Value: "10.0.0.5"}, wantErr: "longer than 63"},
		{name: "long name", in: Record{Name: strings.Repeat("abcdefghi.", 26) + "stellar", Value: "10.0.0.5"}, wantErr: "longer than 253"},
		{name: "A with IPv6", in: Record{Name: "db.example.stellar", Value: "::1"}, wantErr: "not an IPv4 address"},
		{name: "A garbage", in: Record{Name: "db.example.stellar", Value: "300.1.1.1"}, wantErr: "not an IPv4 address"},
		{name: "AAAA with IPv4", in: Record{Name: "db.example.stellar", Type: "AAAA", Value: "10.0.0.1"}, wantErr: "not an IPv6 address"},
		{name: "AAAA mapped IPv4", in: Record{Name: "db.example.stellar", Type: "AAAA", Value: "::ffff:10.0.0.1"}, wantErr: "not an IPv6 address"},
		{name: "empty value", in: Record{Name: "db.example.stellar", Value: "  "}, wantErr: "value is empty"},
		{name: "unknown type", in: Record{Name: "db.example.stellar", Type: "PTR", Value: "x.y"}, wantErr: `type "PTR" is not one of`},
		{name: "CNAME to itself", in: Record{Name: "www.example.stellar", Type: "CNAME", Value: "www.example.stellar."}, wantErr: "points at itself"},
		{name: "CNAME to a bad name", in: Record{Name: "www.example.stellar", Type: "CNAME", Value: "bad name"}, wantErr: "target"},
		{name: "TXT too long", in: Record{Name: "t.example.stellar", Type: "TXT", Value: strings.Repeat("x", MaxTXT+1)}, wantErr: "more than"},
		{name: "TXT control character", in: Record{Name: "t.example.stellar", Type: "TXT", Value: "a\x00b"}, wantErr: "control character"},
		{name: "SRV fields", in: Record{Name: "_a._tcp.example.stellar", Type: "SRV", Value: "1 2 3"}, wantErr: "priority weight port target"},
		{name: "SRV port", in: Record{Name: "_a._tcp.example.stellar", Type: "SRV", Value: "1 2 70000 x.y"}, wantErr: "port \"70000\""},
		{name: "MX preference", in: Record{Name: "example.stellar", Type: "MX", Value: "-1 mail.example.com"}, wantErr: "preference"},
		{name: "TTL too long", in: Record{Name: "db.example.stellar", Value: "10.0.0.5", TTL: MaxTTL + 1}, wantErr: "ttl"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Normalize(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				if !errors.Is(err, errdefs.ErrInvalidArgument) {
					t.Fatalf("err %v is not an invalid argument", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestRecordKey_sameValueSameKey(t *testing.T) {
	a, _ := Normalize(Record{Name: "db.example.stellar", Value: "10.0.0.5"})
	b, _ := Normalize(Record{Name: "DB.example.stellar.", Value: "10.0.0.5", TTL: 30})
	c, _ := Normalize(Record{Name: "db.example.stellar", Value: "10.0.0.6"})
	if RecordKey(a) != RecordKey(b) {
		t.Fatalf("same record, two keys: %s %s", RecordKey(a), RecordKey(b))
	}
	if RecordKey(a) == RecordKey(c) {
		t.Fatal("two values, one key")
	}
	if !strings.HasPrefix(RecordKey(a), NamePrefix("db.example.stellar")+"A/") {
		t.Fatalf("key %s not under %s", RecordKey(a), NamePrefix("db.example.stellar"))
	}
}

// FuzzNormalize checks that any input is refused cleanly or normalized to
// a fixed point that stays valid.
func FuzzNormalize(f *testing.F) {
	f.Add("db.example.stellar", "A", "10.0.0.5")
	f.Add("_sip._udp.example.stellar", "SRV", "10 5 5060 sip.example.com")
	f.Add("example.stellar", "MX", "10 mail.example.com")
	f.Add("www.example.stellar", "CNAME", "web.example.stellar")
	f.Add("t.example.stellar", "TXT", "hello")
	f.Fuzz(func(t *testing.T, name, typ, value string) {
		r, err := Normalize(Record{Name: name, Type: typ, Value: value})
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("error of the wrong kind: %v", err)
			}
			return
		}
		again, err := Normalize(r)
		if err != nil {
			t.Fatalf("normalized record %+v is invalid: %v", r, err)
		}
		if again != r {
			t.Fatalf("not a fixed point: %+v -> %+v", r, again)
		}
	})
}
