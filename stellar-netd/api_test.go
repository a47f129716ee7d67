package main

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"stellar.dev/daemon"
	"stellar.dev/daemon/config"
	"stellar.dev/daemon/metrics"
	"stellar.dev/stellar-netd/claim"
	"stellar.dev/stellar-netd/ipam"
)

// apiService is a service with a final claim and an allocator, no host
// networking and no gossip: for the handlers' logic only.
func apiService(t *testing.T) *service {
	t.Helper()
	cfg := config.DefaultConfig()
	cfg.Node.Name = "n1"
	cfg.Node.StateDir = t.TempDir()
	env := &daemon.Env{Config: cfg, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Mux: http.NewServeMux(), Metrics: metrics.NewRegistry()}
	s := newService(env)
	s.state = claim.State{Subnet: "172.16.4.0/22", Final: true}
	a := ipam.New(filepath.Join(cfg.Node.StateDir, "ipam"), netip.MustParsePrefix("172.16.4.0/22"))
	if err := a.Load(); err != nil {
		t.Fatal(err)
	}
	s.alloc = a
	s.routesAPI()
	return s
}

func TestAPI_validationAndIdempotency(t *testing.T) {
	s := apiService(t)
	call := func(method, path, body string) (int, string) {
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		w := httptest.NewRecorder()
		s.env.Mux.ServeHTTP(w, req)
		return w.Code, w.Body.String()
	}
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		contains                 string
	}{
		{"allocate", "POST", "/v1/ipam/allocate", `{"container_id":"c1","if_name":"eth0"}`, 200, `"address":"172.16.4.2/22"`},
		{"allocate again gives the same IP", "POST", "/v1/ipam/allocate", `{"container_id":"c1","if_name":"eth0"}`, 200, `"address":"172.16.4.2/22"`},
		{"gateway and dns in the answer", "POST", "/v1/ipam/allocate", `{"container_id":"c1","if_name":"eth0"}`, 200, `"gateway":"172.16.4.1"`},
		{"empty container id", "POST", "/v1/ipam/allocate", `{"container_id":"","if_name":"eth0"}`, 400, "container_id is empty"},
		{"bad interface name", "POST", "/v1/ipam/allocate", `{"container_id":"c2","if_name":"eth0/../x"}`, 400, "if_name"},
		{"unknown field", "POST", "/v1/ipam/allocate", `{"container_id":"c2","if_name":"eth0","colour":"red"}`, 400, "colour"},
		{"not json", "POST", "/v1/ipam/allocate", `{`, 400, "decode request body"},
		{"check held", "POST", "/v1/ipam/check", `{"container_id":"c1","if_name":"eth0","address":"172.16.4.2/22"}`, 200, "172.16.4.2"},
		{"check another address", "POST", "/v1/ipam/check", `{"container_id":"c1","if_name":"eth0","address":"172.16.4.9"}`, 412, "holds 172.16.4.2"},
		{"check unknown", "POST", "/v1/ipam/check", `{"container_id":"nope","if_name":"eth0"}`, 404, "has no IP"},
		{"list", "GET", "/v1/ipam/allocations", ``, 200, `"container_id":"c1"`},
		{"release unknown succeeds", "POST", "/v1/ipam/release", `{"container_id":"nope","if_name":"eth0"}`, 200, `"released":[]`},
		{"release", "POST", "/v1/ipam/release", `{"container_id":"c1"}`, 200, `"172.16.4.2/22"`},
		{"release twice", "POST", "/v1/ipam/release", `{"container_id":"c1"}`, 200, `"released":[]`},
		{"gc keeps listed containers", "POST", "/v1/ipam/gc", `{"containers":[]}`, 200, `"kept":0`},
		{"status", "GET", "/v1/status", ``, 200, `"claim_status":"claimed"`},
		{"subnets lists self", "GET", "/v1/subnets", ``, 200, `"self":true`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := call(tc.method, tc.path, tc.body)
			if code != tc.status || !strings.Contains(body, tc.contains) {
				t.Fatalf("%s %s %s: %d %s; want %d and %q", tc.method, tc.path, tc.body, code, body, tc.status, tc.contains)
			}
		})
	}
}

func TestAPI_provisionalRefusesToAllocate(t *testing.T) {
	s := apiService(t)
	s.alloc = nil
	s.state.Final = false
	s.reason = "provisional until this node meets the cluster"
	req := httptest.NewRequest("POST", "/v1/ipam/allocate", strings.NewReader(`{"container_id":"c1","if_name":"eth0"}`))
	w := httptest.NewRecorder()
	s.env.Mux.ServeHTTP(w, req)
	if w.Code != http.StatusServiceUnavailable || !strings.Contains(w.Body.String(), "provisional") {
		t.Fatalf("%d %s", w.Code, w.Body.String())
	}
}
