package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"stellar.dev/api/dnsapi"
)

// fakeDnsd serves dnsd.sock's records API from memory.
func fakeDnsd(t *testing.T) (config string, created *[]dnsapi.Record) {
	t.Helper()
	dir, err := os.MkdirTemp("", "sns-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	run := filepath.Join(dir, "run")
	os.MkdirAll(run, 0o755)
	l, err := net.Listen("unix", filepath.Join(run, "dnsd.sock"))
	if err != nil {
		t.Fatal(err)
	}
	var recs []dnsapi.Record
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/records", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(dnsapi.RecordList{Records: []dnsapi.Record{
			{Name: "web.example.stellar", Type: "A", Value: "172.16.0.2", Source: dnsapi.SourceService, Node: "node-a"},
			{Name: "db.example.stellar", Type: "A", Value: "10.0.0.5", TTL: 30, Source: dnsapi.SourceCustom},
		}})
	})
	mux.HandleFunc("POST /v1/records", func(w http.ResponseWriter, r *http.Request) {
		var rec dnsapi.Record
		json.NewDecoder(r.Body).Decode(&rec)
		recs = append(recs, rec)
		rec.Source = dnsapi.SourceCustom
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(rec)
	})
	mux.HandleFunc("DELETE /v1/records/{name}", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, `{"error":{"code":"not_found","message":"no custom record %s"}}`, r.PathValue("name"))
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	config = filepath.Join(dir, "stellar.toml")
	os.WriteFile(config, []byte(fmt.Sprintf("[node]\nrun_dir = %q\n", run)), 0o644)
	return config, &recs
}

func runSctlNS(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	g := &globals{out: &out, err: &out}
	root := rootCmd(g)
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&out)
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

func TestNameserver(t *testing.T) {
	cfg, created := fakeDnsd(t)
	out, err := runSctlNS(t, "--config", cfg, "nameserver", "list")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"NAME", "TYPE", "VALUE", "OPTIONS", "web.example.stellar", "node=node-a", "db.example.stellar", "custom ttl=30s"}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("list lacks %q:\n%s", w, out)
		}
	}
	if _, err := runSctlNS(t, "--config", cfg, "nameserver", "create", "MX.Example.Stellar.", "10 mail.example.com", "--type", "mx", "--ttl", "1m"); err != nil {
		t.Fatal(err)
	}
	if got := *created; len(got) != 1 || got[0] != (dnsapi.Record{Name: "mx.example.stellar", Type: "MX", Value: "10 mail.example.com", TTL: 60}) {
		t.Fatalf("sent %+v", got)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"nameserver", "create", "x.example.stellar", "1.2.3.400"}, "not an IPv4 address"},
		{[]string{"nameserver", "create", "x.example.stellar", "1.2.3.4", "--ttl", "1500ms"}, "whole seconds"},
		{[]string{"nameserver", "create", "x", "1.2.3.4"}, "at least two labels"},
		{[]string{"nameserver", "delete", "x.example.stellar", "--type", "PTR"}, "not one of"},
		{[]string{"nameserver", "delete", "x.example.stellar"}, "no custom record x.example.stellar"},
	} {
		_, err := runSctlNS(t, append([]string{"--config", cfg}, tt.args...)...)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: err %v, want %q", tt.args, err, tt.want)
		}
	}
	if len(*created) != 1 {
		t.Fatalf("invalid records reached dnsd: %+v", *created)
	}
}
