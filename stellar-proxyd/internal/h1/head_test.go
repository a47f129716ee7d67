package h1

import (
	"bufio"
	"net/http"
	"strings"
	"testing"

	"stellar.dev/stellar-proxyd/internal/guard"
)

func TestParse_takesOnlyLeanHeads(t *testing.T) {
	tests := []struct {
		name, head string
		lean       bool
	}{
		{"plain get", "GET /a?b=1 HTTP/1.1\r\nHost: x.test\r\nAccept: */*\r\n\r\n", true},
		{"head", "HEAD / HTTP/1.1\r\nHost: x.test\r\n\r\n", true},
		{"options and delete", "DELETE /d HTTP/1.1\r\nHost: x.test\r\n\r\n", true},
		{"empty body", "GET / HTTP/1.1\r\nHost: x.test\r\nContent-Length: 0\r\n\r\n", true},
		{"escaped path", "GET /a%20b HTTP/1.1\r\nHost: x.test\r\n\r\n", true},
		{"post", "POST / HTTP/1.1\r\nHost: x.test\r\nContent-Length: 1\r\n\r\n", false},
		{"get with a body", "GET / HTTP/1.1\r\nHost: x.test\r\nContent-Length: 1\r\n\r\n", false},
		{"chunked get", "GET / HTTP/1.1\r\nHost: x.test\r\nTransfer-Encoding: chunked\r\n\r\n", false},
		{"http/1.0", "GET / HTTP/1.0\r\nHost: x.test\r\n\r\n", false},
		{"absolute form", "GET http://x.test/ HTTP/1.1\r\nHost: x.test\r\n\r\n", false},
		{"upgrade", "GET / HTTP/1.1\r\nHost: x.test\r\nUpgrade: websocket\r\n\r\n", false},
		{"expect", "GET / HTTP/1.1\r\nHost: x.test\r\nExpect: 100-continue\r\n\r\n", false},
		{"no host", "GET / HTTP/1.1\r\n\r\n", false},
		{"two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", false},
		{"cl and te", "GET / HTTP/1.1\r\nHost: x.test\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n", false},
		{"duplicate cl", "GET / HTTP/1.1\r\nHost: x.test\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n", false},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: x.test\r\nX-A: b\r\n c\r\n\r\n", false},
		{"bare lf", "GET / HTTP/1.1\nHost: x.test\n\n", false},
		{"control byte", "GET / HTTP/1.1\r\nHost: x.test\r\nX-A: \x01\r\n\r\n", false},
		{"h2 preface", "PRI * HTTP/2.0\r\n\r\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p parser
			req := &http.Request{Header: http.Header{}}
			if got := p.parse([]byte(tt.head), req); got != tt.lean {
				t.Fatalf("parse(%q) = %v, want %v", tt.head, got, tt.lean)
			}
		})
	}
}

// FuzzHead checks that every head the loop takes is one net/http reads the
// same way, and that nothing the request guard refuses is taken.
func FuzzHead(f *testing.F) {
	for _, s := range []string{
		"GET /a?b=1 HTTP/1.1\r\nHost: x.test\r\nAccept: */*\r\nX-A: 1\r\nx-a: 2\r\n\r\n",
		"HEAD / HTTP/1.1\r\nhost: X.test:80\r\nConnection: close\r\n\r\n",
		"GET /%41 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n",
		"GET / HTTP/1.1\nHost: x\n\n",
		"OPTIONS //x HTTP/1.1\r\nHost: [::1]:8\r\nX-E:\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		n := headEnd(data)
		if n < 0 {
			return
		}
		head := data[:n]
		var p parser
		req := &http.Request{Header: http.Header{}}
		if !p.parse(head, req) {
			return
		}
		if reason, _, _ := guard.Check(head); reason != "" {
			t.Fatalf("took a head the guard refuses (%s): %q", reason, head)
		}
		want, err := http.ReadRequest(bufio.NewReader(strings.NewReader(string(head))))
		if err != nil {
			t.Fatalf("took a head net/http refuses (%v): %q", err, head)
		}
		if want.ContentLength != 0 || len(want.TransferEncoding) > 0 {
			t.Fatalf("took a head with a body: %q", head)
		}
		if req.Method != want.Method || req.Host != want.Host || req.RequestURI != want.RequestURI ||
			req.URL.Path != want.URL.Path || req.URL.RawQuery != want.URL.RawQuery || req.Close != want.Close {
			t.Fatalf("head %q read as %s %s host=%q path=%q query=%q close=%v; net/http: %s %s host=%q path=%q query=%q close=%v",
				head, req.Method, req.RequestURI, req.Host, req.URL.Path, req.URL.RawQuery, req.Close,
				want.Method, want.RequestURI, want.Host, want.URL.Path, want.URL.RawQuery, want.Close)
		}
		if len(req.Header) != len(want.Header) {
			t.Fatalf("head %q: headers %v, net/http %v", head, req.Header, want.Header)
		}
		for k, vv := range want.Header {
			got := req.Header[k]
			if strings.Join(got, "\x00") != strings.Join(vv, "\x00") || len(got) != len(vv) {
				t.Fatalf("head %q: header %s = %q, net/http %q", head, k, got, vv)
			}
		}
	})
}
