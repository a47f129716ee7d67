package main

import (
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"stellar.dev/api/netapi"
)

// TestWire_matchesNetapi keeps the plugin's own wire types in step with
// netapi's: the same values encode to the same JSON, and netd's answers
// decode into the fields the plugin reads.
func TestWire_matchesNetapi(t *testing.T) {
	for _, tc := range []struct {
		name        string
		ours, their any
	}{
		{"allocate", allocateRequest{"c1", "eth0", "/run/netns/x"}, netapi.AllocateRequest{ContainerID: "c1", IfName: "eth0", Netns: "/run/netns/x"}},
		{"allocate without netns", allocateRequest{"c1", "eth0", ""}, netapi.AllocateRequest{ContainerID: "c1", IfName: "eth0"}},
		{"release", releaseRequest{"c1", "eth0"}, netapi.ReleaseRequest{ContainerID: "c1", IfName: "eth0"}},
		{"release all", releaseRequest{"c1", ""}, netapi.ReleaseRequest{ContainerID: "c1"}},
		{"check", checkRequest{"c1", "eth0", "172.16.0.2"}, netapi.CheckRequest{ContainerID: "c1", IfName: "eth0", Address: "172.16.0.2"}},
		{"gc", gcRequest{Containers: []string{}, Attachments: []attachment{{"c1", "eth0"}}}, netapi.GCRequest{Containers: []string{}, Attachments: []netapi.Attachment{{ContainerID: "c1", IfName: "eth0"}}}},
		{"gc empty", gcRequest{Containers: []string{}}, netapi.GCRequest{Containers: []string{}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, _ := json.Marshal(tc.ours)
			b, _ := json.Marshal(tc.their)
			if string(a) != string(b) {
				t.Fatalf("plugin sends %s, netapi has %s", a, b)
			}
		})
	}
	t.Run("allocation answer", func(t *testing.T) {
		raw, _ := json.Marshal(netapi.Allocation{Address: "172.16.0.2/22", Gateway: "172.16.0.1", DNS: "169.254.53.53"})
		var a allocation
		if err := json.Unmarshal(raw, &a); err != nil || a != (allocation{"172.16.0.2/22", "172.16.0.1", "169.254.53.53"}) {
			t.Fatalf("decoded %+v (%v) from %s", a, err, raw)
		}
	})
	t.Run("status answer", func(t *testing.T) {
		raw, _ := json.Marshal(netapi.Status{ClaimStatus: netapi.StatusClaimed, Reason: "r"})
		var s netdStatus
		if err := json.Unmarshal(raw, &s); err != nil || s != (netdStatus{statusClaimed, "r"}) {
			t.Fatalf("decoded %+v (%v) from %s", s, err, raw)
		}
	})
}

// rawNetd serves every connection with fn, reading the request first.
func rawNetd(t *testing.T, fn func(c net.Conn, req string)) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "netd.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 64<<10)
				n, _ := c.Read(buf)
				fn(c, string(buf[:n]))
			}()
		}
	}()
	return sock
}

func TestNetdClient_answers(t *testing.T) {
	type out struct {
		A string `json:"a"`
	}
	for _, tc := range []struct {
		name     string
		answer   string
		wantA    string
		wantCode string // "" for success
		wantMsg  string
	}{
		{"content length", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{\"a\":\"xy\"}", "xy", "", ""},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n6;x=y\r\n:\"xy\"}\r\n0\r\n\r\n", "xy", "", ""},
		{"until close", "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{\"a\":\"z\"}", "z", "", ""},
		{"error code wins", "HTTP/1.1 400 Bad Request\r\nContent-Length: 53\r\n\r\n{\"error\":{\"code\":\"unavailable\",\"message\":\"no claim\"}}", "", codeUnavailable, "no claim"},
		{"status without code", "HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\ngone", "", codeNotFound, "gone"},
		{"unknown status", "HTTP/1.1 418 Teapot\r\nContent-Length: 0\r\n\r\n", "", codeInternal, "unexpected status 418"},
		{"other wire version", "HTTP/1.1 200 OK\r\nStellar-Wire-Version: 2\r\nContent-Length: 2\r\n\r\n{}", "", codeUnsupported, "wire version 2"},
		{"bad json", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n{", "", codeInternal, "decode stellar-netd answer"},
		{"bad status line", "SMTP ready\r\n\r\n", "", codeInternal, "bad status line"},
		{"short body", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{}", "", codeUnavailable, "ended after 2 of 100 bytes"},
		{"no headers", "HTTP/1.1 200 OK\r\n", "", codeUnavailable, "ended before its headers"},
		{"bad chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "", codeInternal, "bad chunk size"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got string
			sock := rawNetd(t, func(c net.Conn, req string) {
				got = req
				c.Write([]byte(tc.answer))
			})
			var o out
			err := netdClient{socket: sock, timeout: 5 * time.Second}.call("POST", "/v1/ipam/allocate", allocateRequest{ContainerID: "c1", IfName: "eth0"}, &o)
			if tc.wantCode == "" {
				if err != nil || o.A != tc.wantA {
					t.Fatalf("call = %+v, %v; want a=%q", o, err, tc.wantA)
				}
				for _, want := range []string{"POST /v1/ipam/allocate HTTP/1.1\r\n", "Stellar-Wire-Version: 1\r\n", "Content-Length: 38\r\n", "\r\n\r\n{\"container_id\":\"c1\",\"if_name\":\"eth0\"}"} {
					if !strings.Contains(got, want) {
						t.Fatalf("request lacks %q:\n%s", want, got)
					}
				}
				return
			}
			if err == nil || codeOf(err) != tc.wantCode || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("call = %v (code %s); want code %s with %q", err, codeOf(err), tc.wantCode, tc.wantMsg)
			}
		})
	}
}

// TestNetdClient_servesNetHTTP: the hand-made request is one net/http
// (what netd runs) understands, and its answers of every size are read.
func TestNetdClient_servesNetHTTP(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "netd.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("x", 300<<10)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req checkRequest
		if r.Header.Get("Stellar-Wire-Version") != "1" || json.NewDecoder(r.Body).Decode(&req) != nil || req.ContainerID != "c1" {
			http.Error(w, "bad request", 400)
			return
		}
		a := allocation{Address: req.Address}
		if req.IfName == "big" {
			a.DNS = big
		}
		json.NewEncoder(w).Encode(a)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	for _, ifn := range []string{"eth0", "big"} {
		var a allocation
		if err := (netdClient{socket: sock, timeout: 5 * time.Second}).call("POST", "/v1/ipam/check", checkRequest{"c1", ifn, "172.16.0.9"}, &a); err != nil {
			t.Fatalf("%s: %v", ifn, err)
		}
		if a.Address != "172.16.0.9" || (ifn == "big" && a.DNS != big) {
			t.Fatalf("%s: answer %q, dns of %d bytes", ifn, a.Address, len(a.DNS))
		}
	}
}

func TestNetdClient_downOrSilentIsUnavailable(t *testing.T) {
	silent := rawNetd(t, func(c net.Conn, req string) { time.Sleep(3 * time.Second) })
	for _, tc := range []struct{ name, sock, msg string }{
		{"no socket", filepath.Join(t.TempDir(), "none.sock"), "not running"},
		{"silent", silent, "did not answer in time"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			err := netdClient{socket: tc.sock, timeout: 500 * time.Millisecond}.call("GET", "/v1/status", nil, nil)
			if codeOf(err) != codeUnavailable || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("call = %v; want unavailable with %q", err, tc.msg)
			}
			if el := time.Since(start); el > 2500*time.Millisecond {
				t.Fatalf("took %s with a 500ms timeout", el)
			}
		})
	}
}

func FuzzParseHead(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nStellar-Wire-Version: 1"))
	f.Add([]byte("HTTP/1.0 503"))
	f.Fuzz(func(t *testing.T, data []byte) {
		status, hdr, err := parseHead(data)
		if err == nil && (status < 100 || status > 999 || hdr == nil) {
			t.Fatalf("accepted status %d, headers %v", status, hdr)
		}
	})
}

func FuzzDechunk(f *testing.F) {
	f.Add([]byte("4\r\nabcd\r\n0\r\n\r\n"))
	f.Add([]byte("ffffffff\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := dechunk(data)
		if err == nil && len(out) > len(data) {
			t.Fatalf("decoded %d bytes from %d", len(out), len(data))
		}
	})
}
