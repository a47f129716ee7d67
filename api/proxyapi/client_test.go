package proxyapi

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"testing"

	"stellar.dev/api"
	"stellar.dev/api/client"
	"stellar.dev/api/errdefs"
)

func TestClient_backendsAndHostSettings(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "proxyd.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var stored HostSettings
	mux := http.NewServeMux()
	write := func(w http.ResponseWriter, status int, v any) {
		w.Header().Set(api.WireHeader, strconv.Itoa(api.WireVersion))
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("GET /v1/backends", func(w http.ResponseWriter, r *http.Request) {
		write(w, 200, []Backend{{Host: r.URL.Query().Get("host"), Path: "/", Addr: "10.0.0.1:80", Health: HealthHealthy, Weight: 100}})
	})
	mux.HandleFunc("PUT /v1/hosts/{host}", func(w http.ResponseWriter, r *http.Request) {
		if err := json.NewDecoder(r.Body).Decode(&stored); err != nil || stored.Balance == "bad" {
			write(w, 400, errdefs.Body{Error: errdefs.BodyError{Code: "invalid_argument", Message: "balance \"bad\" is not round_robin or least_conn"}})
			return
		}
		write(w, 200, stored)
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	defer srv.Close()

	c := New(client.Unix("stellar-proxyd", sock))
	bs, err := c.Backends(context.Background(), "a.test")
	if err != nil || len(bs) != 1 || bs[0].Host != "a.test" || bs[0].Weight != 100 {
		t.Fatalf("Backends = %+v, %v", bs, err)
	}
	if err := c.SetHost(context.Background(), "a.test", HostSettings{Weights: map[string]int{"a/web": 90}}); err != nil || stored.Weights["a/web"] != 90 {
		t.Fatalf("SetHost: %v, stored %+v", err, stored)
	}
	err = c.SetHost(context.Background(), "a.test", HostSettings{Balance: "bad"})
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("bad balance: %v, want invalid argument", err)
	}
}
