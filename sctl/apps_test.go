package main

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"stellar.dev/api/appapi"
)

func TestReadSpec_tomlEqualsJSON(t *testing.T) {
	var stderr bytes.Buffer
	g := &globals{out: &bytes.Buffer{}, err: &stderr}
	fromTOML, err := readSpec(g, "testdata/apps_spec.toml")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stderr.String(), "warning: service \"web\": runtime io.containerd.runtime.v1.linux") {
		t.Fatalf("no legacy runtime warning: %q", stderr.String())
	}
	fromJSON, err := readSpec(g, "testdata/apps_spec.json")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(fromTOML, fromJSON) {
		t.Fatalf("TOML %+v\nJSON %+v", fromTOML, fromJSON)
	}
}

func TestReadSpec_badSpecNamesFileAndField(t *testing.T) {
	dir := t.TempDir()
	tests := []struct{ name, file, body, want string }{
		{"json", "bad.json", `{"name":"a","services":[{"name":"s","image":"x","instances":-1}]}`, `bad.json: invalid app spec: service "s": instances: must be 0..1000, got -1`},
		{"toml syntax", "bad.toml", "name = \n", "bad.toml:"},
		{"toml unknown key", "bad2.toml", "name = \"a\"\nwhat = 1\n[[services]]\nname = \"s\"\nimage = \"x\"\n", `unknown field "what"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, tt.file)
			if err := os.WriteFile(p, []byte(tt.body), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := readSpec(&globals{out: &bytes.Buffer{}, err: &bytes.Buffer{}}, p)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
}

func TestPrintApp_golden(t *testing.T) {
	g := &globals{out: &bytes.Buffer{}, err: &bytes.Buffer{}}
	a, err := readSpec(g, "testdata/apps_spec.json")
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	st := appapi.AppStatus{Record: appapi.Record{Spec: a, Generation: 2, Updated: ts}, Version: "01a2.node-a", Instances: []appapi.Instance{
		{App: "example", Service: "web", Index: 0, Node: "node-a", IP: "172.16.0.5", Status: "running", Health: "healthy", Restarts: 0},
		{App: "example", Service: "web", Index: 1, Node: "node-b", IP: "172.16.4.7", Status: "restarting", Health: "unhealthy", Restarts: 3, Error: "exit 1"},
	}}
	var out bytes.Buffer
	printApp(&out, st)
	golden := filepath.Join("testdata", "apps_inspect.golden")
	if os.Getenv("UPDATE_GOLDEN") != "" {
		_ = os.WriteFile(golden, out.Bytes(), 0o644)
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if out.String() != string(want) {
		t.Fatalf("got\n%s\nwant\n%s", out.String(), want)
	}
}
