package client

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"stellar.dev/api"
	"stellar.dev/api/errdefs"
	"stellar.dev/api/stream"
)

func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "x.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return sock
}

func TestClient_errorKindsCrossTheWire(t *testing.T) {
	sock := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		status, body := errdefs.ToHTTP(errdefs.New(errdefs.ErrNotFound, "app %q not found", "web"))
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(body)
	}))
	err := Unix("stellar-appd", sock).Do(context.Background(), "GET", "/v1/apps/web", nil, nil)
	if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), `app "web" not found`) {
		t.Fatalf("got %v", err)
	}
}

func TestClient_daemonNotRunning(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "dnsd.sock")
	err := Unix("stellar-dnsd", sock).Do(context.Background(), "GET", "/v1/health", nil, nil)
	if !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("want unavailable, got %v", err)
	}
	want := "stellar-dnsd is not running: connect " + sock
	if !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("message %q does not start with %q", err, want)
	}
}

func TestClient_refusesOtherWireVersion(t *testing.T) {
	sock := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(api.WireHeader, "99")
		w.Write([]byte("{}"))
	}))
	err := Unix("stellar-dnsd", sock).Do(context.Background(), "GET", "/v1/health", nil, &struct{}{})
	if !errors.Is(err, errdefs.ErrUnsupportedVersion) {
		t.Fatalf("want unsupported version, got %v", err)
	}
}

func TestClient_watch(t *testing.T) {
	sock := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := stream.NewWriter(w)
		for i := range 3 {
			s.Send(map[string]int{"n": i})
		}
	}))
	var got []int
	err := Unix("stellar-gossip", sock).Watch(context.Background(), "/v1/watch", func(raw json.RawMessage) error {
		var v map[string]int
		if err := json.Unmarshal(raw, &v); err != nil {
			return err
		}
		got = append(got, v["n"])
		return nil
	})
	if err == nil || len(got) != 3 {
		t.Fatalf("got %v, err %v", got, err)
	}
}
